"""The ``mirpipe`` command line."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import click

from .config import ConfigError, PipelineConfig
from .runner import Runner, WorkdirBusyError, stage_order
from . import workdir as wd

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

DEMO_WORKDIR = Path("work/demo")


def _echo(msg: str, json_mode: bool) -> None:
    click.echo(msg, err=json_mode)


def _status_table(rows, echo=click.echo) -> None:
    """Per stage done / pending / failed / quarantined, then one line per failure (file, class, message)."""
    echo(f"{'stage':>12} {'total':>6} {'done':>6} {'pending':>8} {'failed':>7} {'quarantined':>12}")
    for r in rows:
        echo(f"{r['stage']:>12} {r['total']:>6} {r['done']:>6} {r['pending']:>8} {r['failed']:>7} {r['quarantined']:>12}")
    for r in rows:
        for f in r["failures"]:
            label = "QUARANTINED" if f.get("kind") == "quarantined" else "FAILED"
            echo(f"  {label} {r['stage']} {f['item']}: {f['error_class']}: {f.get('file') or ''} {f['message']}")


def _table(reports, json_mode: bool) -> None:
    _echo(f"{'stage':>12} {'total':>6} {'sched':>6} {'skip':>6} {'done':>6} {'failed':>6} {'quarant.':>8} {'seconds':>8}", json_mode)
    for r in reports:
        _echo(f"{r.stage:>12} {r.total:>6} {r.scheduled:>6} {r.skipped:>6} {r.done:>6} {r.failed:>6} {r.quarantined:>8} {r.seconds:>8.1f}", json_mode)
    for r in reports:
        for f in r.failures:
            label = "QUARANTINED" if f.get("kind") == "quarantined" else "FAILED"
            _echo(f"  {label} {r.stage} {f['item']}: {f['error_class']}: {f.get('file') or ''} {f['message']}", json_mode)


SCORE_COLUMNS = ("root", "majmin", "mirex", "thirds", "triads", "sevenths", "tetrads", "seg")


def _scores(workdir: Path, pipeline: PipelineConfig) -> dict[str, dict]:
    """The evaluate stage's duration-weighted totals per task, where they exist."""
    out = {}
    for task in pipeline.evaluate.tasks:
        path = workdir / "reports" / task / "scores.json"
        if path.exists():
            out[task] = json.loads(path.read_text())
    return out


def _score_table(scores: dict[str, dict], workdir: Path, json_mode: bool) -> None:
    for task, s in scores.items():
        _echo(f"\n{task} scores (mir_eval, duration-weighted over {s['n_tracks']} test tracks, {s['seconds']:.0f} s):", json_mode)
        _echo("  " + " ".join(f"{c:>8}" for c in SCORE_COLUMNS), json_mode)
        _echo("  " + " ".join(f"{s[c]:>8.3f}" if s.get(c) is not None else f"{'-':>8}" for c in SCORE_COLUMNS), json_mode)
        _echo(f"  per track: {workdir / 'reports' / task / 'scores.csv'}; figures: {workdir / 'reports' / task / 'figures'}", json_mode)


def _execute(workdir: Path, pipeline: PipelineConfig, cluster, json_mode: bool, **run_kwargs) -> int:
    from .cluster import open_executor

    runner = Runner(workdir, pipeline, log=lambda m: _echo(m, json_mode))
    t0 = time.perf_counter()
    from .runner import workdir_lock

    with workdir_lock(workdir):
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
    _echo(f"mirpipe: finished in {time.perf_counter() - t0:.1f}s; workdir {workdir.resolve()}", json_mode)
    if json_mode:
        status_rows = {r["stage"]: r for r in rows}
        click.echo(json.dumps({"workdir": str(workdir.resolve()), "stages": {r.stage: r.summary() for r in reports}, "status": status_rows, "scores": scores}))
    return 0


def _guard(fn):
    """Turn configuration and workdir errors into a one-line message and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, WorkdirBusyError, FileNotFoundError, ValueError) as exc:
            click.echo(f"mirpipe: error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mirpipe: augment audio with its JAMS annotations, compute CQT features into a
    chunked store, train from patches streamed out of it and score with mir_eval;
    on a Dask cluster, resumably."""


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=DEMO_WORKDIR, show_default=True)
@click.option("--tracks", type=int, default=None, help="number of demo tracks (default from pipeline.yaml, else 24)")
@click.option("--seed", type=int, default=None, help="corpus seed")
@click.option("--config", type=click.Path(path_type=Path, exists=True), default=None, help="pipeline.yaml to start from")
@click.option("--cluster", type=click.Path(path_type=Path, exists=True), default=None, help="cluster.yaml")
@click.option("--json", "json_mode", is_flag=True, help="end with one JSON object on stdout")
@_guard
def demo(workdir: Path, tracks: int | None, seed: int | None, config: Path | None, cluster: Path | None, json_mode: bool) -> None:
    """Synthesize the demo corpus, then run every stage on it: features, training, evaluation (prints the scores)."""
    from mirpipe.stages import SynthesizeParams

    pipeline, cluster_cfg = wd.resolve(workdir, config, cluster)
    synth = pipeline.synthesize or SynthesizeParams()
    updates = {k: v for k, v in {"tracks": tracks, "seed": seed}.items() if v is not None}
    synth = SynthesizeParams.model_validate({**synth.model_dump(), **updates})
    pipeline = pipeline.model_copy(update={"synthesize": synth})
    sys.exit(_execute(workdir, pipeline, cluster_cfg, json_mode))


@main.command()
@click.option("--config", type=click.Path(path_type=Path, exists=True), default=None, help="pipeline.yaml (default: the workdir's record)")
@click.option("--cluster", type=click.Path(path_type=Path, exists=True), default=None, help="cluster.yaml (default: the workdir's record)")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("work/run"), show_default=True)
@click.option("--until", default=None, help="run the stages up to and including this one")
@click.option("--only", default=None, help="run this stage alone (its upstream must be done)")
@click.option("--force", multiple=True, help="recompute every item of this stage (repeatable)")
@click.option("--retry-failed", is_flag=True, help="retry the items recorded as failed")
@click.option("--json", "json_mode", is_flag=True, help="end with one JSON object on stdout")
@_guard
def run(config, cluster, workdir, until, only, force, retry_failed, json_mode) -> None:
    """Run (or resume) the pipeline in a workdir; only work not yet done is scheduled."""
    pipeline, cluster_cfg = wd.resolve(workdir, config, cluster)
    sys.exit(_execute(workdir, pipeline, cluster_cfg, json_mode, until=until, only=only, force=tuple(force), retry_failed=retry_failed))


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=DEMO_WORKDIR, show_default=True)
@click.option("--json", "json_mode", is_flag=True, help="print one JSON object")
@_guard
def status(workdir: Path, json_mode: bool) -> None:
    """Per stage: items done / pending / failed / quarantined, and each failure's item, file, class and message."""
    if wd.recorded(workdir) is None:
        raise ConfigError(f"{workdir}: no {wd.RECORD} here; not a mirpipe workdir")
    pipeline, _ = wd.resolve(workdir, None, None)
    rows = Runner(workdir, pipeline, progress=False).status()
    if json_mode:
        click.echo(json.dumps({"workdir": str(workdir.resolve()), "stages": {r["stage"]: r for r in rows}}, indent=1))
        return
    _status_table(rows)


@main.group()
def cluster() -> None:
    """Inspect the cluster configuration (nothing is submitted)."""


def _cluster_cfg(cluster_file: Path | None, workdir: Path | None):
    return wd.resolve(workdir or Path("work/run"), None, cluster_file)[1]


@cluster.command("show")
@click.option("--cluster", "cluster_file", type=click.Path(path_type=Path, exists=True), default=None, help="cluster.yaml (default: ./cluster.yaml)")
@click.option("--workdir", type=click.Path(path_type=Path), default=None, help="use this workdir's recorded cluster")
@click.option("--json", "json_mode", is_flag=True, help="print one JSON object")
@_guard
def cluster_show(cluster_file: Path | None, workdir: Path | None, json_mode: bool) -> None:
    """Print the resolved, validated cluster settings (with derived worker lifetime and job arguments)."""
    from .cluster import jobqueue_kwargs
    from .config import JobqueueCluster, dump

    cfg = _cluster_cfg(cluster_file, workdir)
    out = dump(cfg)
    out = {"type": out.pop("type"), **out}
    if isinstance(cfg, JobqueueCluster):
        life, stagger = cfg.lifetime_seconds()
        out["derived"] = {"lifetime_s": life, "lifetime_stagger_s": stagger, "jobqueue_kwargs": jobqueue_kwargs(cfg, workdir)}
    if json_mode:
        click.echo(json.dumps(out, indent=1))
        return
    import yaml

    click.echo(yaml.safe_dump({"cluster": out}, sort_keys=False).rstrip())


@cluster.command("job-script")
@click.option("--cluster", "cluster_file", type=click.Path(path_type=Path, exists=True), default=None, help="cluster.yaml (default: ./cluster.yaml)")
@click.option("--workdir", type=click.Path(path_type=Path), default=None, help="use this workdir's recorded cluster (and its logs/jobs)")
@_guard
def cluster_job_script(cluster_file: Path | None, workdir: Path | None) -> None:
    """Print the batch script dask-jobqueue would submit for one worker job."""
    from .cluster import job_script
    from .config import JobqueueCluster

    cfg = _cluster_cfg(cluster_file, workdir)
    if not isinstance(cfg, JobqueueCluster):
        raise ConfigError(f"cluster type {cfg.type!r} submits no batch jobs (job-script needs slurm, pbs, sge or lsf)")
    click.echo(job_script(cfg, workdir))


@main.command()
def stages() -> None:
    """List the stages in run order."""
    for name in stage_order(PipelineConfig(synthesize={})):
        click.echo(name)


if __name__ == "__main__":
    main()
