"""The task contract's worked example (docs/extending/task.md): the beat task on that page, run as
it stands, registers, encodes targets from a JAMS ``beat`` annotation, is invariant under a pitch
shift, and generic code (configuration, train/evaluate planning helpers) accepts it."""

from __future__ import annotations

import re
from pathlib import Path

import jams
import numpy as np
import pytest

from mirpipe.models.task import TASKS, annotation_transposers

PAGE = Path(__file__).resolve().parent.parent / "docs" / "extending" / "task.md"


@pytest.fixture
def beat_task():
    code = re.search(r"```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    exec(compile(code, str(PAGE), "exec"), {"__name__": "beat_task_example"})
    yield TASKS.get("beat")
    TASKS.unregister("beat")


def _jam(beats, duration=4.0) -> jams.JAMS:
    jam = jams.JAMS()
    jam.file_metadata.duration = duration
    ann = jams.Annotation("beat", duration=duration)
    for t in beats:
        ann.append(time=t, duration=0.0, value=None)
    jam.annotations.append(ann)
    return jam


def test_the_beat_task_encodes_targets_and_is_invariant_under_a_shift(beat_task):
    from mirpipe.audio.deform import deform

    times = np.arange(16) * 0.25
    out = beat_task.targets.encode(_jam([0.5, 1.0, 1.5]), times)
    assert np.flatnonzero(out["beat"]).tolist() == [2, 4, 6]
    stored = {"targets/beat": out["beat"][None]}
    assert beat_task.targets.transpose(stored, 3) is stored
    ref = beat_task.targets.reference(_jam([0.5, 1.0]))
    assert beat_task.targets.transpose_annotation(ref, -2) is ref
    assert not any(re.fullmatch(p, "beat") for p in annotation_transposers())
    ((_, shifted, _),) = deform(_jam([0.5, 1.0]), [4], "librosa", transposers=annotation_transposers())
    assert [o.time for o in shifted.annotations[0].data] == [0.5, 1.0]


def test_generic_code_accepts_the_beat_task(beat_task, tmp_path):
    from conftest import small_config

    from mirpipe.pipeline.config import parse_pipeline
    from mirpipe.stages.train import tune_checkpoints

    base = small_config(tracks=5, shifts=[0]).model_dump(mode="json")
    base["train"] = {"tasks": ["beat"]}
    base["evaluate"] = {"tasks": ["beat"]}
    cfg = parse_pipeline(base)
    assert cfg.train.tasks == ["beat"] and cfg.evaluate.tasks == ["beat"]
    assert beat_task.trainable and beat_task.decoder.tune is None and beat_task.vocabulary is None
    tune_checkpoints(beat_task, None, [tmp_path / "missing.pt"], None, "cpu")  # nothing to tune: no file read
    ref, est = _jam([0.5, 1.0, 1.5]).annotations[0], _jam([0.5, 1.0]).annotations[0]
    scores = beat_task.scorer.score(ref, est)
    assert (
        0.7 < scores["F-measure"]["score"] < 0.9 and beat_task.scorer.pool([scores])["F-measure"] == scores["F-measure"]["score"]
    )
    assert beat_task.bind({"classes": []}) is beat_task
