"""Experiments on one store, and paired comparisons of their scores.

An experiment is a named variant of a workdir's training and evaluation settings
(``mirpipe run --workdir W --experiment NAME --set train.max_epochs=20``). It is a
workdir of its own, ``W/experiments/NAME/`` (``mirpipe.yaml``, ``experiment.json``, ``ledger/``,
``train/``, ``reports/``), that reads ``W``'s manifest and feature store: the stages before training
are planned in ``W`` (they schedule nothing when done there) and their done items feed the
experiment's train and evaluate. A setting that would change what those stages compute (their
fingerprints) is refused: that is a new workdir, not an experiment.

``mirpipe compare A B`` pairs the test tracks of two runs by id and reports, per task and metric,
each run's mean per-track score, the difference, a paired bootstrap 95% interval of the mean
difference and the Wilcoxon signed-rank p-value.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import ArrayLike

from mirpipe.errors import ConfigurationError
from mirpipe.shifts import AugmentParams
from mirpipe.workdir import Workdir

from .config import ClusterConfig, PipelineBase, dump, parse_pipeline

RUN_STAGES = ("train", "evaluate")  # what an experiment runs in its own workdir
INFO = "experiment.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_sets(sets: Sequence[str]) -> dict[str, Any]:
    """``["train.max_epochs=3", "augment.shifts=[0]"]`` -> ``{"train.max_epochs": 3, ...}``
    (values read as YAML: numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigurationError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train.max_epochs=3")
        out[key.strip()] = yaml.safe_load(value)
    return out


def apply_sets(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of a configuration's JSON form with each dotted key set."""
    data = json.loads(json.dumps(data))
    for key, value in changes.items():
        node = data
        *path, last = key.split(".")
        for part in path:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigurationError(f"--set {key}: {part} is not a section")
            node = child
        node[last] = value
    return data


def experiment_config(base: PipelineBase, changes: dict[str, Any], name: str) -> PipelineBase:
    """``base`` with ``changes``, validated; refused when a stage before training would compute
    anything else (its fingerprint parameters change).

    ``augment.shifts`` and ``augment.enabled`` may change where the store can serve them: training
    draws the experiment's shifts from the workdir's entries (feature mode: any shift within the
    stored margin; audio mode: the stored variants); ``augment.mode`` and ``backend`` may not."""
    from mirpipe.stage import StageContext
    from mirpipe.stages import STAGES

    from .runner import params_blob, stage_order

    config = parse_pipeline(apply_sets(dump(base), changes), f"experiment {name}")
    shared = [s for s in stage_order(base) if s not in RUN_STAGES]
    if stage_order(config) != stage_order(base):
        raise ConfigurationError(
            f"experiment {name}: the settings change which stages run; an experiment varies train and evaluate"
        )
    base_params = base.stage_params()
    params = dict(config.stage_params())
    if "augment" in base_params:
        aug: AugmentParams = base_params["augment"]  # type: ignore[assignment]  # the section's model
        new: AugmentParams = params["augment"]  # type: ignore[assignment]
        if (aug.mode, aug.backend) != (new.mode, new.backend):
            raise ConfigurationError(
                f"experiment {name}: augment.mode and augment.backend decide what the store holds: use a new workdir for them"
            )
        if aug.variant_deformations() != new.variant_deformations():
            raise ConfigurationError(
                f"experiment {name}: augment.deformations decide what the store holds: use a new workdir for them"
            )
        readable = set(aug.stored_variants()) | set(range(-aug.margin(), aug.margin() + 1))
        missing = [n for n in new.active_shifts() if n not in readable]
        if missing:
            raise ConfigurationError(
                f"experiment {name}: the workdir's store cannot serve shifts {missing} "
                f"(it holds {aug.mode}-mode entries for shifts {aug.active_shifts()}): use a new workdir for them"
            )
        params["augment"] = aug  # the shared stages computed the store with the workdir's shifts
    a = StageContext(Path("."), base_params, tuple(base.plugins))
    b = StageContext(Path("."), params, tuple(config.plugins))
    for s in shared:
        if params_blob(STAGES.get(s), a) != params_blob(STAGES.get(s), b):
            raise ConfigurationError(
                f"experiment {name}: {', '.join(changes)} changes what the {s} stage computes; an experiment reuses "
                f"the workdir's {s} outputs: use a new workdir for it"
            )
    return config


@dataclass(frozen=True)
class ExperimentInfo:
    name: str
    set: dict[str, Any]  # the dotted keys it changes
    created: float
    workdir: str  # the workdir it belongs to


def read_info(folder: Path) -> ExperimentInfo | None:
    path = folder / INFO
    if not path.exists():
        return None
    return ExperimentInfo(**json.loads(path.read_text()))


def run_experiment(
    workdir: Path,
    name: str,
    sets: Sequence[str],
    cluster: ClusterConfig,
    executor,
    log: Callable[[str], None] = print,
    progress: bool = True,
    force: tuple[str, ...] = (),
    retry_failed: bool = False,
):
    """Run experiment ``name`` of ``workdir``: the shared stages in the workdir (nothing when done),
    then train and evaluate in ``workdir/experiments/name/``. Returns (experiment workdir, reports)."""
    from mirpipe.storage.atomic import write_bytes

    from . import workdir as wd
    from .runner import Runner, stage_order

    if not NAME.match(name) or name in ("compare", "base"):
        raise ConfigurationError(
            f"experiment name {name!r}: letters, digits, '_', '-' and '.' only, and not compare or base "
            "(the comparisons' folder; the workdir itself)"
        )
    if wd.recorded(workdir) is None:
        raise ConfigurationError(f"{workdir}: no {wd.RECORD}; run the workdir first (mirpipe run --workdir {workdir})")
    base, _ = wd.resolve(workdir, None, None)
    folder = Workdir(workdir).experiment(name).root
    info = read_info(folder)
    changes = parse_sets(sets) if sets else (info.set if info is not None else {})
    config = experiment_config(base, changes, name)
    shared = [s for s in stage_order(base) if s not in RUN_STAGES]
    parent = Runner(workdir, base, log=log, progress=progress)
    reports = parent.run(executor, until=shared[-1], retry_failed=retry_failed) if shared else []
    if any(r.stopped is not None for r in reports):
        return folder, reports
    upstream = {s: parent.done_items(s) for s in shared}
    wd.record(folder, config, cluster)
    created = info.created if info is not None and info.set == changes else time.time()
    info = ExperimentInfo(name, changes, created, str(Path(workdir).resolve()))
    write_bytes(folder / INFO, json.dumps(asdict(info), indent=1).encode())
    runner = Runner(folder, config, log=log, progress=progress, shared=Path(workdir), upstream=upstream)
    for s in RUN_STAGES:
        if s in stage_order(config):
            reports += runner.run(executor, only=s, force=tuple(f for f in force if f == s), retry_failed=retry_failed)
    return folder, reports


def experiment_of(folder: Path) -> ExperimentInfo | None:
    """The experiment a folder holds (None: a plain workdir)."""
    return read_info(Path(folder))


def experiment_runner(folder: Path, log: Callable[[str], None] = print):
    """A ``Runner`` over an experiment's folder as ``run_experiment`` builds it (for ``mirpipe status``):
    the stages before training planned in the workdir it belongs to."""
    from . import workdir as wd
    from .runner import Runner, stage_order

    info = read_info(folder)
    if info is None:
        return None
    parent = Path(info.workdir)
    base, _ = wd.resolve(parent, None, None)
    config, _ = wd.resolve(folder, None, None)
    upstream_runner = Runner(parent, base, log=log, progress=False)
    upstream = {s: upstream_runner.done_items(s) for s in stage_order(base) if s not in RUN_STAGES}
    return Runner(folder, config, log=log, progress=False, shared=parent, upstream=upstream)


def list_experiments(workdir: Path) -> list[dict[str, Any]]:
    """Each experiment of ``workdir``: name, settings, and per task its status and summary scores."""
    from mirpipe.records import TaskScores

    root = Workdir(workdir).experiments
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        info = read_info(folder)
        if info is None:
            continue
        dirs = Workdir(folder, Path(workdir))
        tasks: dict[str, Any] = {}
        for task_dir in sorted((folder / "train").iterdir()) if (folder / "train").is_dir() else []:
            tasks[task_dir.name] = {"status": "trained" if dirs.checkpoint(task_dir.name).exists() else "training"}
        for report in sorted((folder / "reports").iterdir()) if (folder / "reports").is_dir() else []:
            if dirs.scores(report.name).exists():
                s = TaskScores.from_json(json.loads(dirs.scores(report.name).read_text()))
                tasks[report.name] = {
                    "status": "scored",
                    "n_tracks": s.n_tracks,
                    "scores": {c: s.metrics.get(c) for c in s.columns},
                }
        out.append({"name": info.name, "set": info.set, "created": info.created, "path": str(folder), "tasks": tasks})
    return out


# -- paired comparison ----------------------------------------------------------------------------


def paired_bootstrap(diff: ArrayLike, level: float = 0.95, resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (tracks resampled with
    replacement, ``resamples`` times)."""
    d = np.asarray(diff, dtype=float)
    if d.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // d.size)
    for at in range(0, resamples, chunk):
        n = min(chunk, resamples - at)
        means[at : at + n] = d[rng.integers(0, d.size, size=(n, d.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def wilcoxon_p(a: ArrayLike, b: ArrayLike) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired scores (``scipy.stats.wilcoxon``); 1.0 when
    every difference is zero, None with no pair."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.size == 0:
        return None
    if np.all(x == y):
        return 1.0
    return float(wilcoxon(y, x).pvalue)


class CompareError(ConfigurationError):
    """Two runs cannot be compared (their test tracks differ, a task has no scores)."""


def resolve_run(workdir: Path | None, name: str) -> Path:
    """A run to compare: ``base`` (or ``.``) is ``workdir`` itself, a name an experiment of it, else a
    workdir path."""
    if workdir is not None and name in ("base", "."):
        return Path(workdir)
    if workdir is not None and (Workdir(workdir).experiments / name / INFO).exists():
        return Workdir(workdir).experiments / name
    path = Path(name)
    if (path / "reports").is_dir():
        return path
    raise CompareError(f"{name}: neither an experiment of {workdir} nor a workdir with reports/")


def compare_runs(
    runs: dict[str, Path], tasks: Sequence[str] | None = None, resamples: int = 10000, seed: int = 0
) -> list[dict[str, Any]]:
    """Rows of the comparison of two runs ``{label: workdir}`` (the second against the first), per task
    and metric: each run's mean per-track score, the difference, its bootstrap interval and p-value."""
    from mirpipe.records import TaskScores

    (la, a), (lb, b) = runs.items()
    found = [
        {p.parent.name for p in Path(r, "reports").glob("*/scores.json")} if Path(r, "reports").is_dir() else set()
        for r in (a, b)
    ]
    names = sorted(found[0] & found[1]) if tasks is None else list(tasks)
    if not names:
        raise CompareError(f"{la} and {lb} have no scored task in common")
    rows = []
    for task in names:
        sa, sb = (TaskScores.from_json(json.loads(Workdir(r).scores(task).read_text())) for r in (a, b))
        only_a, only_b = sorted(set(sa.tracks) - set(sb.tracks)), sorted(set(sb.tracks) - set(sa.tracks))
        if only_a or only_b:
            raise CompareError(
                f"{task}: the runs scored different test tracks; only in {la}: {', '.join(only_a) or '-'}; "
                f"only in {lb}: {', '.join(only_b) or '-'}"
            )
        tracks = sorted(sa.tracks)
        for metric in sa.columns:
            pairs = [
                (sa.tracks[t].get(metric), sb.tracks[t].get(metric))
                for t in tracks
                if sa.tracks[t].get(metric) is not None and sb.tracks[t].get(metric) is not None
            ]
            x = np.array([p[0] for p in pairs], float)
            y = np.array([p[1] for p in pairs], float)
            lo, hi = paired_bootstrap(y - x, resamples=resamples, seed=seed)
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "n_tracks": len(pairs),
                    la: float(x.mean()) if len(pairs) else None,
                    lb: float(y.mean()) if len(pairs) else None,
                    "diff": float((y - x).mean()) if len(pairs) else None,
                    "ci_low": lo if len(pairs) else None,
                    "ci_high": hi if len(pairs) else None,
                    "p_wilcoxon": wilcoxon_p(x, y),
                }
            )
    return rows


def write_comparison(out: Path, rows: list[dict[str, Any]], runs: dict[str, Path]) -> None:
    """``compare.csv``, ``compare.json`` and ``compare.png`` under ``out``."""
    from mirpipe.storage.atomic import write_bytes

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_bytes(out / "compare.csv", text.getvalue().encode())
    body = {"runs": {k: str(v) for k, v in runs.items()}, "statistic": "mean per-track score; paired", "rows": rows}
    write_bytes(out / "compare.json", json.dumps(body, indent=1).encode())
    plot_comparison(out / "compare.png", rows, list(runs))


def plot_comparison(path: Path, rows: list[dict[str, Any]], labels: Sequence[str]) -> None:
    """``compare.png``: per task and metric the difference (second - first) with its 95% interval."""
    from mirpipe.models.figures import pyplot, save_figure

    shown = [r for r in rows if r["diff"] is not None]
    if not shown:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.2))
    y = np.arange(len(shown))[::-1]
    diff = np.array([r["diff"] for r in shown])
    lo = np.array([r["ci_low"] for r in shown])
    hi = np.array([r["ci_high"] for r in shown])
    ax.errorbar(diff, y, xerr=[diff - lo, hi - diff], fmt="o", color="#1f77b4", capsize=3)
    ax.axvline(0, color="#999", lw=1)
    ax.set_yticks(
        y, [f"{r['task']} {r['metric']}" + (f" (p={r['p_wilcoxon']:.2g})" if r["p_wilcoxon"] is not None else "") for r in shown]
    )
    ax.set_xlabel(f"{labels[1]} - {labels[0]}: mean per-track difference, 95% bootstrap interval")
    save_figure(fig, path)


def format_comparison(rows: list[dict[str, Any]], labels: Sequence[str]) -> list[str]:
    la, lb = labels

    def f(v: float | None, fmt: str = ".3f") -> str:
        return "-" if v is None or not np.isfinite(v) else format(v, fmt)

    width = max(8, len(la), len(lb))
    lines = []
    task = None
    for r in rows:
        if r["task"] != task:
            task = r["task"]
            lines.append(f"\n{task} ({r['n_tracks']} paired test tracks; mean per-track scores, {lb} - {la}):")
            lines.append(f"  {'metric':>12} {la:>{width}} {lb:>{width}} {'diff':>8} {'95% CI':>17} {'p':>7}")
        ci = f"[{f(r['ci_low'], '+.3f')}, {f(r['ci_high'], '+.3f')}]"
        lines.append(
            f"  {r['metric']:>12} {f(r[la]):>{width}} {f(r[lb]):>{width}} {f(r['diff'], '+.3f'):>8} {ci:>17} {f(r['p_wilcoxon'], '.3g'):>7}"
        )
    return lines
