"""Models side by side on the same real recordings: the reports of ``bench_real.py --json`` in one table.

    .venv/bin/python benchmarks/compare_real.py base=/tmp/base-s0.json,/tmp/base-s1.json,/tmp/base-s2.json \
        takes=/tmp/takes-s0.json,/tmp/takes-s1.json [--json /tmp/compare.json] [--per-file]

Each argument is ``[NAME=]REPORT[,REPORT...]``: one setting, scored by one report or several (seeds of
the same setting; the table shows their mean and, beside it, their lowest and highest). The first is
the reference every other row is compared with. Every report must hold the same files (paths relative
to the folder it scored) and have scored the same ones for each task it shares with the reference (a
report that did not is named, with the files, and nothing is printed; exit status 2).

What it prints:

- **one row per setting** with the headline figures: chord root, majmin and sevenths; melody OA, VR and
  VFA (pYIN beside them when a report ran it); instruments right of the clips scored. The last column
  says whether the setting beats the reference on every headline the issue asks for (chord majmin,
  melody OA, melody VFA lower, instrument accuracy), and ``within seeds`` marks a difference no larger
  than the reference's own spread over its reports;
- **what each figure rests on**: files, audio seconds, the melody references' voiced and unvoiced
  seconds (the VFA's denominator), the instrument clips, so a difference can be read against it;
- with ``--per-file``, each file's figure for each setting (chord majmin, melody OA and VFA, the
  instrument named), and on how many files each setting is better or worse than the reference.

The figures are the reports' own (duration-pooled by ``bench_real.py``); a mean over several reports
is the plain mean of their pooled figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (task, metric, True when higher is better), in table order
HEADLINE: tuple[tuple[str, str, bool], ...] = (
    ("chord", "root", True),
    ("chord", "majmin", True),
    ("chord", "sevenths", True),
    ("pitch", "OA", True),
    ("pitch", "VR", True),
    ("pitch", "VFA", False),
)
# what "better on every headline" means (issue 30's bar): these, and instrument accuracy
BAR: tuple[tuple[str, str, bool], ...] = (("chord", "majmin", True), ("pitch", "OA", True), ("pitch", "VFA", False))
SHOWN = {"chord": "chord", "pitch": "melody"}
INSTRUMENT = "instrument"


class CompareError(Exception):
    """Reports that cannot be compared (unreadable, or not the same files)."""


@dataclass
class Setting:
    name: str
    paths: list[Path]
    reports: list[dict[str, Any]]


def parse_setting(text: str) -> tuple[str | None, list[Path]]:
    """``[NAME=]A.json[,B.json...]`` -> (NAME or None, paths)."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    paths = [Path(p) for p in rest.split(",") if p.strip()]
    if not paths:
        raise argparse.ArgumentTypeError(f"no report in {text!r} (write NAME=A.json[,B.json])")
    return (name.strip() or None), paths


def load_setting(name: str | None, paths: Sequence[Path]) -> Setting:
    reports = []
    for p in paths:
        try:
            report = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise CompareError(f"{p}: cannot be read as a bench_real.py report: {exc}") from None
        if not isinstance(report, dict) or "files" not in report or "aggregate" not in report:
            raise CompareError(f"{p}: not a bench_real.py --json report (no 'files' and 'aggregate')")
        reports.append(report)
    if name is None:
        model = reports[0].get("model", {})
        name = model.get("name") or paths[0].stem
    return Setting(name, list(paths), reports)


# -- reading one report ----------------------------------------------------------------------------


def scored_files(report: Mapping[str, Any], task: str) -> set[str]:
    """The files a report scored for ``task`` (an instrument clip out of the vocabulary counts as scored:
    it is the same clip either way)."""
    return {r["file"] for r in report["files"] if task in r.get("tasks", {}) and "error" not in r["tasks"][task]}


def metric(report: Mapping[str, Any], task: str, name: str) -> float | None:
    return report["aggregate"].get(task, {}).get("model", {}).get("metrics", {}).get(name)


def baseline_metric(report: Mapping[str, Any], task: str, name: str) -> tuple[str, float] | None:
    base = report["aggregate"].get(task, {}).get("baseline")
    if not base or base.get("metrics", {}).get(name) is None:
        return None
    return base["name"], float(base["metrics"][name])


def instrument_counts(report: Mapping[str, Any]) -> tuple[int, int] | None:
    pooled = report["aggregate"].get(INSTRUMENT, {}).get("model")
    return None if not pooled else (int(pooled["correct"]), int(pooled["files"]))


def file_figure(row: Mapping[str, Any], task: str, name: str) -> float | None:
    scores = row.get("tasks", {}).get(task, {}).get("scores", {})
    entry = scores.get(name)
    return None if entry is None else float(entry["score"])


def file_weight(row: Mapping[str, Any], task: str, name: str) -> float:
    entry = row.get("tasks", {}).get(task, {}).get("scores", {}).get(name)
    return 0.0 if entry is None else float(entry["weight"])


# -- checks ----------------------------------------------------------------------------------------


def check_same_files(settings: Sequence[Setting]) -> None:
    """Every report holds the files of the reference's first report, and scored the same ones for each
    task both scored (a model without a task leaves its cells empty)."""
    ref = settings[0].reports[0]
    ref_path = settings[0].paths[0]
    problems = []
    for s in settings:
        for path, report in zip(s.paths, s.reports):
            mine, theirs = {r["file"] for r in report["files"]}, {r["file"] for r in ref["files"]}
            if mine != theirs:
                problems.append(f"{path}: not the files of {ref_path}: {_difference(mine, theirs)}")
                continue
            for t in sorted(set(report["aggregate"]) & set(ref["aggregate"])):
                mine, theirs = scored_files(report, t), scored_files(ref, t)
                if mine != theirs:
                    problems.append(f"{path} ({t}): scored other files than {ref_path}: {_difference(mine, theirs)}")
    if problems:
        raise CompareError("the reports did not score the same files:\n" + "\n".join(f"- {p}" for p in problems))


def _difference(mine: set[str], theirs: set[str]) -> str:
    return f"only here: {', '.join(sorted(mine - theirs)) or 'none'}; only there: {', '.join(sorted(theirs - mine)) or 'none'}"


# -- the figures of a setting ----------------------------------------------------------------------


def values(setting: Setting, task: str, name: str) -> list[float]:
    return [v for v in (metric(r, task, name) for r in setting.reports) if v is not None]


def instrument_accuracies(setting: Setting) -> list[float]:
    out = []
    for r in setting.reports:
        counts = instrument_counts(r)
        if counts and counts[1]:
            out.append(counts[0] / counts[1])
    return out


def spread(xs: Sequence[float]) -> float:
    return max(xs) - min(xs) if len(xs) > 1 else 0.0


def cell(xs: Sequence[float], digits: int = 3) -> str:
    if not xs:
        return "-"
    mean = statistics.fmean(xs)
    if len(xs) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def instrument_cell(setting: Setting) -> str:
    counts = [c for c in (instrument_counts(r) for r in setting.reports) if c]
    if not counts:
        return "-"
    if len(counts) == 1:
        return f"{counts[0][0]} of {counts[0][1]}"
    right = [c[0] for c in counts]
    return f"{statistics.fmean(right):.1f} of {counts[0][1]} ({min(right)}-{max(right)})"


def verdict(setting: Setting, ref: Setting) -> dict[str, Any]:
    """Is ``setting`` better than ``ref`` on every headline of the bar (means over reports)? Also which
    differences lie within the reference's own spread over its reports."""
    better: dict[str, bool | None] = {}
    within: dict[str, bool] = {}
    missing: dict[str, str] = {}
    bars = [(t, m, hi) for t, m, hi in BAR] + [(INSTRUMENT, "accuracy", True)]
    for t, m, higher in bars:
        mine = instrument_accuracies(setting) if t == INSTRUMENT else values(setting, t, m)
        theirs = instrument_accuracies(ref) if t == INSTRUMENT else values(ref, t, m)
        key = f"{t} {m}"
        if not mine or not theirs:
            better[key] = None
            missing[key] = "not scored" if not mine else "not in the reference"
            continue
        d = statistics.fmean(mine) - statistics.fmean(theirs)
        better[key] = d > 0 if higher else d < 0
        within[key] = abs(d) <= spread(theirs)
    return {
        "better": better,
        "within_reference_seeds": within,
        "missing": missing,
        "all_better": bool(better) and all(b is True for b in better.values()),
    }


def verdict_cell(v: Mapping[str, Any], is_ref: bool) -> str:
    if is_ref:
        return "(reference)"
    worse = [k for k, b in v["better"].items() if b is False]
    if v["all_better"]:
        text = "yes"
    else:
        text = "no: " + ", ".join([f"{k} not better" for k in worse] + [f"{k} {why}" for k, why in v["missing"].items()])
    noise = [k for k, w in v["within_reference_seeds"].items() if w]
    if noise:
        text += f"; within seeds: {', '.join(noise)}"
    return text


# -- tables ----------------------------------------------------------------------------------------


def headline_table(settings: Sequence[Setting]) -> str:
    shown = [(t, m, hi) for t, m, hi in HEADLINE if any(values(s, t, m) for s in settings)]
    has_instrument = any(instrument_counts(r) for s in settings for r in s.reports)
    head = [f"{SHOWN[t]} {m}" for t, m, _ in shown] + (["instruments right"] if has_instrument else [])
    lines = [
        "| setting | reports | " + " | ".join(head) + " | better than the reference on every headline |",
        "|---" * (len(head) + 3) + "|",
    ]
    ref = settings[0]
    for i, s in enumerate(settings):
        cells = [cell(values(s, t, m)) for t, m, _ in shown] + ([instrument_cell(s)] if has_instrument else [])
        lines.append(f"| {s.name} | {len(s.reports)} | " + " | ".join(cells) + f" | {verdict_cell(verdict(s, ref), i == 0)} |")
    pyin = _pyin_row(settings, shown)
    if pyin:
        lines.append(pyin + (" - |" if has_instrument else "") + " |")
    return "\n".join(lines)


def _pyin_row(settings: Sequence[Setting], shown: Sequence[tuple[str, str, bool]]) -> str | None:
    """pYIN's melody figures (the same in every report that ran it: it does not depend on the model)."""
    for s in settings:
        for r in s.reports:
            found = {m: baseline_metric(r, t, m) for t, m, _ in shown if t == "pitch"}
            if any(found.values()):
                name = next(v[0] for v in found.values() if v)
                cells = [f"{found[m][1]:.3f}" if t == "pitch" and found.get(m) else "-" for t, m, _ in shown]
                return f"| {name} (beside the melody model) | 1 | " + " | ".join(cells) + " |"
    return None


def basis_table(ref: Mapping[str, Any]) -> str:
    """What each task's figures rest on, from the reference's first report."""
    lines = ["| task | files | audio s | what the figures rest on |", "|---|---|---|---|"]
    for t, entry in ref["aggregate"].items():
        rows = [r for r in ref["files"] if t in r.get("tasks", {}) and "error" not in r["tasks"][t]]
        if t == "pitch":
            voiced = sum(file_weight(r, t, "VR") for r in rows)
            unvoiced = sum(file_weight(r, t, "VFA") for r in rows)
            note = f"{voiced:.1f} s voiced (VR, RPA), {unvoiced:.1f} s unvoiced (VFA's denominator)"
        elif t == "chord":
            note = "duration-weighted over the files"
        else:
            pooled = entry.get("model", {})
            note = f"{pooled.get('files', 0)} clips scored, {pooled.get('not_in_vocabulary', 0)} not in the vocabulary"
        lines.append(f"| {SHOWN.get(t, t)} | {len(rows)} | {entry.get('seconds', 0.0):.1f} | {note} |")
    return "\n".join(lines)


PER_FILE: tuple[tuple[str, str, bool], ...] = (("chord", "majmin", True), ("pitch", "OA", True), ("pitch", "VFA", False))


def per_file_table(settings: Sequence[Setting]) -> str:
    """Each file's figure per setting (mean over its reports) and, per setting, the files it is better
    and worse on than the reference."""
    ref = settings[0]
    lines = ["| file | figure | " + " | ".join(s.name for s in settings) + " |", "|---" * (len(settings) + 2) + "|"]
    tally = {s.name: [0, 0, 0] for s in settings[1:]}  # better, worse, equal
    files = sorted({r["file"] for r in ref.reports[0]["files"]})
    for f in files:
        for t, m, higher in PER_FILE:
            per = [_file_mean(s, f, t, m) for s in settings]
            if per[0] is None:
                continue
            lines.append(f"| {f} | {SHOWN[t]} {m} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in per) + " |")
            _count(tally, settings, per, higher)
        named = [_named(s, f) for s in settings]
        if named[0] is not None:
            lines.append(f"| {f} | instrument | " + " | ".join(n or "-" for n in named) + " |")
            right = [_right(s, f) for s in settings]
            _count(tally, settings, right, True)
    lines.append("")
    lines.append("| setting | files better than the reference | worse | equal |")
    lines.append("|---|---|---|---|")
    for name, (b, w, e) in tally.items():
        lines.append(f"| {name} | {b} | {w} | {e} |")
    return "\n".join(lines)


def _count(tally: dict[str, list[int]], settings: Sequence[Setting], per: Sequence[float | None], higher: bool) -> None:
    ref = per[0]
    if ref is None:
        return
    for s, v in zip(settings[1:], per[1:]):
        if v is None:
            continue
        d = v - ref if higher else ref - v
        tally[s.name][0 if d > 1e-9 else 1 if d < -1e-9 else 2] += 1


def _rows(s: Setting, f: str) -> list[Mapping[str, Any]]:
    return [row for r in s.reports for row in r["files"] if row["file"] == f]


def _file_mean(s: Setting, f: str, t: str, m: str) -> float | None:
    xs = [v for v in (file_figure(row, t, m) for row in _rows(s, f)) if v is not None]
    return statistics.fmean(xs) if xs else None


def _scored_clips(s: Setting, f: str) -> list[Mapping[str, Any]]:
    """The instrument rows of file ``f`` that ``s``'s reports scored (one per report)."""
    named = [row["tasks"][INSTRUMENT] for row in _rows(s, f) if INSTRUMENT in row.get("tasks", {})]
    return [n for n in named if "error" not in n and n.get("status") == "scored"]


def _named(s: Setting, f: str) -> str | None:
    named = _scored_clips(s, f)
    if not named:
        return None
    marks = [f"{n['estimate']} ({'right' if n['correct'] else 'wrong'})" for n in named]
    return marks[0] if len(set(marks)) == 1 else "; ".join(marks)


def _right(s: Setting, f: str) -> float | None:
    named = _scored_clips(s, f)
    return statistics.fmean(1.0 if n["correct"] else 0.0 for n in named) if named else None


# -- the command -----------------------------------------------------------------------------------


def compare(settings: Sequence[Setting]) -> dict[str, Any]:
    """Every figure of the tables, as JSON."""
    ref = settings[0]
    out = []
    for s in settings:
        figures = {f"{t} {m}": values(s, t, m) for t, m, _ in HEADLINE if values(s, t, m)}
        if instrument_accuracies(s):
            figures["instrument accuracy"] = instrument_accuracies(s)
        out.append({"name": s.name, "reports": [str(p) for p in s.paths], "figures": figures, "verdict": verdict(s, ref)})
    return {"reference": ref.name, "folder": ref.reports[0].get("folder"), "settings": out}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="+", type=parse_setting, metavar="[NAME=]REPORT[,REPORT...]")
    ap.add_argument("--per-file", action="store_true", help="also each file's figure per setting")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here (JSON)")
    args = ap.parse_args(argv)
    try:
        settings = [load_setting(name, paths) for name, paths in args.settings]
        names = [s.name for s in settings]
        if len(set(names)) != len(names):
            raise CompareError(f"two settings share a name ({', '.join(names)}): write NAME=REPORT")
        check_same_files(settings)
    except CompareError as exc:
        print(f"compare_real.py: {exc}", file=sys.stderr)
        return 2
    ref = settings[0].reports[0]
    print(f"\n{ref.get('folder')}: {len(settings)} settings, reference {settings[0].name}\n")
    print(headline_table(settings))
    print("\nwhat the figures rest on:\n")
    print(basis_table(ref))
    if args.per_file:
        print("\nper file (mean over each setting's reports):\n")
        print(per_file_table(settings))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(compare(settings), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
