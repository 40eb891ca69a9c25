"""The ``mirpipe`` command line.

Exit codes: 0 every item done; 1 some items failed or were quarantined (the run
itself finished and recorded them); 2 bad configuration, a busy workdir, a
workdir file that cannot be read (a ``ConfigurationError`` or ``WorkdirError``; the
message names the file), or a full disk or quota (``DiskFullError``: the run stopped
starting items and the stages after; free space and run again); 3 an unexpected error, i.e. a bug (one line naming the log
file that holds the traceback: ``<workdir>/logs/`` when there is a workdir, else
``~/.cache/mirpipe/``). Ctrl-C is click's: "Aborted!", exit 1.

Only click is imported at start, so ``--help`` is instant; each command imports
what it uses.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mirpipe import stop
from mirpipe.errors import ConfigurationError
from mirpipe.workdir import Workdir

from .quiet_stdout import stdout_to_stderr

if TYPE_CHECKING:
    from mirpipe.records import TaskScores

    from .config import PipelineBase

DEMO_WORKDIR = Path("work/demo")
DEFAULT_WORKDIR = Path("work/run")  # run and status
EXIT_OK, EXIT_FAILED_ITEMS, EXIT_USAGE, EXIT_UNEXPECTED = 0, 1, 2, 3


class StageChoice(click.Choice):
    """The registered stage names, looked up only when a command line names a stage."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self):
        from mirpipe.stages import run_order

        return run_order()

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns it
        pass

    def get_metavar(self, param, *args, **kwargs) -> str:
        return "STAGE"


def _echo(msg: str, json_mode: bool) -> None:
    click.echo(msg, err=json_mode)


def _status_table(rows, echo=click.echo) -> None:
    """Per stage done / running / pending / failed / quarantined, then one line per failure (file,
    class, message), then what each stage noted (ingest: the corpus scan and its warnings)."""
    echo(f"{'stage':>12} {'total':>6} {'done':>6} {'running':>8} {'pending':>8} {'failed':>7} {'quarantined':>12}")
    for r in rows:
        echo(
            f"{r['stage']:>12} {r['total']:>6} {r['done']:>6} {r['running']:>8} {r['pending']:>8} {r['failed']:>7} {r['quarantined']:>12}"
        )
    for r in rows:
        for f in r["failures"]:
            label = "QUARANTINED" if f.get("kind") == "quarantined" else "FAILED"
            echo(f"  {label} {r['stage']} {f['item']}: {f['error_class']}: {f.get('file') or ''} {f['message']}")
    for r in rows:
        for line in r.get("notes", []):
            echo(f"{r['stage']}: {line}" if not line.startswith(" ") else f"{' ' * len(r['stage'])}  {line.lstrip()}")


def _table(reports, json_mode: bool) -> None:
    _echo(
        f"{'stage':>12} {'total':>6} {'sched':>6} {'skip':>6} {'done':>6} {'failed':>6} {'quarant.':>8} {'seconds':>8}", json_mode
    )
    for r in reports:
        _echo(
            f"{r.stage:>12} {r.total:>6} {r.scheduled:>6} {r.skipped:>6} {r.done:>6} {r.failed:>6} {r.quarantined:>8} {r.seconds:>8.1f}",
            json_mode,
        )
    for r in reports:
        for f in r.failures:
            label = "QUARANTINED" if f.get("kind") == "quarantined" else "FAILED"
            _echo(f"  {label} {r.stage} {f['item']}: {f['error_class']}: {f.get('file') or ''} {f['message']}", json_mode)


def _scores(workdir: Path, pipeline: PipelineBase) -> dict[str, TaskScores]:
    """The evaluate stage's pooled scores per task, where they exist."""
    from mirpipe.records import TaskScores

    out = {}
    for task in pipeline.evaluate.tasks:  # type: ignore[attr-defined]  # dynamic stage section (config_model())
        path = Workdir(workdir).scores(task)
        if path.exists():
            out[task] = TaskScores.from_json(json.loads(path.read_text()))
    return out


def _score_table(scores: dict[str, TaskScores], workdir: Path, json_mode: bool) -> None:
    for task, s in scores.items():
        _echo(f"\n{task} scores ({s.scored_by}; {s.n_tracks} test tracks, {s.seconds:.0f} s):", json_mode)
        rows: list[tuple[str, Mapping[str, Any]]] = [("model", s.metrics)]
        if isinstance(s.baseline, dict):
            rows.append((str(s.baseline.get("name") or "baseline"), s.baseline))
        label = max(len(name) for name, _ in rows) if len(rows) > 1 else 0
        pad = " " * (label + 1) if label else ""
        _echo("  " + pad + " ".join(f"{c:>8}" for c in s.columns), json_mode)
        for name, row in rows:
            head = f"{name:<{label}} " if label else ""
            _echo(
                "  " + head + " ".join(f"{row[c]:>8.3f}" if row.get(c) is not None else f"{'-':>8}" for c in s.columns), json_mode
            )
        for note in s.notes:  # e.g. how far the test set's size lets a score be trusted
            _echo(f"  {note}", json_mode)
        _echo(f"  per track: {Workdir(workdir).scores_csv(task)}; figures: {Workdir(workdir).figures(task)}", json_mode)


def _execute(workdir: Path, pipeline: PipelineBase, cluster, json_mode: bool, **run_kwargs) -> int:
    from . import workdir as wd
    from .cluster import open_executor
    from .runner import Runner, workdir_lock

    runner = Runner(workdir, pipeline, log=lambda m: _echo(m, json_mode))
    t0 = time.perf_counter()
    stop.install_sigterm_handler(lambda m: _echo(m, json_mode))  # a walltime's SIGTERM: save, stop, say how to resume

    with workdir_lock(workdir), stdout_to_stderr(json_mode):
        wd.record(workdir, pipeline, cluster)  # under the lock: a refused second run changes nothing
        with open_executor(cluster, workdir) as executor:
            _echo(f"mirpipe: workdir {workdir.resolve()}", json_mode)
            _echo(f"mirpipe: cluster {executor.description}", json_mode)
            if executor.dashboard_link:
                _echo(f"mirpipe: Dask dashboard {executor.dashboard_link}", json_mode)
            reports = runner.run(executor, **run_kwargs)
        rows = runner.status()
    _table(reports, json_mode)
    _echo("mirpipe: status", json_mode)
    _status_table(rows, lambda m: _echo(m, json_mode))
    scores = _scores(workdir, pipeline) if any(r.stage == "evaluate" for r in reports) else {}
    _score_table(scores, workdir, json_mode)
    stopped = next((r for r in reports if r.stopped is not None), None)
    signalled = stop.requested()
    if stopped is not None:  # a full disk: stderr, whatever the mode (the message says what to do)
        click.echo(f"mirpipe: stopped at {stopped.stage}: {stopped.stopped}", err=True)
    elif signalled:  # SIGTERM: training saved its step; the next run resumes it
        _echo(f"mirpipe: SIGTERM: {stop.RESUME_HINT} (training resumes from its last checkpoint)", json_mode)
    else:
        _echo(f"mirpipe: finished in {time.perf_counter() - t0:.1f}s; workdir {workdir.resolve()}", json_mode)
    if json_mode:
        status_rows = {r["stage"]: r for r in rows}
        click.echo(
            json.dumps(
                {
                    "workdir": str(workdir.resolve()),
                    "stages": {r.stage: r.summary() for r in reports},
                    "status": status_rows,
                    "scores": {task: s.to_json() for task, s in scores.items()},
                    "stopped": {"stage": stopped.stage, "reason": stopped.stopped}
                    if stopped is not None
                    else {"stage": reports[-1].stage if reports else None, "reason": f"SIGTERM: {stop.RESUME_HINT}"}
                    if signalled
                    else None,
                }
            )
        )
    if stopped is not None:
        return EXIT_USAGE  # a full disk: the environment to fix, as a read-only workdir
    return EXIT_FAILED_ITEMS if signalled else _exit_code(rows)


def _exit_code(status_rows) -> int:
    """1 when any item is recorded as failed or quarantined, else 0."""
    return EXIT_FAILED_ITEMS if any(r["failed"] or r["quarantined"] for r in status_rows) else EXIT_OK


def _error_log(exc: BaseException, workdir: object) -> Path:
    """Write ``exc``'s traceback (with the command line and version) to a new log file and return its path:
    ``<workdir>/logs/`` when the command has a workdir that exists, else ``~/.cache/mirpipe/`` (or
    ``$XDG_CACHE_HOME/mirpipe/``), else the temp folder."""
    import os
    import tempfile
    import traceback

    from mirpipe import __version__

    text = f"mirpipe {__version__}: {' '.join(sys.argv)}\n{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__)
    )
    name = f"mirpipe-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mirpipe"
    folders = [Path(workdir) / "logs"] if isinstance(workdir, Path) and workdir.is_dir() else []
    for folder in [*folders, cache, Path(tempfile.gettempdir())]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text)
            return path.resolve()
        except OSError:  # a read-only or full place: try the next one
            continue
    raise exc  # nowhere to write: Python's own traceback is the report


def _guard(fn):
    """Configuration and workdir errors (and a missing path the command line named): one line, exit 2.
    Any other exception is a bug: one line naming the log file that holds its traceback, exit 3.
    click's own exceptions, ``sys.exit`` and Ctrl-C (KeyboardInterrupt: click's "Aborted!") pass through."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from mirpipe.errors import WorkdirError, disk_full_error

        try:
            return fn(*args, **kwargs)
        except (ConfigurationError, WorkdirError, FileNotFoundError) as exc:
            _say(f"mirpipe: error: {exc}")
            sys.exit(EXIT_USAGE)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI's last line: a bug is reported (exit 3), never mislabelled
            workdir = kwargs.get("workdir")
            disk = disk_full_error(exc, [workdir] if isinstance(workdir, Path) else [])
            if disk is not None:  # a full disk under the driver (the lock, the recorded configuration, a log): exit 2
                _say(f"mirpipe: error: {disk}")
                sys.exit(EXIT_USAGE)
            log = _error_log(exc, kwargs.get("workdir"))
            message = (str(exc).splitlines() or [""])[0][:300]
            click.echo(f"mirpipe: unexpected error: {type(exc).__name__}: {message} (traceback in {log})", err=True)
            sys.exit(EXIT_UNEXPECTED)

    return wrapper


def _say(line: str) -> None:
    """One line on stderr; a stderr that cannot be written (a log file on the full disk) is ignored."""
    try:
        click.echo(line, err=True)
    except (OSError, ValueError):
        pass


def _version() -> str:
    from mirpipe import __version__

    return __version__


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Exit codes: 0 every item done; 1 some items failed or were quarantined; "
        "2 bad configuration, busy workdir, unreadable workdir file, or a full disk (free space, run again); "
        "3 an unexpected error (a bug: the message names the log file with the traceback)."
    ),
)
@click.version_option(_version(), prog_name="mirpipe")
def main() -> None:
    """mirpipe: augment audio with its JAMS annotations, compute CQT features into a
    chunked store, train from patches streamed out of it and score with mir_eval;
    on a Dask cluster, resumably."""
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=DEMO_WORKDIR, show_default=True)
@click.option("--tracks", type=int, default=None, help="number of demo band mixtures (default from pipeline.yaml, else 80)")
@click.option("--seed", type=int, default=None, help="corpus seed")
@click.option("--config", type=click.Path(path_type=Path, exists=True), default=None, help="pipeline.yaml to start from")
@click.option("--cluster", type=click.Path(path_type=Path, exists=True), default=None, help="cluster.yaml")
@click.option("--json", "json_mode", is_flag=True, help="end with one JSON object on stdout")
@_guard
def demo(workdir: Path, tracks: int | None, seed: int | None, config: Path | None, cluster: Path | None, json_mode: bool) -> None:
    """Synthesize the demo corpus, then run every stage on it: features, training, evaluation (prints the scores)."""
    from mirpipe.stages import STAGES

    from . import workdir as wd

    pipeline, cluster_cfg = wd.resolve(workdir, config, cluster)
    if "synthesize" not in STAGES:
        raise click.ClickException("the demo synthesizer (mirpipe.demo) is not registered: reinstall mirpipe")
    SynthesizeParams = STAGES.get("synthesize").params
    assert SynthesizeParams is not None  # the synthesize stage has its pipeline.yaml section
    synth = getattr(pipeline, "synthesize", None) or SynthesizeParams()
    updates = {k: v for k, v in {"tracks": tracks, "seed": seed}.items() if v is not None}
    synth = SynthesizeParams.model_validate({**synth.model_dump(), **updates})
    pipeline = pipeline.model_copy(update={"synthesize": synth})
    sys.exit(_execute(workdir, pipeline, cluster_cfg, json_mode))


@main.command()
@click.option(
    "--config", type=click.Path(path_type=Path, exists=True), default=None, help="pipeline.yaml (default: the workdir's record)"
)
@click.option(
    "--cluster", type=click.Path(path_type=Path, exists=True), default=None, help="cluster.yaml (default: the workdir's record)"
)
@click.option("--workdir", type=click.Path(path_type=Path), default=DEFAULT_WORKDIR, show_default=True)
@click.option("--until", type=StageChoice(), default=None, help="run the stages up to and including this one")
@click.option("--only", type=StageChoice(), default=None, help="run this stage alone (its upstream must be done)")
@click.option("--force", type=StageChoice(), multiple=True, help="recompute every item of this stage (repeatable)")
@click.option("--retry-failed", is_flag=True, help="retry the items recorded as failed")
@click.option(
    "--experiment",
    default=None,
    metavar="NAME",
    help="train and evaluate into WORKDIR/experiments/NAME/, reusing the workdir's features (docs/compare.md)",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="with --experiment: a setting of the experiment, e.g. train.max_epochs=20 or train.models.TASK.KEY=VALUE (repeatable)",
)
@click.option("--json", "json_mode", is_flag=True, help="end with one JSON object on stdout")
@_guard
def run(config, cluster, workdir, until, only, force, retry_failed, experiment, sets, json_mode) -> None:
    """Run (or resume) the pipeline in a workdir; only work not yet done is scheduled.

    Exit code 0 when every item is done, 1 when some failed or were quarantined."""
    from . import workdir as wd

    if sets and experiment is None:
        raise ConfigurationError("--set needs --experiment NAME (an experiment's settings; pipeline.yaml holds the workdir's)")
    if experiment is not None:
        if config is not None or until or only:
            raise ConfigurationError("--experiment runs train and evaluate with the workdir's recorded settings and --set")
        _, cluster_cfg = wd.resolve(workdir, None, cluster)
        sys.exit(_execute_experiment(workdir, experiment, sets, cluster_cfg, json_mode, tuple(force), retry_failed))
    from .experiments import experiment_of

    info = experiment_of(workdir)
    if info is not None:
        raise ConfigurationError(
            f"{workdir} is experiment {info.name} of {info.workdir}: run it with "
            f"mirpipe run --workdir {info.workdir} --experiment {info.name}"
        )
    pipeline, cluster_cfg = wd.resolve(workdir, config, cluster)
    sys.exit(
        _execute(workdir, pipeline, cluster_cfg, json_mode, until=until, only=only, force=tuple(force), retry_failed=retry_failed)
    )


def _execute_experiment(workdir: Path, name: str, sets, cluster, json_mode: bool, force, retry_failed: bool) -> int:
    from . import workdir as wd
    from .cluster import open_executor
    from .experiments import run_experiment
    from .runner import workdir_lock

    t0 = time.perf_counter()
    stop.install_sigterm_handler(lambda m: _echo(m, json_mode))
    with workdir_lock(workdir), stdout_to_stderr(json_mode):
        with open_executor(cluster, workdir) as executor:
            _echo(f"mirpipe: experiment {name} of {workdir.resolve()}", json_mode)
            folder, reports = run_experiment(
                workdir, name, sets, cluster, executor, lambda m: _echo(m, json_mode), force=force, retry_failed=retry_failed
            )
    _table(reports, json_mode)
    pipeline, _ = wd.resolve(folder, None, None)
    scores = _scores(folder, pipeline)
    _score_table(scores, folder, json_mode)
    _echo(f"mirpipe: finished in {time.perf_counter() - t0:.1f}s; experiment {folder.resolve()}", json_mode)
    if json_mode:
        click.echo(
            json.dumps(
                {
                    "workdir": str(workdir.resolve()),
                    "experiment": name,
                    "path": str(folder.resolve()),
                    "stages": {r.stage: r.summary() for r in reports},
                    "scores": {task: s.to_json() for task, s in scores.items()},
                }
            )
        )
    if any(r.stopped is not None for r in reports):
        return EXIT_USAGE
    return EXIT_FAILED_ITEMS if any(r.failed or r.quarantined for r in reports) or stop.requested() else EXIT_OK


@main.command()
@click.option(
    "--workdir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=DEFAULT_WORKDIR, show_default=True
)
@click.option("--json", "json_mode", is_flag=True, help="print one JSON object")
@_guard
def experiments(workdir: Path, json_mode: bool) -> None:
    """List a workdir's experiments: their settings and, per task, their status and summary scores."""
    from .experiments import list_experiments

    found = list_experiments(workdir)
    if json_mode:
        click.echo(json.dumps({"workdir": str(workdir.resolve()), "experiments": found}, indent=1))
        return
    if not found:
        click.echo(f"{workdir}: no experiments (mirpipe run --workdir {workdir} --experiment NAME --set KEY=VALUE)")
    for e in found:
        settings = " ".join(f"{k}={json.dumps(v)}" for k, v in e["set"].items()) or "(the workdir's settings)"
        click.echo(f"{e['name']}: {settings}")
        for task, t in e["tasks"].items():
            shown = " ".join(f"{m} {v:.3f}" for m, v in (t.get("scores") or {}).items() if v is not None)
            click.echo(f"  {task}: {t['status']}" + (f" ({t['n_tracks']} test tracks) {shown}" if "scores" in t else ""))


@main.command()
@click.option(
    "--workdir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=DEFAULT_WORKDIR, show_default=True
)
@_guard
def report(workdir: Path) -> None:
    """Write WORKDIR/reports/index.html: per task the scores (baseline, intervals), robustness, training
    curves, confusion matrix and per-track scores with figures; the experiments and their comparisons.
    A static page: open it from disk. evaluate writes it too."""
    from .report import write_report

    click.echo(f"wrote {write_report(workdir)}")


@main.command()
@click.argument("runs", nargs=2)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=DEFAULT_WORKDIR,
    show_default=True,
    help="whose experiments RUNS name (base: the workdir itself); a RUN may also be a workdir path",
)
@click.option("--tasks", default=None, help="comma-separated tasks (default: every task both runs scored)")
@click.option("--resamples", type=int, default=10000, show_default=True, help="bootstrap resamples")
@click.option("--seed", type=int, default=0, show_default=True, help="bootstrap seed")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="where compare.csv, compare.json and compare.png go (default: WORKDIR/experiments/compare/A-vs-B)",
)
@click.option("--json", "json_mode", is_flag=True, help="print one JSON object")
@_guard
def compare(runs, workdir: Path, tasks: str | None, resamples: int, seed: int, out: Path | None, json_mode: bool) -> None:
    """Compare two runs on their test tracks, paired by track id: per task and metric each run's mean
    per-track score, the difference (second - first), a paired bootstrap 95% interval and the Wilcoxon
    signed-rank p-value. Refuses runs whose test tracks differ, naming them."""
    from .experiments import CompareError, compare_runs, format_comparison, resolve_run, write_comparison

    a, b = runs
    if a == b:
        raise CompareError(f"compare {a} with another run")
    paths = {a: resolve_run(workdir, a), b: resolve_run(workdir, b)}
    rows = compare_runs(paths, _task_list(tasks), resamples=resamples, seed=seed)
    safe = "-vs-".join(Path(r).name if r not in ("base", ".") else "base" for r in runs)
    out = out or Workdir(workdir).experiments / "compare" / safe
    write_comparison(out, rows, paths)
    if (workdir / "reports").is_dir():
        from .report import write_report

        write_report(workdir)  # the page shows the comparison
    if json_mode:
        click.echo(json.dumps({"runs": {k: str(v) for k, v in paths.items()}, "rows": rows, "out": str(out)}, indent=1))
        return
    for line in format_comparison(rows, runs):
        click.echo(line)
    click.echo(f"\nwrote {out / 'compare.csv'}, compare.json and compare.png")


@main.command()
@click.option(
    "--workdir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=DEFAULT_WORKDIR, show_default=True
)
@click.option("--json", "json_mode", is_flag=True, help="print one JSON object")
@_guard
def status(workdir: Path, json_mode: bool) -> None:
    """Per stage: items done / running / pending / failed / quarantined, each failure's item, file, class
    and message, and what ingest noted (files left out of the corpus, warnings). Says so when a run
    holds the workdir (pid, host, since when).

    Exit code 0 when nothing failed, 1 when some items failed or were quarantined."""
    from . import workdir as wd
    from .config import ConfigError
    from .runner import Runner, active_run

    if wd.recorded(workdir) is None:
        raise ConfigError(f"{workdir}: no {wd.RECORD} here; not a mirpipe workdir")
    pipeline, _ = wd.resolve(workdir, None, None)
    holder = active_run(workdir)
    from .experiments import experiment_runner

    with stdout_to_stderr(json_mode):
        runner = experiment_runner(workdir) or Runner(workdir, pipeline, progress=False)
        rows = runner.status()
    if json_mode:
        click.echo(
            json.dumps(
                {"workdir": str(workdir.resolve()), "active_run": holder, "stages": {r["stage"]: r for r in rows}}, indent=1
            )
        )
    else:
        if holder is not None:
            click.echo(
                f"mirpipe: a run holds this workdir (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"since {holder.get('since', '?')}); items it has started show as running"
            )
        _status_table(rows)
    sys.exit(_exit_code(rows))


@main.command()
@click.option(
    "--workdir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=DEFAULT_WORKDIR, show_default=True
)
@click.option("--repair", is_flag=True, help="return damaged items to pending, so the next run recomputes them")
@click.option("--json", "json_mode", is_flag=True, help="print one JSON object")
@_guard
def verify(workdir: Path, repair: bool, json_mode: bool) -> None:
    """Open every done item's outputs and check their contents (planning only compares sizes and
    modification times). Lists the damaged items, each with what is wrong (the file, and the array
    and chunk that does not read back); --repair makes them pending.

    Exit code 0 when nothing is damaged (or everything damaged was repaired), 1 otherwise."""
    from . import workdir as wd
    from .config import ConfigError
    from .runner import Runner, workdir_lock

    if wd.recorded(workdir) is None:
        raise ConfigError(f"{workdir}: no {wd.RECORD} here; not a mirpipe workdir")
    pipeline, _ = wd.resolve(workdir, None, None)
    with workdir_lock(workdir), stdout_to_stderr(json_mode):  # no run may write while outputs are checked
        damaged = Runner(workdir, pipeline, progress=False).verify(repair=repair)
    if json_mode:
        click.echo(json.dumps({"workdir": str(workdir.resolve()), "damaged": damaged, "repaired": repair}))
    else:
        for d in damaged:
            click.echo(f"  DAMAGED {d['stage']} {d['item']}" + (" (now pending)" if repair else "") + f": {d['reason']}")
        click.echo(
            f"mirpipe: {len(damaged)} damaged item(s)"
            + (
                f"; run `mirpipe run --workdir {workdir}` to recompute them"
                if damaged and repair
                else "; `mirpipe verify --repair` makes them pending"
                if damaged
                else ""
            )
        )
    sys.exit(EXIT_OK if not damaged or repair else EXIT_FAILED_ITEMS)


@main.group()
def cluster() -> None:
    """Inspect the cluster configuration (nothing is submitted)."""


def _cluster_cfg(cluster_file: Path | None, workdir: Path | None):
    from . import workdir as wd

    return wd.resolve(workdir or DEFAULT_WORKDIR, None, cluster_file)[1]


@cluster.command("show")
@click.option(
    "--cluster",
    "cluster_file",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="cluster.yaml (default: ./cluster.yaml)",
)
@click.option("--workdir", type=click.Path(path_type=Path), default=None, help="use this workdir's recorded cluster")
@click.option("--json", "json_mode", is_flag=True, help="print one JSON object")
@_guard
def cluster_show(cluster_file: Path | None, workdir: Path | None, json_mode: bool) -> None:
    """Print the resolved, validated cluster settings (with derived worker lifetime and job arguments)."""
    from .cluster import jobqueue_kwargs
    from .config import DEFAULT_POOL, JobqueueCluster, PooledCluster, dump

    def shown(cfg, pool: str) -> dict[str, Any]:
        out = dump(cfg)
        out = {"type": out.pop("type"), **out}
        if isinstance(cfg, JobqueueCluster):
            life, stagger = cfg.lifetime_seconds()
            kwargs = jobqueue_kwargs(cfg, workdir, pool)
            out["derived"] = {"lifetime_s": life, "lifetime_stagger_s": stagger, "jobqueue_kwargs": kwargs}
        return out

    cfg = _cluster_cfg(cluster_file, workdir)
    if isinstance(cfg, PooledCluster):  # each pool, and which stages it runs
        doc: dict[str, Any] = {"cluster": shown(cfg.cluster, DEFAULT_POOL)}
        doc["pools"] = {name: shown(cfg.pool(name), name) for name in cfg.pools}
        doc["stages"] = dict(cfg.stages)
    else:
        doc = {"cluster": shown(cfg, DEFAULT_POOL)}
    if json_mode:
        click.echo(json.dumps(doc if isinstance(cfg, PooledCluster) else doc["cluster"], indent=1))
        return
    import yaml

    click.echo(yaml.safe_dump(doc, sort_keys=False).rstrip())


@cluster.command("job-script")
@click.option(
    "--cluster",
    "cluster_file",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="cluster.yaml (default: ./cluster.yaml)",
)
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=None, help="use this workdir's recorded cluster (and its logs/jobs)"
)
@click.option("--pool", default=None, help="the pool whose job script to print (cluster.yaml pools:); default: the default pool")
@_guard
def cluster_job_script(cluster_file: Path | None, workdir: Path | None, pool: str | None) -> None:
    """Print the batch script dask-jobqueue would submit for one worker job (of one pool)."""
    from .cluster import job_script
    from .config import DEFAULT_POOL, ConfigError, JobqueueCluster, PooledCluster

    loaded = _cluster_cfg(cluster_file, workdir)
    names = loaded.names() if isinstance(loaded, PooledCluster) else [DEFAULT_POOL]
    name = pool or DEFAULT_POOL
    if name not in names:
        raise ConfigError(f"--pool {name}: no such pool (pools are {', '.join(names)})")
    cfg = loaded.pool(name) if isinstance(loaded, PooledCluster) else loaded
    if not isinstance(cfg, JobqueueCluster):
        what = f"pool {name!r}: " if isinstance(loaded, PooledCluster) else ""
        raise ConfigError(f"{what}cluster type {cfg.type!r} submits no batch jobs (job-script needs slurm, pbs, sge or lsf)")
    click.echo(job_script(cfg, workdir, name))


@main.command()
def stages() -> None:
    """List the registered stages in run order, with what each needs."""
    from mirpipe.stages import STAGES, run_order

    for name in run_order():
        stage = STAGES.get(name)
        needs = f" (needs {', '.join(stage.needs)})" if stage.needs else ""
        click.echo(f"{name}{needs}{' [optional]' if stage.optional else ''}")


@main.command()
def tasks() -> None:
    """List the registered tasks: the JAMS namespace each reads and whether it trains."""
    from mirpipe.models.task import TASKS

    for task in TASKS.values():
        click.echo(f"{task.name:12} {task.namespace:14} {'trainable' if task.trainable else 'targets only'}")


# -- predict and export: a trained model on new recordings (mirpipe.pipeline.predict) -------------


def _task_list(tasks: str | None) -> list[str] | None:
    return [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="a model file (mirpipe export) or a trained workdir",
)
@click.option("--tasks", default=None, help="comma-separated tasks to predict (default: every task of the model)")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="folder of the JAMS outputs")
@click.option(
    "--cluster",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="cluster.yaml (default: the workdir's record, else ./cluster.yaml, else a LocalCluster)",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda")
@click.option("--force", is_flag=True, help="predict again even where an output for this model and input exists")
@click.option("--json", "json_mode", is_flag=True, help="end with one JSON object on stdout (per file: output and summary)")
@_guard
def predict(
    inputs, model: Path, tasks: str | None, out: Path, cluster: Path | None, device: str, force: bool, json_mode: bool
) -> None:
    """Apply a trained model to recordings: one JAMS per input (AUDIO files or folders of them, searched
    recursively) in --out, one annotation per task, decoded as evaluate decodes. One Dask task per file on
    the configured cluster; an output already written for the same input and model is skipped.

    Exit code 0 when every file is done, 1 when some failed (each named with its file and reason)."""
    from mirpipe.models.task import TASKS

    from . import workdir as wd
    from .cluster import open_executor
    from .predict import ADMIN, resolve_model, run_predict

    wanted = _task_list(tasks)
    for name in wanted or ():
        TASKS.check(name)
    with stdout_to_stderr(json_mode):
        bundle_path, bundle = resolve_model(
            model, out, wanted if model.is_dir() else None, warn=lambda m: click.echo(f"mirpipe: warning: {m}", err=True)
        )
        missing = [t for t in wanted or () if t not in bundle.tasks]
        if missing:
            raise ConfigurationError(f"{model}: the model has no {', '.join(missing)} (it holds {', '.join(bundle.tasks)})")
        chosen = wanted or list(bundle.tasks)
        cluster_cfg = wd.resolve(model if model.is_dir() else out, None, cluster)[1]
        _echo(
            f"mirpipe: model {bundle.name} ({bundle.identity}; tasks {', '.join(chosen)}; "
            f"training fingerprint {bundle.fingerprint})",
            json_mode,
        )

        def show(r) -> None:
            if r["status"] == "failed":
                _echo(f"  FAILED {r['input']}: {r['error_class']}: {r['message']}", json_mode)
            else:
                _echo(f"  {r['status']:7} {r['output']}: {r['summary']}", json_mode)

        with open_executor(cluster_cfg, out / ADMIN) as executor:  # batch job logs, TLS files: <out>/.mirpipe
            _echo(f"mirpipe: cluster {executor.description}", json_mode)
            report = run_predict(inputs, bundle_path, bundle, out, chosen, executor, device=device, force=force, progress=show)
    counts = report.counts()
    _echo("mirpipe: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f"; outputs in {out}", json_mode)
    if json_mode:
        click.echo(
            json.dumps(
                {
                    "model": {
                        "name": bundle.name,
                        "identity": bundle.identity,
                        "tasks": chosen,
                        "training_fingerprint": bundle.fingerprint,
                    },
                    "out": str(out),
                    "counts": counts,
                    "files": report.results,
                }
            )
        )
    sys.exit(EXIT_FAILED_ITEMS if report.failed else EXIT_OK)


@main.command()
@click.option("--workdir", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="NAME.mirpipe")
@click.option("--tasks", default=None, help="comma-separated tasks (default: every trained task)")
@click.option("--json", "json_mode", is_flag=True, help="print one JSON object")
@_guard
def export(workdir: Path, out: Path, tasks: str | None, json_mode: bool) -> None:
    """Bundle a workdir's trained models into one file for `mirpipe predict --model`: weights, feature
    settings, vocabularies and decoding state (transition prior, tuned threshold), library versions and
    the training fingerprint. A task whose training has not finished (still running, or stopped mid-way)
    is refused, naming its checkpoint."""
    from mirpipe.models.bundle import SUFFIX

    from .predict import export as export_bundle

    if out.suffix != SUFFIX:
        raise ConfigurationError(f"--out {out}: a model file is named NAME{SUFFIX}")
    with stdout_to_stderr(json_mode):
        bundle = export_bundle(workdir, out, _task_list(tasks))
    info: dict[str, Any] = {
        "out": str(out),
        "name": bundle.name,
        "identity": bundle.identity,
        "tasks": sorted(bundle.tasks),
        "training_fingerprint": bundle.fingerprint,
        "bytes": out.stat().st_size,
        "versions": bundle.versions,
    }
    if json_mode:
        click.echo(json.dumps(info))
    else:
        click.echo(
            f"mirpipe: exported {', '.join(info['tasks'])} to {out} ({info['bytes'] / 1e6:.1f} MB; "
            f"identity {bundle.identity}; training fingerprint {bundle.fingerprint})"
        )


# -- import: datasets researchers already have (mirpipe.importers) ---------------------------------


@main.group("import")
def import_group() -> None:
    """Turn a dataset you already have into a corpus: each track's audio is linked in place
    (a symlink, nothing copied) and its annotations become a strictly valid JAMS beside
    the link. Exit code 1 when some track failed (each named with its file and reason)."""


def _run_import(name: str, root: Path, out: Path, json_mode: bool, checksums: bool = False, **options) -> None:
    from tqdm import tqdm

    from mirpipe.importers import IMPORTERS
    from mirpipe.importers.write import import_listing

    importer = IMPORTERS.get(name)
    with stdout_to_stderr(json_mode):
        listing = importer.list_tracks(root, **options)
        with tqdm(
            total=len(listing.tracks), desc="import", unit="track", file=sys.stderr, disable=not sys.stderr.isatty()
        ) as bar:
            report = import_listing(listing, out, name, checksums=checksums, progress=bar.update)
    for line in report.lines():
        _echo(line, json_mode)
    if json_mode:
        click.echo(json.dumps(report.to_json()))
    sys.exit(EXIT_FAILED_ITEMS if report.failed else EXIT_OK)


@import_group.command("mirdata")
@click.argument("name")
@click.option(
    "--data-home",
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="the dataset's folder, in its mirdata loader's layout",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="the corpus folder to write (links + JAMS)")
@click.option(
    "--index",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="a mirdata index JSON (default: mirdata's own if fetched, else one in --data-home, else built from the files)",
)
@click.option("--dataset-version", default="default", show_default=True, help="the mirdata index version")
@click.option("--checksums", is_flag=True, help="compare every file's md5 with the index (slow: reads all the audio)")
@click.option("--json", "json_mode", is_flag=True, help="end with one JSON object on stdout")
@_guard
def import_mirdata(
    name: str, data_home: Path, out: Path, index: Path | None, dataset_version: str, checksums: bool, json_mode: bool
) -> None:
    """Import the mirdata dataset NAME found under --data-home (nothing is downloaded).
    NAME: see `mirpipe import list`."""
    from mirpipe.importers import IMPORTERS

    if name in IMPORTERS and IMPORTERS.get(name).kind != "mirdata":
        raise ConfigurationError(f"{name!r} is not a mirdata importer (see `mirpipe import list`)")
    _run_import(name, data_home, out, json_mode, checksums=checksums, index=index, version=dataset_version)


@import_group.command("folder")
@click.argument("source", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="the corpus folder to write (links + JAMS)")
@click.option("--json", "json_mode", is_flag=True, help="end with one JSON object on stdout")
@_guard
def import_folder(source: Path, out: Path, json_mode: bool) -> None:
    """Import a folder of audio files with annotation files of the same name beside them
    (.lab, .csv, .jams: see `mirpipe import list`); subfolders are kept."""
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise ConfigurationError(f"--out {out} and {source} must not contain one another")
    _run_import("folder", source, out, json_mode)


@import_group.command("list")
def import_list() -> None:
    """List the importers: the name, the command that reaches it, what it reads."""
    from mirpipe.importers import IMPORTERS

    for importer in IMPORTERS.values():
        click.echo(f"{importer.name:16} {('import ' + importer.kind):15} {importer.summary}")


if __name__ == "__main__":
    main()
