"""What ``mirpipe predict`` costs per recording: CPU seconds per second of audio, per file and in total.

Runs ``pipeline.inference.predict_file`` in this process (the Dask task's body) on each audio file
of a folder, after one warm-up file (model load, imports), with the model given as a bundle
file or a workdir (bundled first, as predict does).

    .venv/bin/python benchmarks/bench_predict.py --model work/demo --inputs work/demo/corpus --limit 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a .mirpipe file or a trained workdir")
    ap.add_argument("--inputs", type=Path, required=True, help="a folder of audio files")
    ap.add_argument("--limit", type=int, default=8, help="files to time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()

    import torch

    from mirpipe.pipeline.inference import predict_file
    from mirpipe.pipeline.predict import list_inputs, resolve_model

    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    bundle_path, bundle = resolve_model(args.model, out, None, warn=print)
    tasks = sorted(bundle.tasks)
    files = list_inputs([args.inputs])[: args.limit + 1]
    if len(files) < 2:
        raise SystemExit(f"{args.inputs}: fewer than two audio files")
    t0 = time.process_time()
    predict_file(str(files[0][0]), str(out / "warmup.jams"), str(bundle_path), tasks)
    print(f"warm-up (model load, imports, first file): {time.process_time() - t0:.2f} CPU s")
    total_cpu = total_audio = 0.0
    for audio, rel in files[1:]:
        c0, w0 = time.process_time(), time.perf_counter()
        res = predict_file(str(audio), str(out / rel), str(bundle_path), tasks)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        total_cpu, total_audio = total_cpu + cpu, total_audio + res["duration"]
        print(
            f"{audio.name:32} {res['duration']:7.1f} s audio {cpu:6.2f} CPU s {wall:6.2f} wall s "
            f"{res['duration'] / cpu:6.1f}x real time per CPU"
        )
    print(
        f"tasks {', '.join(tasks)}: {len(files) - 1} files, {total_audio:.0f} s of audio, {total_cpu:.1f} CPU s, "
        f"{total_audio / total_cpu:.1f}x real time per CPU core (torch threads {args.threads})"
    )


if __name__ == "__main__":
    main()
