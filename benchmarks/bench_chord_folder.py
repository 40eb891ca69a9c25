"""Score a trained chord model on any folder of audio + JAMS (same stems), with mirpipe's own code.

Features come from ``stages.features.compute_entry`` with the workdir's feature settings,
the network from its checkpoint (``stages.evaluate.load_model``), decoding and mir_eval
scoring from the chord task: the figures are what ``mirpipe run`` would report for
those tracks as a test split. ``--render numpy|SOUNDFONT`` first fills the folder with
demo-style tracks from a renderer of your choice (e.g. the numpy timbres, or the OPL-3
FM soundfont that no demo split uses).

    .venv/bin/python benchmarks/bench_chord_folder.py --workdir work/demo --folder my_songs/
    .venv/bin/python benchmarks/bench_chord_folder.py --workdir work/demo --folder /tmp/opl3 \\
        --render OPL-3_FM_128M.sf2 --tracks 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def render_folder(folder: Path, renderer: str, tracks: int, seed: int, sr: int = 22050) -> None:
    """Mixtures with chords, rendered by the numpy timbres or one soundfont (seed offset: not demo tracks)."""
    import soundfile as sf

    from mirpipe.demo import labels, soundfont
    from mirpipe.demo.arrange import compose_mixture
    from mirpipe.demo.track import annotate, compose, render

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(tracks):
        name = f"bench-{i:03d}"
        if renderer == "numpy":
            score = compose(i, seed, False, 20.0, 45.0)
            y, jam = render(score, sr, seed, i), annotate(score, name, False)
        else:
            perf = compose_mixture(i, seed, sr, 20.0, 45.0)
            y, info = soundfont.render(perf, renderer, sr)
            jam = labels.annotate(perf, name, {"soundfont": info.soundfont})
        sf.write(folder / f"{name}.flac", y, sr, format="FLAC", subtype="PCM_16")
        jam.save(str(folder / f"{name}.jams"), strict=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("work/demo"), help="a workdir with a trained chord model")
    ap.add_argument("--folder", type=Path, required=True, help="audio + .jams pairs (chord annotations)")
    ap.add_argument("--checkpoint", choices=("best", "last"), default="best")
    ap.add_argument("--render", default=None, help="first render demo-style tracks into --folder: numpy or a soundfont file")
    ap.add_argument("--tracks", type=int, default=8, help="tracks to render with --render")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the rendered tracks (the demo uses 0)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    import jams
    import librosa
    import torch

    from mirpipe.audio.io import AUDIO_EXTENSIONS
    from mirpipe.models.task import TASKS
    from mirpipe.pipeline import workdir as wd
    from mirpipe.stage import StageContext
    from mirpipe.stages.evaluate import load_model
    from mirpipe.stages.features import compute_entry
    from mirpipe.storage.feature_kinds import FEATURE_KINDS

    torch.set_num_threads(1)
    if args.render:
        render_folder(args.folder, args.render, args.tracks, args.seed)
    pipeline, _ = wd.resolve(args.workdir, None, None)
    params = pipeline.stage_params()
    fp, aug, ev = params["features"], params["augment"], params["evaluate"]
    ctx = StageContext(workdir=args.workdir, params=params)
    task = TASKS.get("chord")
    model, meta = load_model(ctx, "chord", args.checkpoint, torch.device("cpu"))
    decoding = ev.decode_params("chord")
    pairs = sorted(
        (a, a.with_suffix(".jams"))
        for a in args.folder.iterdir()
        if a.suffix.lower() in AUDIO_EXTENSIONS and a.with_suffix(".jams").exists()
    )
    if not pairs:
        sys.exit(f"{args.folder}: no audio + .jams pairs")
    per_track, t0 = [], time.perf_counter()
    for audio, jams_path in pairs:
        arrays, attrs, _ = compute_entry(str(audio), str(jams_path), fp, aug)
        geometry = attrs["features"][task.feature]
        stored = arrays[task.feature][attrs["variants"].index(0)]
        features = FEATURE_KINDS.get(task.feature).view(stored, geometry, 0)
        ref_jam = jams.load(str(jams_path), validate=False)
        ref = task.targets.reference(ref_jam)
        if ref is None:
            print(f"{jams_path.name}: no chord annotation, skipped", file=sys.stderr)
            continue
        frame_times = librosa.frames_to_time(np.arange(stored.shape[0]), sr=geometry["sr"], hop_length=geometry["hop_length"])
        duration = float(ref_jam.file_metadata.duration or frame_times[-1])
        est = task.decoder.decode(
            task.decoder.predict(model, features, torch.device("cpu")), frame_times, duration, meta.state, decoding
        )
        scores = task.scorer.score(ref, est)
        per_track.append(scores)
        if not args.json:
            print(f"{audio.name:32s} {task.scorer.summary(scores)}")
    totals = task.scorer.pool(per_track)
    if args.json:
        print(json.dumps({"folder": str(args.folder), "tracks": len(per_track), **totals}))
        return
    print(
        f"\nchord scores (mir_eval, duration-weighted over {len(per_track)} tracks of {args.folder}; "
        f"model {args.workdir}/train/chord/{args.checkpoint}.pt; {time.perf_counter() - t0:.0f} s)"
    )
    cols = list(task.scorer.score_columns)
    print("".join(f"{c:>9s}" for c in cols))
    print("".join(f"{totals[c]:9.3f}" if totals.get(c) is not None else f"{'-':>9s}" for c in cols))


if __name__ == "__main__":
    main()
