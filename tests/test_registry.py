"""Extension points: a task defined here, registered, trained and scored through the
pipeline with no other file changed; registries validate names; run order from ``needs``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import small_config

from mirpipe.models.task import TASKS, Decoder, Network, Scorer, Targets, Task, annotations
from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import ConfigError, parse_pipeline
from mirpipe.registry import Registry, UnknownNameError
from mirpipe.stages import STAGES, run_order


class VoicingTargets(Targets):
    namespace = "pitch_contour"
    arrays = ("targets/toy_voiced",)

    def encode(self, jam, frame_times):
        from mirpipe.models.pitch import encode

        return {"toy_voiced": (encode(jam, frame_times)["f0_hz"] > 0).astype(np.int8)}


class VoicingNetwork(Network):
    metric_name = "frame_accuracy"

    def build(self, n_bins, params):
        import torch

        return torch.nn.Linear(n_bins, 1)

    def loss(self, outputs, batch):
        import torch.nn.functional as F

        total = F.binary_cross_entropy_with_logits(outputs[..., 0], batch["targets/toy_voiced"].float())
        return total, {"bce": float(total.detach())}

    def metric(self, outputs, batch):
        correct = ((outputs[..., 0] > 0) == (batch["targets/toy_voiced"] > 0)).sum()
        return float(correct), float(batch["targets/toy_voiced"].numel())


class VoicingDecoder(Decoder):
    def predict(self, model, features, device):
        import torch

        with torch.no_grad():
            return torch.sigmoid(model(torch.from_numpy(features.astype(np.float32)))[:, 0]).numpy()

    def decode(self, prediction, frame_times, duration, state, options):
        import jams

        ann = jams.Annotation("tag_open", duration=duration)
        step = float(frame_times[1] - frame_times[0]) if len(frame_times) > 1 else duration
        for t, p in zip(frame_times, prediction):
            if p > 0.5:
                ann.append(time=float(t), duration=min(step, duration - float(t)), value="voiced")
        return ann


class VoicingScorer(Scorer):
    metrics = ("voicing_accuracy",)
    score_columns = ("voicing_accuracy",)

    def score(self, ref, est):
        grid = np.arange(0, ref.duration, 0.05)
        times, values = ref.to_event_values()
        voiced_ref = np.zeros(len(grid), bool)
        idx = np.clip(np.searchsorted(times, grid), 0, max(len(times) - 1, 0))
        if len(times):
            voiced_ref = np.array([bool(values[i]["voiced"]) and values[i]["frequency"] > 0 for i in idx])
        voiced_est = np.zeros(len(grid), bool)
        for obs in est.data:
            voiced_est |= (grid >= obs.time) & (grid < obs.time + obs.duration)
        return {"voicing_accuracy": {"score": float(np.mean(voiced_ref == voiced_est)), "weight": float(ref.duration)}}


class Voicing(Task):
    """Toy task: is the melody voiced in this frame? A per-frame linear model on the CQT."""

    name = "toy_voicing"
    targets = VoicingTargets()
    network = VoicingNetwork()
    decoder = VoicingDecoder()
    scorer = VoicingScorer()


class ZeroTargets(Targets):
    namespace = "tag_open"

    def encode(self, jam, frame_times):
        return {"toy_zero": np.zeros(len(frame_times), np.int8)}


class TargetsOnly(Task):
    """Toy target-only task (no ``network``): encodes targets, has no network."""

    name = "toy_targets_only"
    targets = ZeroTargets()


@pytest.fixture
def toy_task():
    TASKS.register(Voicing)
    yield TASKS.get("toy_voicing")
    TASKS.unregister("toy_voicing")


def test_a_task_defined_in_a_test_module_trains_and_is_scored_through_the_pipeline(toy_task, tmp_path, sync_cluster):
    from mirpipe.pipeline.runner import Runner

    base = small_config(tracks=5, shifts=[0]).model_dump(mode="json")
    base["synthesize"]["solo_fraction"] = 0.0
    base["train"] = {
        "tasks": ["toy_voicing"],
        "patch_frames": 16,
        "batch_size": 4,
        "n_active": 2,
        "rate": 4,
        "steps_per_epoch": 3,
        "max_epochs": 1,
        "progress": "off",
    }
    base["evaluate"] = {"tasks": ["toy_voicing"], "figures": 1}
    cfg = parse_pipeline(base)
    with open_executor(sync_cluster) as ex:
        reports = {r.stage: r for r in Runner(tmp_path, cfg, progress=False).run(ex)}
    assert reports["train"].done == 1, reports["train"].failures
    assert reports["evaluate"].done == reports["evaluate"].total >= 1, reports["evaluate"].failures
    scores = json.loads((tmp_path / "reports" / "toy_voicing" / "scores.json").read_text())
    assert 0.0 <= scores["voicing_accuracy"] <= 1.0 and scores["columns"] == ["voicing_accuracy"]
    estimates = list((tmp_path / "reports" / "toy_voicing" / "estimates").glob("*.jams"))
    assert len(estimates) == scores["n_tracks"]


def test_generic_code_names_no_task():
    root = Path(__file__).resolve().parent.parent
    files = [
        root / "stages" / "train.py",
        root / "stages" / "evaluate.py",
        root / "models" / "bundle.py",
        *sorted((root / "pipeline").glob("*.py")),
    ]
    pattern = re.compile(r"\b(chord|pitch|instrument|melody)\b", re.IGNORECASE)
    found = [
        f"{f.name}:{i}: {line.strip()}"
        for f in files
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)


def test_config_names_are_checked_against_the_registries():
    with pytest.raises(ConfigError) as err:
        parse_pipeline({"train": {"tasks": ["chords"]}, "features": {"store": "parquet"}, "augment": {"backend": "sox"}})
    text = str(err.value)
    assert "unknown task 'chords'" in text and "chord" in text
    assert "unknown store backend 'parquet'" in text and "zarr" in text and "hdf5" in text
    assert "unknown pitch-shift backend 'sox'" in text and "rubberband" in text
    TASKS.register(TargetsOnly)
    try:
        with pytest.raises(ConfigError, match="no network to train yet"):
            parse_pipeline({"train": {"tasks": ["toy_targets_only"]}})  # targets only, no network yet
    finally:
        TASKS.unregister("toy_targets_only")


def test_run_order_comes_from_needs_and_a_registered_stage_joins_it(tmp_path):
    from pydantic import BaseModel

    from mirpipe.stage import Stage

    assert run_order() == ["synthesize", "ingest", "features", "train", "evaluate"]

    class ReportParams(BaseModel):
        title: str = "summary"

    class Report(Stage):
        name = "toy_report"
        needs = ("evaluate",)
        params = ReportParams

        def items(self, ctx, upstream):
            return []

        def run(self, item, ctx):
            return {}

    STAGES.register(Report)
    try:
        assert run_order()[-1] == "toy_report"
        cfg = parse_pipeline({"toy_report": {"title": "x"}})
        assert cfg.toy_report.title == "x" and cfg.stage_order()[-1] == "toy_report"
    finally:
        STAGES.unregister("toy_report")


def test_registry_lists_names_and_refuses_a_second_implementation_of_one_name():
    reg: Registry = Registry("widget")

    @reg.register(name="a")
    def a():
        return 1

    with pytest.raises(UnknownNameError, match="unknown widget 'b'; widgets are: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="already registered"):
        reg.register(lambda: 2, name="a")


def test_namespaces_are_converted_for_the_tasks(tmp_path):
    import jams

    from mirpipe.models import chord, pitch
    from mirpipe.models.task import offered_namespaces

    jam = jams.JAMS(file_metadata={"duration": 4.0})
    harte = jams.Annotation("chord_harte", duration=4.0)
    harte.append(time=0.0, duration=2.0, value="C:maj")
    harte.append(time=2.0, duration=2.0, value="A:min")
    hz = jams.Annotation("pitch_hz", duration=4.0)
    for t in np.arange(0, 4, 0.01):
        hz.append(time=float(t), duration=0.0, value=440.0)
    jam.annotations.extend([harte, hz])
    times = np.arange(0, 4, 0.1)
    targets = chord.encode(jam, times)
    assert (
        targets["chord_tag"][0] == chord.encode_label("C:maj")[3] and targets["chord_tag"][-1] == chord.encode_label("A:min")[3]
    )
    assert np.allclose(pitch.encode(jam, times)["f0_hz"][5:35], 440.0)
    assert {"chord", "pitch_contour"} <= set(offered_namespaces(["chord_harte", "pitch_hz"]))
    assert "tag_open" in offered_namespaces(["tag_gtzan"])
    assert annotations(jam, "chord")[0].namespace == "chord"


def test_registered_names_keep_the_builtin_order_whatever_was_imported_first():
    """A process that imported a built-in module before the registry loaded still lists the
    built-ins in the order ``builtin`` gives (run order, default task lists and the docs depend on it)."""
    import subprocess
    import sys

    code = (
        "import mirpipe.models.instrument, mirpipe.models.pitch\n"
        "from mirpipe.models.task import TASKS\n"
        "print(','.join(TASKS.names()))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().split(",")[:4] == ["chord", "pitch", "multipitch", "instrument"]
