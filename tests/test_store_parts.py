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
    default = [t for t in TASKS.names() if not TASKS.get(t).opt_in]  # the default features.tasks
    every_part = sorted({TASKS.get(t).feature for t in default} | {f"targets/{t}" for t in default})
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


def test_a_kind_without_block_support_is_computed_whole_beside_the_others(tmp_path, monkeypatch):
    """A plugin kind that does not declare ``blockwise`` is computed on the whole waveform (its own
    ``compute``), the others in blocks; a one-block track comes out exactly as ``compute_entry``'s."""
    import jams
    import soundfile as sf

    from mirpipe.annotations.prepare import Preparation
    from mirpipe.shifts import AugmentParams
    from mirpipe.stages.features import FeaturesParams, compute_entry, update_entry
    from mirpipe.storage.feature_kinds import CQT

    rng = np.random.default_rng(0)
    sf.write(str(tmp_path / "t.flac"), (0.1 * rng.standard_normal(22050 * 4)).astype(np.float32), 22050)
    jam = jams.JAMS()
    jam.file_metadata.duration = 4.0
    jam.annotations.append(jams.Annotation("chord", duration=4.0, data=[]))
    jam.annotations[0].append(time=0.0, duration=4.0, value="C:maj")
    jam.save(str(tmp_path / "t.jams"))
    monkeypatch.setattr(CQT, "blockwise", False)
    p = FeaturesParams.model_validate({"store": "zarr", "tasks": ["chord", "pitch"]})
    aug = AugmentParams.model_validate({"shifts": [-1, 0, 1]})
    store = open_store("zarr", tmp_path / "features")
    prep = Preparation(channel=None, choices={}, timing_tolerance=1e-3, duration=4.0)
    payload = {"audio": str(tmp_path / "t.flac"), "jams": str(tmp_path / "t.jams"), "audio_sha256": "a", "jams_sha256": "j"}
    update = update_entry(store, "t", payload, p, aug, prep)
    assert sorted(update.computed) == ["cqt", "hcqt", "targets/chord", "targets/pitch"]
    arrays, attrs, _ = compute_entry(payload["audio"], payload["jams"], p, aug, prep)
    entry = store.read_entry("t")
    assert sorted(entry.arrays) == sorted(arrays)
    for name, data in arrays.items():
        assert entry.arrays[name].dtype == data.dtype and entry.arrays[name].tobytes() == data.tobytes(), name
    assert entry.attrs["features"] == attrs["features"]
