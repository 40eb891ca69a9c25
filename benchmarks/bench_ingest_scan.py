"""What planning ingest costs for a large corpus: the scan (every file counted, ids from paths),
and the change-detection stamps (size, mtime, inode change time) of every audio and JAMS file.

Builds N fake tracks (empty audio + JAMS files, 100 per folder) in a temporary folder, then
times ``scan_corpus`` and ``Ingest.items`` (scan + one stat per file) on the real code, twice
(the second with a warm file-system cache, as a rerun sees it).

    python benchmarks/bench_ingest_scan.py [--tracks 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mirpipe.corpus import scan_corpus
from mirpipe.pipeline.config import PipelineConfig
from mirpipe.stages import STAGES, StageContext


def build(root: Path, n: int) -> None:
    for i in range(n):
        folder = root / f"album{i // 100:05d}"
        if i % 100 == 0:
            folder.mkdir(parents=True)
        (folder / f"{i % 100:02d} track.flac").touch()
        (folder / f"{i % 100:02d} track.jams").touch()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        t = time.perf_counter()
        build(corpus, args.tracks)
        print(f"built {args.tracks} tracks ({2 * args.tracks} files) in {time.perf_counter() - t:.1f} s")
        cfg = PipelineConfig.model_validate({"ingest": {"corpus": str(corpus)}})
        ctx = StageContext(Path(tmp) / "work", cfg.stage_params())
        ingest = STAGES.get("ingest")
        for run in ("first", "rerun"):
            t = time.perf_counter()
            scan = scan_corpus(corpus)
            t_scan = time.perf_counter() - t
            t = time.perf_counter()
            items = ingest.items(ctx, {})
            t_items = time.perf_counter() - t
            print(
                f"{run:>6}: scan {t_scan:.2f} s ({scan.files} files, {len(scan.groups)} tracks); "
                f"ingest items (scan + stamps) {t_items:.2f} s = {1e6 * t_items / len(items):.0f} us per track"
            )


if __name__ == "__main__":
    main()
