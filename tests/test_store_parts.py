"""An entry is fingerprinted part by part: each feature kind by its own settings and the audio, each
task's targets by its encoder, the annotations and the frame grid. Changing one kind's settings
recomputes that kind alone; the others are copied as stored, bytes unchanged; a stored part that no
longer reads back is computed again rather than copied."""

from __future__ import annotations

import hashlib
import os
import zipfile

import numpy as np
from conftest import FAULT_TRACKS, corpus_config

from mirpipe.models.task import TASKS
from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import PipelineConfig, parse_cluster
from mirpipe.pipeline.ledger import Ledger
from mirpipe.pipeline.runner import Runner
from mirpipe.storage import open_store


def _config(fault_corpus, **hcqt) -> PipelineConfig:
    data = corpus_config(fault_corpus, mode="feature", shifts=[0, 2]).model_dump(mode="json")
    data["features"]["hcqt"] = {**data["features"].get("hcqt", {}), **hcqt}
    return PipelineConfig.model_validate(data)


def _members(path, prefix: str) -> dict[str, str]:
    """Digest of every zip member of one array (its chunks and metadata, as stored)."""
    with zipfile.ZipFile(path) as zf:
        return {n: hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist() if n.startswith(prefix)}


def _features(workdir, cfg):
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        (report,) = Runner(workdir, cfg, progress=False).run(ex, only="features")
    assert report.failed == 0, report.failures
    return report, {item: d["record"] for item, d in Ledger(workdir).done("features").items()}


def test_changing_the_hcqt_settings_recomputes_the_hcqt_alone(augmented, fault_corpus):
    store = open_store("zarr", augmented / "features")
    _, first = _features(augmented, _config(fault_corpus))
    every_part = sorted({TASKS.get(t).feature for t in TASKS.names()} | {f"targets/{t}" for t in TASKS.names()})
    assert all(sorted(r["computed"]) == every_part for r in first.values())
    tracks = sorted(first)
    cqt = {t: _members(store.entry_path(t), "cqt/") for t in tracks}
    targets = {t: store.entry_path(t, "targets").read_bytes() for t in tracks}
    hcqt_before = store.read_entry(tracks[0], ["hcqt"]).arrays["hcqt"]

    report, second = _features(augmented, _config(fault_corpus, harmonics=[0.5, 1.0, 2.0, 3.0]))
    assert report.scheduled == report.done == FAULT_TRACKS
    assert all(r["computed"] == ["hcqt"] for r in second.values()), second
    for t in tracks:
        assert _members(store.entry_path(t), "cqt/") == cqt[t]  # the CQT chunks as they were stored
        assert store.entry_path(t, "targets").read_bytes() == targets[t]  # the pitch targets' grid did not move
        assert second[t]["parts"]["cqt"] == first[t]["parts"]["cqt"] and second[t]["parts"]["hcqt"] != first[t]["parts"]["hcqt"]
    hcqt_after = store.read_entry(tracks[0], ["hcqt"]).arrays["hcqt"]
    assert hcqt_after.shape[:2] == hcqt_before.shape[:2] and hcqt_after.shape[2] < hcqt_before.shape[2]  # up to 3 f, not 5 f

    # a stored CQT chunk damaged (size and mtime kept) is computed again, not copied into the new file
    damaged = store.entry_path(tracks[1])
    with zipfile.ZipFile(damaged) as zf:
        info = zf.getinfo("cqt/c/0/0/0")
    st, data = damaged.stat(), bytearray(damaged.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # the member's data
    data[start + 8 : start + 72] = bytes(b ^ 0xFF for b in data[start + 8 : start + 72])
    damaged.write_bytes(bytes(data))
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))
    _, third = _features(augmented, _config(fault_corpus, harmonics=[0.5, 1.0, 2.0]))
    assert sorted(third[tracks[1]]["computed"]) == ["cqt", "hcqt"]
    assert all(third[t]["computed"] == ["hcqt"] for t in tracks if t != tracks[1])
    assert _members(damaged, "cqt/") == cqt[tracks[1]]  # the same bytes as the first computation
    assert np.isfinite(store.read_entry(tracks[1], ["cqt"]).arrays["cqt"].astype(np.float32)).all()
