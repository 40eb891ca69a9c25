"""``mirpipe.open``: a tiny workdir built by the real pipeline (synthesize -> ingest -> features ->
train -> evaluate the chord task, on the in-process cluster), opened as a researcher would."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import mirpipe
from mirpipe.pipeline.workbench import WorkbenchError


@pytest.fixture
def workdir(evaluated_workdir):
    return evaluated_workdir


def batches(loader) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def test_open_gives_the_manifest_splits_vocabularies_store_and_scores(workdir):
    wb = mirpipe.open(workdir)
    assert isinstance(wb, mirpipe.Workbench)
    assert set(wb.splits) >= {"train", "val", "test"}
    assert sorted(t for ids in wb.splits.values() for t in ids) == sorted(wb.manifest)
    assert wb.splits["train"] and wb.splits["test"]
    assert isinstance(wb.vocabularies, dict)
    assert len(wb.store.read_index()) == len(wb.manifest)
    scores = wb.scores("chord")
    assert scores.n_tracks == len(wb.splits["test"]) and 0.0 <= scores.metrics["majmin"] <= 1.0
    with pytest.raises(WorkbenchError, match="no scores for task 'pitch'"):
        wb.scores("pitch")
    with pytest.raises(WorkbenchError, match="neither a task"):
        wb.loader("nonsense")


def test_loader_yields_model_input_and_targets_deterministically(workdir):
    wb = mirpipe.open(workdir)
    loader = wb.loader("chord", batch_size=4, patch_frames=16, seed=3, steps=4)
    assert isinstance(loader, torch.utils.data.DataLoader) and len(loader) == 4
    first = batches(loader)
    assert len(first) == 4
    x, tag = first[0]["cqt"], first[0]["targets/chord_tag"]
    assert x.dtype == torch.float32 and x.shape == (4, 16, wb.input_bins("chord"))
    assert tag.dtype == torch.int64 and tag.shape == (4, 16)
    again = batches(wb.loader("chord", batch_size=4, patch_frames=16, seed=3, steps=4))
    workers = batches(wb.loader("chord", batch_size=4, patch_frames=16, seed=3, steps=4, workers=2))
    for a, b, c in zip(first, again, workers):
        assert a.keys() == b.keys() == c.keys()
        for k in a:
            assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), k
    other = batches(wb.loader("chord", batch_size=4, patch_frames=16, seed=4, steps=4))
    assert not all(torch.equal(a["cqt"], b["cqt"]) for a, b in zip(first, other))
    second_epoch = batches(loader)  # each iter() is the next epoch
    assert not torch.equal(first[0]["cqt"], second_epoch[0]["cqt"])


def test_loader_raw_batches_are_compact_and_feed_makes_the_model_input(workdir):
    wb = mirpipe.open(workdir)
    kw = {"batch_size": 4, "patch_frames": 16, "steps": 1}
    raw = next(iter(wb.loader("chord", raw=True, **kw)))
    fed = next(iter(wb.loader("chord", **kw)))
    assert sum(v.element_size() * v.numel() for v in raw.values()) < sum(v.element_size() * v.numel() for v in fed.values())
    made = wb.feed("chord")(raw)
    assert all(torch.equal(made[k], fed[k]) for k in fed)


def test_a_feature_alone_streams_features(workdir):
    wb = mirpipe.open(workdir)
    batch = next(iter(wb.loader("cqt", split="val", batch_size=2, patch_frames=8, steps=1)))
    assert list(batch) == ["cqt"] and batch["cqt"].shape == (2, 8, wb.input_bins("cqt"))


def test_tracks_give_whole_tracks_and_their_references(workdir):
    wb = mirpipe.open(workdir)
    tracks = list(wb.tracks("test", "chord"))
    assert [t.track for t in tracks] == sorted(wb.splits["test"])
    for t in tracks:
        assert t.features.dtype == np.float32 and t.features.shape == (len(t.frame_times), wb.input_bins("chord"))
        assert t.targets["targets/chord_tag"].shape == (len(t.frame_times),)
        assert t.reference.namespace == "chord" and len(t.reference.data) > 0
        assert 0 < t.duration and t.frame_times[-1] <= t.duration


def test_errors_name_the_workdir(tmp_path, workdir):
    with pytest.raises(WorkbenchError, match="not a mirpipe workdir"):
        mirpipe.open(tmp_path)
    (tmp_path / "mirpipe.yaml").write_text((workdir / "mirpipe.yaml").read_text())
    (tmp_path / "manifest.json").write_text((workdir / "manifest.json").read_text())
    wb = mirpipe.open(tmp_path)
    with pytest.raises(WorkbenchError, match=f"{re.escape(str(tmp_path))}: no features"):
        wb.loader("chord")


def test_the_own_model_example_trains_and_prints_finite_scores(workdir, repo_root):
    res = subprocess.run(
        [sys.executable, str(repo_root / "examples" / "own_model.py"), str(workdir), "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    found = re.findall(r"majmin (\S+) over (\d+) test tracks", res.stdout)
    assert found, res.stdout
    assert math.isfinite(float(found[-1][0])) and int(found[-1][1]) >= 1


def test_the_own_model_example_stays_under_40_lines_of_code(repo_root):
    import ast

    src = (repo_root / "examples" / "own_model.py").read_text()
    docs = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node):
            docs |= set(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    code = [
        line for i, line in enumerate(src.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#") and i not in docs
    ]
    assert len(code) < 40, len(code)


def test_the_loader_defaults_stream_the_trainers_batches(workdir):
    """With the run's settings (no overrides), the loader's epoch 0 is the train stage's epoch 0."""
    from mirpipe.stages.train import entry_weights, split_keys, task_stream
    from mirpipe.storage.torch_data import epoch_loader

    wb = mirpipe.open(workdir)
    task = wb.task("chord")
    p = wb.ctx.params["train"].for_task("chord")
    keys, _ = split_keys(wb.ctx, task)
    shifts = wb.ctx.params["augment"].active_shifts()
    made = task_stream(wb.ctx, task, p, keys, shifts, p.seed, entry_weights(wb.ctx, task, p.sampling, keys))
    trainer = [made.feed(b) for b, _ in zip(epoch_loader(made.stream, 0), range(3))]
    ours = batches(wb.loader("chord", steps=3))
    for a, b in zip(trainer, ours):
        assert all(torch.equal(a[k], b[k]) for k in a)
