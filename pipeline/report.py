"""``reports/index.html``: one static page per workdir (no server, no network request; it opens from
disk). Per task: the score table with the baseline row, the test split's size and a bootstrap 95%
interval of each summary metric's per-track mean; the robustness curve when computed; the training
curves (loss and metric per epoch, inline SVG); the confusion matrix when the task draws one; the
per-track scores, sortable, each with its figure when evaluate drew one. Then the workdir's experiments
and the comparisons ``mirpipe compare`` wrote. Written after evaluate and by ``mirpipe report``."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

from mirpipe.records import TaskScores
from mirpipe.workdir import Workdir

from .experiments import list_experiments, paired_bootstrap

PAGE = "index.html"

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4;cursor:pointer}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}.note{color:#666;font-size:.9em}
.fig{display:flex;flex-wrap:wrap;gap:1em}.fig figure{margin:0;max-width:560px}
svg text{font-size:11px;fill:#444}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows), asc = th.dataset.asc !== '1';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent, y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    th.dataset.asc = asc ? '1' : '0';
  });
});
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any, fmt: str = ".3f") -> str:
    return "-" if not isinstance(v, (int, float)) or not math.isfinite(v) else format(v, fmt)


def _curve_svg(history: list[dict[str, Any]], keys: list[str], title: str) -> str:
    """A line chart of ``keys`` over the epochs of a training history (inline SVG)."""
    series = {k: [(i + 1, h.get(k)) for i, h in enumerate(history)] for k in keys}
    points = [(x, y) for s in series.values() for x, y in s if isinstance(y, (int, float)) and math.isfinite(y)]
    if not points:
        return ""
    w, h, pad = 420, 220, 40
    x0, x1 = 1, max(2, max(x for x, _ in points))
    y0, y1 = min(y for _, y in points), max(y for _, y in points)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def px(x: float, y: float) -> str:
        return f"{pad + (x - x0) / (x1 - x0) * (w - 2 * pad):.1f},{h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad):.1f}"

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="{_e(title)}">']
    parts.append(f'<rect x="{pad}" y="{pad // 2}" width="{w - 2 * pad}" height="{h - 1.5 * pad}" fill="none" stroke="#ccc"/>')
    parts.append(f'<text x="{pad}" y="14">{_e(title)}</text>')
    parts.append(f'<text x="{pad}" y="{h - 8}">epoch 1</text><text x="{w - pad - 40}" y="{h - 8}">epoch {x1}</text>')
    parts.append(f'<text x="2" y="{pad // 2 + 10}">{y1:.3g}</text><text x="2" y="{h - pad}">{y0:.3g}</text>')
    for i, (k, s) in enumerate(series.items()):
        xy = [px(x, y) for x, y in s if isinstance(y, (int, float)) and math.isfinite(y)]
        if xy:
            c = colors[i % len(colors)]
            parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(xy)}"/>')
            parts += [f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="3" fill="{c}"/>' for p in xy]
            parts.append(f'<text x="{w - pad - 90}" y="{pad + 12 * i + 4}" style="fill:{c}">{_e(k)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _history(workdir: Path, task: str) -> list[dict[str, Any]]:
    from .ledger import Ledger

    try:
        done = Ledger(workdir).done("train").get(task)
    except Exception:  # noqa: BLE001 - a report never fails on a missing or older ledger
        return []
    record = (done or {}).get("record") or {}
    return list(record.get("history") or [])


def _task_section(workdir: Path, reports: Path, task: str, scores: TaskScores) -> str:
    dirs = Workdir(workdir)
    out = [f'<h2 id="{_e(task)}">{_e(task)}</h2>']
    out.append(
        f'<p class="note">{scores.n_tracks} test tracks, {scores.seconds:.0f} s of audio; {_e(scores.scored_by)}. '
        "model: the pooled score; per-track mean: the mean of the tracks' own scores, with its percentile "
        "bootstrap 95% interval (tracks resampled).</p>"
    )
    cols = scores.columns
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = [f"<tr><td>model</td>{''.join(f'<td>{_num(scores.metrics.get(c))}</td>' for c in cols)}</tr>"]
    # the interval is of the per-track mean, which differs from a pooled score (duration-weighted, or
    # mAP over every patch): both rows are shown so an interval is never read as the pooled score's
    means, intervals = [], []
    for c in cols:
        values = [float(v) for s in scores.tracks.values() if (v := s.get(c)) is not None]
        lo, hi = paired_bootstrap(values, resamples=2000) if values else (float("nan"), float("nan"))
        means.append(f"<td>{_num(sum(values) / len(values)) if values else '-'}</td>")
        intervals.append(f"<td>[{_num(lo)}, {_num(hi)}]</td>")
    rows.append(f"<tr><td>per-track mean</td>{''.join(means)}</tr>")
    rows.append(f"<tr><td>its 95% interval</td>{''.join(intervals)}</tr>")
    if isinstance(scores.baseline, dict):
        name = scores.baseline.get("name") or "baseline"
        rows.append(f"<tr><td>{_e(name)}</td>{''.join(f'<td>{_num(scores.baseline.get(c))}</td>' for c in cols)}</tr>")
    out.append(f'<table class="scores"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    for note in scores.notes:
        out.append(f'<p class="note">{_e(note)}</p>')
    figures = []
    history = _history(workdir, task)
    if history:
        losses = [k for k in ("train_loss", "val_loss") if any(k in h for h in history)]
        metrics = [k for k in history[0] if k not in losses and k not in ("epoch", "step") and "loss" not in k]
        metric = [k for k in metrics if isinstance(history[0].get(k), (int, float))][:1]
        for keys, title in ((losses, "loss per epoch"), (metric, f"{metric[0] if metric else 'metric'} per epoch")):
            svg = _curve_svg(history, keys, title) if keys else ""
            if svg:
                figures.append(f"<figure>{svg}</figure>")
    for name, caption in (
        ("robustness.png", "robustness: test tracks transposed"),
        ("figures/confusion_matrix.png", "confusion matrix"),
    ):
        path = dirs.report_dir(task) / name
        if path.exists():
            src = path.relative_to(reports).as_posix()
            figures.append(f'<figure><img src="{_e(src)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>')
    if figures:
        out.append(f'<div class="fig">{"".join(figures)}</div>')
    track_rows = []
    for track in sorted(scores.tracks):
        s = scores.tracks[track]
        fig = dirs.figures(task) / f"{track}.png"
        link = f'<a href="{_e(fig.relative_to(reports).as_posix())}">figure</a>' if fig.exists() else ""
        cells = "".join(f'<td data-v="{_e(s.get(c))}">{_num(s.get(c))}</td>' for c in cols)
        track_rows.append(f"<tr><td>{_e(track)}</td>{cells}<td>{link}</td></tr>")
    out.append(
        f'<h3>per track</h3><table class="sortable tracks"><thead><tr><th>track</th>{head}<th>figure</th></tr></thead>'
        f"<tbody>{''.join(track_rows)}</tbody></table>"
    )
    return "".join(out)


def _experiments_section(workdir: Path) -> str:
    found = list_experiments(workdir)
    out = []
    if found:
        rows = []
        for e in found:
            settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in e["set"].items())
            scored = "; ".join(
                f"{task}: " + " ".join(f"{m} {_num(v)}" for m, v in (t.get("scores") or {}).items())
                if "scores" in t
                else f"{task}: {t['status']}"
                for task, t in e["tasks"].items()
            )
            rows.append(f"<tr><td>{_e(e['name'])}</td><td>{_e(settings)}</td><td>{_e(scored)}</td></tr>")
        out.append(
            "<h2 id='experiments'>experiments</h2><table class='experiments'><thead><tr><th>name</th><th>settings</th>"
            f"<th>scores</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    compare_root = Workdir(workdir).experiments / "compare"
    for path in sorted(compare_root.glob("*/compare.json")) if compare_root.is_dir() else []:
        body = json.loads(path.read_text())
        la, lb = list(body["runs"])
        cells = "".join(
            f"<tr><td>{_e(r['task'])}</td><td>{_e(r['metric'])}</td><td>{r['n_tracks']}</td><td>{_num(r[la])}</td>"
            f"<td>{_num(r[lb])}</td><td>{_num(r['diff'], '+.3f')}</td><td>[{_num(r['ci_low'], '+.3f')}, "
            f"{_num(r['ci_high'], '+.3f')}]</td><td>{_num(r['p_wilcoxon'], '.3g')}</td></tr>"
            for r in body["rows"]
        )
        out.append(
            f"<h3>{_e(lb)} against {_e(la)}</h3><table class='sortable compare'><thead><tr><th>task</th><th>metric</th>"
            f"<th>tracks</th><th>{_e(la)}</th><th>{_e(lb)}</th><th>diff</th><th>95% CI</th><th>p (Wilcoxon)</th></tr></thead>"
            f"<tbody>{cells}</tbody></table>"
        )
        png = path.parent / "compare.png"
        if png.exists():
            src = Path(os.path.relpath(png, Path(workdir) / "reports")).as_posix()
            out.append(f'<figure><img src="{_e(src)}" alt="{_e(lb)} - {_e(la)}: differences and intervals"></figure>')
    return "".join(out)


def write_report(workdir: Path) -> Path:
    """Write ``<workdir>/reports/index.html`` from what the workdir holds; returns its path."""
    from mirpipe.storage.atomic import write_bytes

    workdir = Path(workdir)
    reports = workdir / "reports"
    tasks = sorted(p.parent.name for p in reports.glob("*/scores.json")) if reports.is_dir() else []
    sections = []
    for task in tasks:
        scores = TaskScores.from_json(json.loads(Workdir(workdir).scores(task).read_text()))
        sections.append(_task_section(workdir, reports, task, scores))
    sections.append(_experiments_section(workdir))
    nav = " · ".join(f'<a href="#{_e(t)}">{_e(t)}</a>' for t in tasks)
    body = "".join(sections) if tasks else "<p>No task has been evaluated yet (mirpipe run).</p>" + sections[-1]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>mirpipe report: {_e(workdir.name)}</title><style>{STYLE}</style></head><body>"
        f"<h1>mirpipe report: {_e(workdir.resolve())}</h1><p>{nav}</p>{body}<script>{SORT_JS}</script></body></html>"
    )
    path = reports / PAGE
    write_bytes(path, page.encode())
    return path
