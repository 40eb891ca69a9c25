"""Trainer progress reporting, TensorBoard run folders and atomic checkpoint writes (CPU, tiny model)."""

import io
import re

import pytest
import torch

from mirpipe.models.task import Network, Task
from mirpipe.models.trainer import PROGRESS_ENV, Trainer, TrainerSettings, TrainState, atomic_save, progress_mode
from mirpipe.storage.atomic import TMP_PREFIX, remove_leftovers

STEPS_PER_EPOCH, MAX_EPOCHS, BATCH = 3, 4, 5
TOTAL = STEPS_PER_EPOCH * MAX_EPOCHS


def _loss(outputs, batch):
    loss = torch.nn.functional.cross_entropy(outputs, batch["y"])
    return loss, {"ce": float(loss.detach())}


def _metric(outputs, batch):
    return float((outputs.argmax(-1) == batch["y"]).sum()), float(batch["y"].numel())


class _ToyNetwork(Network):
    metric_name = "accuracy"

    def loss(self, outputs, batch):
        return _loss(outputs, batch)

    def metric(self, outputs, batch):
        return _metric(outputs, batch)


class _Toy(Task):
    name = "toy"
    feature = "x"
    network = _ToyNetwork()


TASK = _Toy()


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 6, generator=g)
    return {"x": x, "y": (x[:, 0] > 0).long()}


def _train_batches(epoch: int, skip: int):
    return (_batch(1000 * epoch + i) for i in range(skip, STEPS_PER_EPOCH))


class Tty(io.StringIO):
    def isatty(self):
        return True


def _trainer(out_dir, run_key="run-1", tensorboard=False, **kwargs):
    torch.manual_seed(0)
    settings = TrainerSettings(
        steps_per_epoch=STEPS_PER_EPOCH,
        max_epochs=MAX_EPOCHS,
        patience=MAX_EPOCHS,
        checkpoint_every=2,
        device="cpu",
        seed=1,
        threads=1,
    )
    return Trainer(
        torch.nn.Linear(6, 2),
        TASK,
        _train_batches,
        lambda: (_batch(-i) for i in range(1, 3)),
        settings,
        out_dir,
        run_key=run_key,
        log=lambda m: None,
        tensorboard=tensorboard,
        **kwargs,
    )


ETA = re.compile(r"ETA \d+:\d\d:\d\d")


def test_lines_mode_writes_plain_lines_with_step_counts_and_an_eta(tmp_path):
    out = Tty()  # even on a terminal, "lines" never writes carriage returns
    _trainer(tmp_path, progress="lines", progress_stream=out, progress_interval=0.0).fit(stop_at_step=7)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == f"train[toy] starting at step 0/{TOTAL}"
    steps = [int(m.group(1)) for line in lines if (m := re.search(rf"step (\d+)/{TOTAL} ", line))]
    assert sorted(set(steps)) == list(range(1, 8))  # interval 0: a line every step
    assert [line for line in lines if line.endswith("(epoch end)")][1].startswith(f"train[toy] step 6/{TOTAL} (50%) epoch 1 ")
    assert all(ETA.search(line) for line in lines[1:-1])
    assert all(" patches/s " in line and " loss " in line for line in lines[1:-1])
    assert lines[-1].startswith(f"train[toy] stopped at step 7/{TOTAL}")


def test_lines_mode_default_interval_writes_a_line_per_epoch(tmp_path):
    out = io.StringIO()
    _trainer(tmp_path, progress="lines", progress_stream=out).fit()
    lines = out.getvalue().splitlines()
    epoch_lines = [line for line in lines if line.endswith("(epoch end)")]
    assert [re.search(r"step (\d+)/", line).group(1) for line in epoch_lines] == ["3", "6", "9", "12"]
    assert ETA.search(epoch_lines[-1]).group(0) == "ETA 0:00:00"
    assert len(lines) == len(epoch_lines) + 2 and lines[-1].startswith(f"train[toy] finished at step {TOTAL}/{TOTAL}")


def test_auto_is_a_bar_on_a_terminal_and_lines_elsewhere(tmp_path, monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert progress_mode("auto", io.StringIO()) == "lines" and progress_mode("auto", Tty()) == "bar"
    closed = io.StringIO()
    closed.close()
    assert progress_mode("auto", closed) == "lines" and progress_mode("bar", None) == "off"
    monkeypatch.setenv(PROGRESS_ENV, "lines")
    assert progress_mode("auto", Tty()) == "lines" and progress_mode("bar", Tty()) == "bar"
    monkeypatch.setenv(PROGRESS_ENV, "off")
    assert progress_mode("auto", Tty()) == "off"
    with pytest.raises(ValueError):
        _trainer(tmp_path, progress="verbose")

    monkeypatch.delenv(PROGRESS_ENV)
    out = Tty()
    _trainer(tmp_path / "bar", progress_stream=out).fit(stop_at_step=5)
    text = out.getvalue()
    assert "\r" in text and f"5/{TOTAL}" in text and "loss=" in text and "patches/s" in text
    out = io.StringIO()
    _trainer(tmp_path / "off", progress="off", progress_stream=out).fit(stop_at_step=2)
    assert out.getvalue() == ""


def test_progress_goes_to_stderr_never_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    _trainer(tmp_path).fit(stop_at_step=3)  # captured stderr is no terminal: lines
    captured = capsys.readouterr()
    assert captured.out == "" and f"step 3/{TOTAL}" in captured.err


def test_resumed_progress_starts_at_the_resumed_step(tmp_path):
    _trainer(tmp_path, progress="off").fit(stop_at_step=5)
    out = io.StringIO()
    _trainer(tmp_path, progress="lines", progress_stream=out).fit(stop_at_step=9)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"train[toy] starting at step 5/{TOTAL}"
    assert re.search(rf"step 6/{TOTAL} .*ETA \d", lines[1])  # one epoch end; the ETA counts only steps run here
    bar = Tty()
    _trainer(tmp_path, progress="bar", progress_stream=bar).fit(stop_at_step=10)
    assert f"9/{TOTAL}" in bar.getvalue() and f"10/{TOTAL}" in bar.getvalue()


def _event_files(folder):
    return sorted(folder.glob("events.out.tfevents.*"))


def test_each_fresh_run_gets_its_own_tensorboard_folder(tmp_path):
    first = _trainer(tmp_path, tensorboard=True, progress="off")
    assert first.fit()["finished"]
    first.close()
    second = _trainer(tmp_path, tensorboard=True, progress="off")  # the same run_key, but that run finished
    second.fit(stop_at_step=2)
    second.close()
    third = _trainer(tmp_path, run_key="0123456789abcdef", tensorboard=True, progress="off")
    third.fit(stop_at_step=1)
    third.close()
    runs = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert len(runs) == 3 and not _event_files(tmp_path / "tb")
    assert {first.state.tb_run, second.state.tb_run, third.state.tb_run} == set(runs)
    assert re.fullmatch(r"\d{8}T\d{6}Z-run-1(\.\d+)?", first.state.tb_run)
    assert re.fullmatch(r"\d{8}T\d{6}Z-01234567", third.state.tb_run)
    assert all(len(_event_files(tmp_path / "tb" / r)) == 1 for r in runs)


def test_a_resumed_run_writes_on_in_its_own_tensorboard_folder(tmp_path):
    first = _trainer(tmp_path, tensorboard=True, progress="off")
    first.fit(stop_at_step=5)
    first.close()
    run = first.state.tb_run
    assert torch.load(tmp_path / "last.pt", weights_only=True)["state"]["tb_run"] == run
    second = _trainer(tmp_path, tensorboard=True, progress="off")  # a new process would do the same
    summary = second.fit()
    second.close()
    assert summary["finished"] and second.state.tb_run == run and second.tb_dir == tmp_path / "tb" / run
    assert [p.name for p in (tmp_path / "tb").iterdir()] == [run]
    assert len(_event_files(tmp_path / "tb" / run)) == 2


def test_a_checkpoint_from_before_run_folders_still_resumes(tmp_path):
    _trainer(tmp_path, progress="off").fit(stop_at_step=2)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    del ckpt["state"]["tb_run"]
    atomic_save(ckpt, tmp_path / "last.pt")
    trainer = _trainer(tmp_path, progress="off")
    assert trainer.try_resume() and trainer.state.global_step == 2 and trainer.state.tb_run == ""
    trainer.fit(stop_at_step=3)
    assert trainer.state.tb_run and TrainState(**torch.load(tmp_path / "last.pt", weights_only=True)["state"]).tb_run


def test_atomic_save_goes_through_atomic_path(tmp_path, monkeypatch):
    seen = []
    real_save = torch.save

    def spy(obj, f, *a, **k):
        seen.append(f)
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", spy)
    atomic_save({"x": 1}, tmp_path / "sub" / "last.pt")
    assert torch.load(tmp_path / "sub" / "last.pt", weights_only=True) == {"x": 1}
    assert seen[0].name.startswith(TMP_PREFIX) and seen[0].name.endswith("-last.pt") and seen[0].parent == tmp_path / "sub"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["last.pt"]

    def torn(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError):
        atomic_save({"x": 2}, tmp_path / "sub" / "last.pt")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["last.pt"]  # the temporary is gone, the old file stays
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(tmp_path / "sub" / "last.pt", weights_only=True) == {"x": 1}
    assert remove_leftovers(tmp_path) == 0


def test_fit_writes_checkpoints_without_temporaries(tmp_path):
    _trainer(tmp_path, progress="off").fit(stop_at_step=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", "progress.json"]


def test_each_epoch_end_rewrites_the_progress_figures(tmp_path):
    import json

    trainer = _trainer(tmp_path, progress="off")
    trainer.fit(stop_at_step=STEPS_PER_EPOCH + 1)  # one epoch done, the second begun
    first = json.loads((tmp_path / "progress.json").read_text())
    assert (first["epoch"], first["step"], first["finished"]) == (1, STEPS_PER_EPOCH, False)
    assert first["metric"] == "accuracy" and first["value"] == trainer.state.history[0]["accuracy"]
    assert first["train_loss"] == trainer.state.history[0]["train_loss"] and first["patches_per_s"] > 0
    _trainer(tmp_path, progress="off").fit()  # resumed to the end
    last = json.loads((tmp_path / "progress.json").read_text())
    assert (last["epoch"], last["step"], last["finished"]) == (MAX_EPOCHS, TOTAL, True)
