"""Experiments on one store (``mirpipe run --experiment``) and paired comparisons (``mirpipe compare``)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from mirpipe.pipeline.cli import main
from mirpipe.pipeline.experiments import CompareError, compare_runs, paired_bootstrap, wilcoxon_p
from mirpipe.records import TaskScores
from mirpipe.workdir import Workdir


def constructed(seed: int = 1, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.4, 0.8, n)
    return a, np.clip(a + rng.normal(0.03, 0.05, n), 0, 1)


def test_bootstrap_and_wilcoxon_agree_with_scipy():
    a, b = constructed()
    lo, hi = paired_bootstrap(b - a, resamples=20000, seed=0)
    ref = scipy.stats.bootstrap(
        (b - a,), np.mean, confidence_level=0.95, n_resamples=20000, method="percentile", random_state=0
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=3e-3) and hi == pytest.approx(ref.high, abs=3e-3)
    assert lo < (b - a).mean() < hi
    assert wilcoxon_p(a, b) == pytest.approx(scipy.stats.wilcoxon(b, a).pvalue, rel=1e-12)
    assert paired_bootstrap(np.full(10, 0.25)) == (pytest.approx(0.25), pytest.approx(0.25))
    assert wilcoxon_p(a, a) == 1.0 and wilcoxon_p([], []) is None


def _scores(root, tracks: dict[str, float]) -> None:
    path = Workdir(root).scores("chord")
    path.parent.mkdir(parents=True)
    s = TaskScores(
        metrics={"majmin": float(np.mean(list(tracks.values())))},
        columns=["majmin"],
        n_tracks=len(tracks),
        seconds=10.0 * len(tracks),
        tracks={t: {"majmin": v} for t, v in tracks.items()},
    )
    path.write_text(json.dumps(s.to_json()))


def test_compare_pairs_tracks_by_id_and_refuses_other_test_tracks(tmp_path):
    a, b = constructed(n=12)
    ids = [f"t{i:02d}" for i in range(12)]
    _scores(tmp_path / "A", dict(zip(ids, a)))
    _scores(tmp_path / "B", dict(zip(reversed(ids), reversed(b))))  # another order: paired by id
    (row,) = compare_runs({"A": tmp_path / "A", "B": tmp_path / "B"})
    assert row["n_tracks"] == 12 and row["diff"] == pytest.approx((b - a).mean())
    assert row["p_wilcoxon"] == pytest.approx(scipy.stats.wilcoxon(b, a).pvalue)
    _scores(tmp_path / "C", dict(zip(ids[:-1] + ["other"], b)))
    with pytest.raises(CompareError, match="only in A: t11; only in C: other"):
        compare_runs({"A": tmp_path / "A", "C": tmp_path / "C"})
    res = CliRunner().invoke(main, ["compare", str(tmp_path / "A"), str(tmp_path / "B"), "--workdir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    written = tmp_path / "experiments" / "compare" / "A-vs-B"
    assert "majmin" in res.output and all((written / f"compare.{x}").exists() for x in ("csv", "json", "png"))
    res = CliRunner().invoke(main, ["compare", str(tmp_path / "A"), str(tmp_path / "C"), "--workdir", str(tmp_path)])
    assert res.exit_code == 2 and "only in" in res.output


def _digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_an_experiment_trains_and_evaluates_on_the_workdirs_features(evaluated_workdir):
    root = evaluated_workdir
    ledger, store = _digest(root / "ledger" / "features"), _digest(root / "features")
    assert ledger and store
    res = CliRunner().invoke(
        main, ["run", "--workdir", str(root), "--experiment", "wide", "--set", "train.models.chord.hidden=12", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["stages"]["features"]["scheduled"] == 0 and out["stages"]["train"]["done"] == 1
    assert _digest(root / "ledger" / "features") == ledger and _digest(root / "features") == store  # nothing recomputed
    exp = Workdir(root).experiment("wide")
    assert exp.checkpoint("chord").exists() and exp.scores("chord").exists() and not (exp.root / "features").exists()
    assert not (exp.ledger / "features").exists()

    listed = json.loads(CliRunner().invoke(main, ["experiments", "--workdir", str(root), "--json"]).stdout)
    (e,) = listed["experiments"]
    assert e["name"] == "wide" and e["set"] == {"train.models.chord.hidden": 12} and e["tasks"]["chord"]["status"] == "scored"

    res = CliRunner().invoke(main, ["compare", "base", "wide", "--workdir", str(root), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["rows"]
    page = (root / "reports" / "index.html").read_text()  # evaluate wrote it; compare rewrote it with the comparison
    assert "wide against base" in page and "train.models.chord.hidden=12" in page and "loss per epoch" in page
    assert {r["task"] for r in rows} == {"chord"} and any(r["metric"] == "majmin" for r in rows)
    assert all(r["p_wilcoxon"] is None or 0 <= r["p_wilcoxon"] <= 1 for r in rows)

    status = json.loads(CliRunner().invoke(main, ["status", "--workdir", str(exp.root), "--json"]).stdout)
    assert set(status["stages"]) == {"train", "evaluate"} and status["stages"]["evaluate"]["pending"] == 0
    res = CliRunner().invoke(main, ["run", "--workdir", str(exp.root)])  # not a workdir of its own: says how to run it
    assert res.exit_code == 2 and "--experiment wide" in res.output
    res = CliRunner().invoke(main, ["run", "--workdir", str(root), "--experiment", "other", "--set", "synthesize.seed=5"])
    assert res.exit_code == 2 and "changes what the synthesize stage computes" in res.output


def test_an_experiment_may_draw_fewer_shifts_but_not_what_the_store_lacks():
    from conftest import small_config

    from mirpipe.errors import ConfigurationError
    from mirpipe.pipeline.experiments import experiment_config

    base = small_config(tracks=2, shifts=[-2, 0, 3])
    assert experiment_config(base, {"augment.enabled": False}, "none").augment.active_shifts() == [0]
    assert experiment_config(base, {"augment.shifts": [-3, 0, 1]}, "sym").augment.active_shifts() == [-3, 0, 1]
    assert experiment_config(base, {"train.models.chord.architecture": "cr1"}, "cr1").train.models["chord"].architecture == "cr1"
    with pytest.raises(ConfigurationError, match=r"cannot serve shifts \[5\]"):
        experiment_config(base, {"augment.shifts": [0, 5]}, "far")
    with pytest.raises(ConfigurationError, match="augment.mode"):
        experiment_config(base, {"augment.mode": "audio"}, "audio")
    with pytest.raises(ConfigurationError, match="features stage"):
        experiment_config(base, {"features.sr": 16000}, "sr")
