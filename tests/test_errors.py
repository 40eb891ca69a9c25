"""Errors: one root class; the CLI tells configuration and workdir errors (exit 2) from bugs (exit 3,
traceback in a log file); decoding blames a file only for the decoders' own errors."""

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from mirpipe import errors
from mirpipe.errors import ConfigurationError, InputError, MirpipeError, WorkdirError, WorkdirFileError
from mirpipe.importers.mirdata_loaders import MirdataMissingError
from mirpipe.models.bundle import BundleError
from mirpipe.models.checkpoint import CheckpointError
from mirpipe.pipeline import workdir as wd
from mirpipe.pipeline.cli import main
from mirpipe.pipeline.config import ConfigError, PipelineConfig
from mirpipe.pipeline.runner import Runner, WorkdirBusyError
from mirpipe.registry import UnknownNameError
from mirpipe.stages import ingest


def test_every_deliberate_error_derives_from_the_root_and_keeps_its_old_bases():
    for cls in (ConfigError, UnknownNameError, BundleError, MirdataMissingError):
        assert issubclass(cls, ConfigurationError) and issubclass(cls, ValueError)
    for cls in (WorkdirFileError, WorkdirBusyError, CheckpointError):
        assert issubclass(cls, WorkdirError)
    assert issubclass(WorkdirFileError, RuntimeError) and issubclass(WorkdirBusyError, RuntimeError)
    assert issubclass(CheckpointError, ValueError) and issubclass(UnknownNameError, KeyError)
    for cls in (ConfigurationError, WorkdirError, InputError, errors.AudioDecodeError):
        assert issubclass(cls, MirpipeError)
    assert not issubclass(InputError, (ConfigurationError, WorkdirError))
    assert errors.is_permanent(errors.AudioDecodeError("a.wav", "x")) and not errors.is_permanent(ValueError("bug"))
    assert str(UnknownNameError("unknown task 'x'")) == "unknown task 'x'"  # not quoted as a KeyError would be


def _cli(args, **env):
    return CliRunner().invoke(main, [str(a) for a in args], env=env or None)


def test_a_bad_pipeline_yaml_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("features:\n  store: parquet\n")
    res = _cli(["run", "--config", bad, "--workdir", tmp_path / "w"])
    assert res.exit_code == 2 and "mirpipe: error:" in res.stderr and str(bad) in res.stderr
    assert "features.store" in res.stderr and not (tmp_path / "w").exists()


def _bug(*args, **kwargs):
    raise ValueError("a plain ValueError from a bug")


def test_an_unexpected_error_exits_3_with_one_line_naming_the_traceback_log(tmp_path, monkeypatch):
    monkeypatch.setattr(wd, "resolve", _bug)  # the first thing `run` does
    work = tmp_path / "w"
    work.mkdir()
    res = _cli(["run", "--workdir", work])
    assert res.exit_code == 3, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("mirpipe: unexpected error: ValueError: a plain ValueError from a bug (traceback in ")
    (log,) = (work / "logs").glob("mirpipe-error-*.log")
    assert line.endswith(f"(traceback in {log.resolve()})")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "_bug" in text and "a plain ValueError from a bug" in text


def test_without_a_workdir_the_log_goes_to_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(wd, "resolve", _bug)
    res = _cli(["cluster", "show"], XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert res.exit_code == 3
    (log,) = (tmp_path / "cache" / "mirpipe").glob("mirpipe-error-*.log")
    assert str(log.resolve()) in res.stderr and "ValueError" in log.read_text()


def test_ctrl_c_keeps_clicks_abort(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wd, "resolve", interrupted)
    res = _cli(["run", "--workdir", tmp_path])
    assert res.exit_code == 1 and "Aborted!" in res.output and not (tmp_path / "logs").exists()


def _wav(path, n=22050 * 2):
    sf.write(path, (0.05 * np.sin(2 * np.pi * 220 * np.arange(n) / 22050)).astype(np.float32), 22050)
    return path


@pytest.mark.parametrize("exc", [MemoryError(), TypeError("a bug"), AttributeError("a bug"), KeyError("a bug")])
def test_decoding_does_not_blame_the_file_for_memory_errors_or_bugs(tmp_path, monkeypatch, exc):
    def broken(path):
        raise exc

    monkeypatch.setattr(ingest, "load_channels", broken)
    with pytest.raises(type(exc)):
        ingest.decode_checked(_wav(tmp_path / "a.wav"))


def test_a_corrupt_file_is_still_an_audio_decode_error(tmp_path):
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(errors.AudioDecodeError, match="noise.wav"):
        ingest.decode_checked(noise)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(b"fLaC" + np.random.default_rng(1).bytes(2048))
    with pytest.raises(errors.AudioDecodeError, match="cut.flac"):
        ingest.decode_checked(cut)


def test_a_bug_while_decoding_is_retried_and_recorded_as_no_input_error(tmp_path, monkeypatch, sync_cluster):
    from mirpipe.pipeline.cluster import open_executor

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    from mirpipe.demo.track import annotate, compose, render

    s = compose(0, 0, False, 6, 8)
    sf.write(corpus / "a.flac", render(s, 22050, 0, 0), 22050)
    annotate(s, "a", False).save(str(corpus / "a.jams"))

    def broken(path):
        raise TypeError("a bug in the decoding path")

    monkeypatch.setattr(ingest, "load_channels", broken)
    cfg = PipelineConfig.model_validate({"ingest": {"corpus": str(corpus)}, "run": {"retries": 1, "retry_backoff": 0}})
    with open_executor(sync_cluster) as ex:
        (report,) = Runner(tmp_path / "work", cfg, progress=False).run(ex, only="ingest")
    (failure,) = report.failures
    assert failure["error_class"] == "TypeError" and failure["kind"] != "input"
    assert failure["attempts"] == 2  # retried, not blamed on a.flac


def test_a_truncated_flac_says_what_the_decoder_said(tmp_path):
    """Not audioread's empty ``NoBackendError:``: libsndfile's own message, and what the header declared."""
    import numpy as np
    import soundfile as sf

    from mirpipe.errors import AudioDecodeError
    from mirpipe.stages.ingest import decode_checked

    full = tmp_path / "full.flac"
    sf.write(full, np.random.default_rng(0).normal(0, 0.1, 22050 * 5).astype(np.float32), 22050)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioDecodeError) as err:
        decode_checked(cut)
    reason = err.value.reason
    assert reason.startswith("cannot decode: libsndfile: ") and "NoBackendError: no backend reads it" in reason, reason
    assert "flac" in reason.lower() and "header declares 110250 frames at 22050 Hz" in reason, reason
    assert "Error :" not in reason


@pytest.mark.parametrize(
    ("field", "text"),
    [("time", '"time": NaN'), ("duration", '"duration": Infinity'), ("confidence", '"confidence": NaN')],
)
def test_a_non_finite_number_in_a_jams_is_a_schema_error_naming_the_observation(tmp_path, fault_corpus, field, text):
    """Python's JSON reads NaN and Infinity and the JAMS schema lets them through: ingest classifies the track
    (file, namespace, observation) instead of labelling its frames silently wrong; the other tracks go on."""
    import json
    import shutil

    from conftest import corpus_config, manifest_rows

    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.config import parse_cluster
    from mirpipe.pipeline.runner import Runner

    corpus = tmp_path / "corpus"
    shutil.copytree(fault_corpus, corpus)
    victim = sorted(corpus.glob("*.jams"))[0]
    doc = json.loads(victim.read_text())
    chord = next(a for a in doc["annotations"] if a["namespace"] == "chord")
    chord["data"][2][field] = "PLACEHOLDER"
    victim.write_text(json.dumps(doc).replace('"PLACEHOLDER"', text.split(": ")[1]))
    with open_executor(parse_cluster({"type": "sync"})) as ex:
        (report,) = Runner(tmp_path / "work", corpus_config(corpus), progress=False).run(ex, only="ingest")
    (failure,) = report.failures
    assert failure["error_class"] == "AnnotationSchemaError" and failure["file"].endswith(victim.name)
    assert "(chord), observation 2" in failure["message"] and f"{field} not a finite number" in failure["message"]
    assert report.done == report.total - 1 and victim.stem not in manifest_rows(tmp_path / "work")


def test_non_finite_numbers_are_found_inside_observation_values():
    from mirpipe.stages.ingest import _non_finite

    assert _non_finite({"index": 0, "frequency": float("nan"), "voiced": True}) == ".frequency"
    assert _non_finite([1.0, [2.0, float("inf")]]) == "[1][1]"
    assert _non_finite(float("-inf")) == ""
    assert _non_finite({"index": 0, "frequency": 440.0, "voiced": False}) is None
    assert _non_finite("D#:7") is None and _non_finite(None) is None and _non_finite(True) is None


def test_a_read_only_workdir_exits_2_and_status_still_reads_it(tmp_path, fault_corpus):
    """No write permission on the workdir (what a read-only filesystem looks like to a run): `run` and `verify`
    exit 2 saying so, without a traceback or a change; `status` reads it. As root the commands drop the
    capabilities that bypass permissions."""
    import json
    import os
    import shutil
    import stat
    import subprocess
    import sys

    from conftest import corpus_config

    from mirpipe.pipeline import workdir as wd
    from mirpipe.pipeline.cluster import open_executor
    from mirpipe.pipeline.config import parse_cluster
    from mirpipe.pipeline.runner import Runner

    work = tmp_path / "work"
    config, cluster = corpus_config(fault_corpus), parse_cluster({"type": "sync"})
    with open_executor(cluster) as ex:
        Runner(work, config, progress=False).run(ex, until="ingest")
    wd.record(work, config, cluster)  # what `mirpipe run` records: the commands below resume from it
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: permissions cannot be taken away")
        prefix = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search", "--"]
    before = sorted((p.relative_to(work), p.stat().st_mtime_ns) for p in work.rglob("*"))
    for path in [work, *work.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        for command in (["run"], ["verify"]):
            res = subprocess.run(
                [*prefix, sys.executable, "-m", "mirpipe", *command, "--workdir", str(work)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert res.returncode == 2, res.stderr[-2000:]
            assert "workdir is read-only" in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]
        res = subprocess.run(
            [*prefix, sys.executable, "-m", "mirpipe", "status", "--workdir", str(work), "--json"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert json.loads(res.stdout)["stages"]["ingest"]["done"] == 4
    finally:
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert sorted((p.relative_to(work), p.stat().st_mtime_ns) for p in work.rglob("*")) == before


def test_a_full_disk_or_quota_anywhere_in_the_chain_is_a_disk_full_error(tmp_path):
    """ENOSPC and EDQUOT become a ``DiskFullError`` naming the file and the free space: not the input's
    fault, not retried, picklable for Dask; a wrapped or message-only one too (HDF5 words it)."""
    import errno
    import pickle

    from mirpipe.errors import DiskFullError, disk_full_error, is_retryable

    full = disk_full_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "a.zip")))
    assert isinstance(full, DiskFullError) and isinstance(full, WorkdirError) and not isinstance(full, InputError)
    assert full.path == str(tmp_path / "a.zip") and isinstance(full.free, int) and full.free > 0 and not full.quota
    assert str(full) == f"disk full at {tmp_path / 'a.zip'} ({full.free} bytes free): free space and run `mirpipe run` again"
    assert not is_retryable(full) and not errors.is_permanent(full) and is_retryable(RuntimeError("transient"))
    assert str(pickle.loads(pickle.dumps(full))) == str(full)
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as exc:
            raise RuntimeError("zarr could not write the chunk") from exc
    except RuntimeError as wrapped:
        quota = disk_full_error(wrapped, [tmp_path / "nowhere" / "yet", tmp_path])
    assert quota is not None and quota.quota and quota.path in (str(tmp_path / "nowhere" / "yet"), str(tmp_path))
    assert str(quota).startswith("disk quota exceeded at ")
    hdf5 = OSError("Can't close file (file write failed: errno = 28, error message = 'No space left on device')")
    assert disk_full_error(hdf5, [tmp_path]).path == str(tmp_path)
    assert disk_full_error(OSError(errno.EACCES, "Permission denied", "x")) is None
    assert disk_full_error(ValueError("a bug")) is None
