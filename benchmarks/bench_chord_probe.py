"""Chord probes: how a chord model reads chords played alone, in two kinds of recording the demo's band
mixtures never make, rendered with a soundfont of your choice (default the demo's unseen test one).

- ``isolated``: triads (major, minor, any root, the label's bass the lowest key played) struck once,
  held 1.5-2.5 s, each followed by 0.5-1.5 s of silence labelled ``N``, as chord datasets record them;
- ``fast``: the same triads 0.75 s each without a gap (fast harmonic rhythm).

Each kind is one harmony instrument (piano, electric piano, acoustic guitar in turn). Every file is
scored as ``bench_real.py`` scores it (``mirpipe predict``'s code, mir_eval), and the frames are
counted (every 20 ms) for what a root score hides: chord frames called ``N``, ``N`` frames called a
chord, and the root on the chord frames.

    .venv/bin/python benchmarks/bench_chord_probe.py --model /tmp/demo.mirpipe [--soundfont FluidR3_GM.sf2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
KINDS = ("isolated", "fast")
INSTRUMENTS = ("piano", "electric piano", "acoustic guitar")
STEP = 0.02  # seconds between the frames counted


def _bench_real():
    spec = importlib.util.spec_from_file_location("bench_real", HERE / "bench_real.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_probe(kind: str, index: int, seed: int, sr: int, family: str):
    """One probe performance: triads struck once (``isolated``: with silence after each)."""
    from mirpipe.demo.arrange import Performance, _part, _Writer, piano_voicing, spell_over_bass
    from mirpipe.demo.track import ChordSegment
    from mirpipe.models.chord import PITCH_NAMES, quality_intervals

    rng = np.random.default_rng([seed, KINDS.index(kind), index])
    w = _Writer(sr)
    part = _part(rng, 1, "comp", family, (80, 110), 0)
    chords = [ChordSegment(0.0, w.q(0.5), "N", (), None)]
    t = chords[0].end
    for _ in range(12 if kind == "isolated" else 24):
        root, quality = int(rng.integers(12)), str(rng.choice(["maj", "min"]))
        pcs = tuple((root + i) % 12 for i in quality_intervals(quality))
        voicing = piano_voicing(rng, pcs, float(rng.uniform(55, 68)))
        low = min(voicing) % 12
        label = spell_over_bass(f"{PITCH_NAMES[root]}:{quality}", low)
        start, end = w.q(t), w.q(t + (float(rng.uniform(1.5, 2.5)) if kind == "isolated" else 0.75))
        vel = int(rng.uniform(60, 110))
        for key in voicing:
            w.note(part.channel, start, end, key, vel)
        chords.append(ChordSegment(start, end, label, tuple(sorted(pcs)), low))
        t = end
        if kind == "isolated":
            chords.append(ChordSegment(t, w.q(t + float(rng.uniform(0.5, 1.5))), "N", (), None))
            t = chords[-1].end
    if kind == "fast":
        chords.append(ChordSegment(t, w.q(t + 0.5), "N", (), None))
    duration = chords[-1].end
    w.setup(part)
    return Performance(
        "mixture", duration, 120.0, ((0.0, duration, "C:major"),), (part,), w.sorted(), tuple(chords), (), None,
        ((family, 0.0, duration),), float(rng.uniform(-6.0, 0.0)),
    )  # fmt: skip


def render_probes(folder: Path, soundfont: str, per_kind: int, seed: int, sr: int = 22050) -> list[str]:
    """FLAC + JAMS pairs of every probe in ``folder``; their stems."""
    import soundfile as sf

    from mirpipe.demo import labels
    from mirpipe.demo import soundfont as sfont

    folder.mkdir(parents=True, exist_ok=True)
    stems = []
    for kind in KINDS:
        for i in range(per_kind):
            family = INSTRUMENTS[i % len(INSTRUMENTS)]
            perf = compose_probe(kind, i, seed, sr, family)
            y, info = sfont.render(perf, soundfont, sr)
            stem = f"probe-{kind}-{i:02d}"
            jam = labels.annotate(perf, stem, {"soundfont": info.soundfont, "probe": kind})
            sf.write(folder / f"{stem}.flac", y, sr, format="FLAC", subtype="PCM_16")
            jam.save(str(folder / f"{stem}.jams"), strict=True)
            stems.append(stem)
    return stems


def frame_counts(ref, est, step: float = STEP) -> dict[str, int]:
    """Frames (every ``step`` s of the reference) by what the reference and the estimate say."""
    import mir_eval

    ri, rl = ref.to_interval_values()
    ei, el = est.to_interval_values()
    times = np.arange(0.0, float(ri[:, 1].max()), step)
    r = mir_eval.util.interpolate_intervals(ri, rl, times, "N")
    e = mir_eval.util.interpolate_intervals(ei, el, times, "N")
    r_n = np.array([x == "N" for x in r])
    e_n = np.array([x == "N" for x in e])
    root = np.asarray(mir_eval.chord.root(r, e)) == 1.0
    return {
        "chord_frames": int((~r_n).sum()),
        "n_frames": int(r_n.sum()),
        "chord_called_n": int((~r_n & e_n).sum()),
        "n_called_chord": int((r_n & ~e_n).sum()),
        "root_right": int((~r_n & root).sum()),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind: majmin and root pooled by their mir_eval weights (as bench_real pools them), and the frame rates."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        c = {k: sum(r["frames"][k] for r in mine) for k in mine[0]["frames"]}
        seconds = sum(r["seconds"] for r in mine)
        out[kind] = {
            "files": len(mine),
            "seconds": round(seconds, 1),
            **{
                m: sum(r[m] * r["weights"][m] for r in mine) / max(sum(r["weights"][m] for r in mine), 1e-9)
                for m in ("majmin", "root")
            },
            "chord_called_n": c["chord_called_n"] / max(c["chord_frames"], 1),
            "n_called_chord": c["n_called_chord"] / max(c["n_frames"], 1),
            "root_on_chords": c["root_right"] / max(c["chord_frames"], 1),
        }
    return out


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| probe | files | audio s | majmin | root | chord frames called N | N frames called a chord | root on chord frames |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, s in summary.items():
        lines.append(
            f"| {kind} | {s['files']} | {s['seconds']:.0f} | {s['majmin']:.3f} | {s['root']:.3f} | "
            f"{s['chord_called_n']:.2f} | {s['n_called_chord']:.2f} | {s['root_on_chords']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a model file (mirpipe export) or a trained workdir")
    ap.add_argument(
        "--soundfont", default="TimGM6mb.sf2", help="the soundfont that plays the probes (default: the demo's unseen test one)"
    )
    ap.add_argument("--per-kind", type=int, default=6, help="probe files of each kind")
    ap.add_argument("--seed", type=int, default=4242, help="the probes' seed (not a demo corpus seed)")
    ap.add_argument(
        "--folder", type=Path, default=None, help="render the probes here and keep them (default: a temporary folder)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = ap.parse_args(argv)

    import jams

    bench_real = _bench_real()
    with tempfile.TemporaryDirectory(prefix="chord-probe-") as tmp:
        folder = args.folder or Path(tmp) / "probes"
        render_probes(folder, args.soundfont, args.per_kind, args.seed)
        est_dir = Path(tmp) / "estimates"
        real_args = bench_real.parse_args(
            ["--model", str(args.model), "--folder", str(folder), "--no-pyin", "--out", str(est_dir)]
        )
        report = bench_real.run(real_args, est_dir)
        rows = []
        for f in report["files"]:
            chord = f["tasks"].get("chord")
            if f["error"] or chord is None or chord.get("error"):
                print(f"{f['file']}: not scored: {f['error'] or (chord or {}).get('error')}", file=sys.stderr)
                continue
            stem = Path(f["file"]).stem
            ref = jams.load(str(folder / f"{stem}.jams")).search(namespace="chord")[0]
            est = next(a for a in jams.load(str(est_dir / f"{stem}.jams")).annotations if a.namespace.startswith("chord"))
            rows.append(
                {
                    "file": f["file"],
                    "kind": stem.split("-")[1],
                    "seconds": f["duration"],
                    **{m: chord["scores"][m]["score"] for m in ("majmin", "root")},
                    "weights": {m: chord["scores"][m]["weight"] for m in ("majmin", "root")},
                    "frames": frame_counts(ref, est),
                }
            )
    summary = summarize(rows)
    name = report["model"]["name"] or args.model.name
    print(f"\nchord probes ({args.soundfont}, seed {args.seed}): model {name} ({report['model']['identity']})\n")
    print(table(summary))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"model": report["model"], "soundfont": args.soundfont, "seed": args.seed, "summary": summary, "files": rows},
                indent=1,
            )
            + "\n"
        )
    return 0 if len(rows) == 2 * args.per_kind else 1


if __name__ == "__main__":
    sys.exit(main())
