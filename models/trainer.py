"""One trainer for every task: device, mixed precision, epochs of N steps, validation,
early stopping, learning-rate schedule, atomic checkpoints, exact resume, per-step
progress and one TensorBoard run folder per training run.

A checkpoint holds the model, optimizer, scheduler, grad scaler, every RNG state
and the stream position (epoch, step within it). Batches are a pure function of
(seed, epoch, index), so resuming re-creates the epoch's stream and skips what
was consumed: on CPU with deterministic settings, k steps + resume to 2k equals
2k steps in one go. It holds only tensors and plain values (RNG states included) and is read
with torch's safe unpickler (``checkpoint.load_checkpoint``): a crafted file never runs code, and
one the safe loader refuses is an unreadable checkpoint (the run starts over).

Progress goes to stderr (stdout carries ``--json``): a tqdm bar with loss,
patches/s and the ETA over ``max_epochs * steps_per_epoch`` steps when stderr is
a terminal, otherwise (a file, a batch-job log) one plain line every
``progress_interval`` seconds and at each epoch end, never carriage returns.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np
import torch

from mirpipe import stop
from mirpipe.errors import ConfigurationError
from mirpipe.records import CheckpointMeta, TrainingProgress
from mirpipe.stop import StopRequested
from mirpipe.storage.atomic import atomic_path
from mirpipe.storage.torch_data import Feed

from .checkpoint import load_checkpoint, plain
from .settings import TrainerSettings  # noqa: F401 - the trainer's settings, declared with the pipeline's
from .task import Network, Task

Batches = Iterable[dict[str, torch.Tensor]]
PROGRESS_FILE = "progress.json"  # the last epoch's figures, rewritten atomically at each epoch end


def default_threads() -> int:
    """Torch's CPU threads when none are set: inside a Dask worker, the worker's own thread count
    (its share of the host's cores); elsewhere every core this process may run on.

    Not every core inside a worker: the workers of a host train side by side, and two trainers
    with 2 threads each on 2 cores ran a pitch step 3x slower (1.75 s) than with 1 thread each
    (0.59 s) -- OpenMP threads spin waiting for a core another process holds."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not in a Dask worker
        return max(1, len(os.sched_getaffinity(0)))
    nthreads = getattr(worker, "nthreads", None) or getattr(getattr(worker, "state", None), "nthreads", None)
    return max(1, int(nthreads or 1))


@dataclass
class TrainState:
    run_key: str = ""
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    epoch_loss_sum: float = 0.0  # training loss summed over the steps of the current epoch
    best_metric: float = -math.inf
    best_step: int = -1
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    tb_run: str = ""  # TensorBoard run folder under tb/, named when the run starts; a resumed run keeps it


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


def rng_states() -> dict[str, Any]:
    """Every RNG state as tensors and plain values (the safe loader refuses numpy arrays)."""
    _, key, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())  # the legacy tuple
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` saved, bit for bit."""
    torch.set_rng_state(states["torch"].cpu())
    n = states["numpy"]
    np.random.set_state(("MT19937", np.asarray(n["key"], np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through ``storage.atomic.atomic_path``: a crash never leaves a torn checkpoint,
    at most a ``.tmp-*`` sibling that the leftover sweep removes."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


PROGRESS_MODES = ("auto", "bar", "lines", "off")
PROGRESS_ENV = "MIRPIPE_PROGRESS"  # overrides progress="auto" (e.g. lines in a terminal)


def progress_mode(mode: str, stream: TextIO | None) -> str:
    """Resolve ``auto``: the ``MIRPIPE_PROGRESS`` environment variable if set, else a bar on a terminal, lines otherwise."""
    if mode == "auto":
        mode = os.environ.get(PROGRESS_ENV, "").strip().lower() or "auto"
        if mode not in PROGRESS_MODES:
            raise ValueError(f"{PROGRESS_ENV} must be one of {PROGRESS_MODES}, not {mode!r}")
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES}, not {mode!r}")
    if stream is None:
        return "off"
    if mode != "auto":
        return mode
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        tty = False
    return "bar" if tty else "lines"


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


class StepLosses:
    """Each step's loss parts, kept as they come (tensors on the device) until a logging point
    reads them all with one wait for the device: a ``float(loss)`` every step would stall the
    host until the GPU finished that step, so it could never queue the next one."""

    def __init__(self) -> None:
        self._steps: list[tuple[int, dict[str, torch.Tensor | float]]] = []

    def add(self, step: int, parts: dict[str, torch.Tensor | float]) -> None:
        self._steps.append((step, parts))

    def read(self) -> list[tuple[int, dict[str, float]]]:
        """(step, {part: float}) in step order since the last read, emptied."""
        if not self._steps:
            return []
        tensors = [v for _, parts in self._steps for v in parts.values() if isinstance(v, torch.Tensor)]
        values = iter(torch.stack([t.float().reshape(()) for t in tensors]).tolist() if tensors else [])
        out = [
            (step, {k: next(values) if isinstance(v, torch.Tensor) else float(v) for k, v in parts.items()})
            for step, parts in self._steps
        ]
        self._steps = []
        return out


class TrainProgress:
    """Per-step training progress on ``stream``.

    ``bar``: a tqdm bar over ``total`` steps starting at ``start`` (a resumed run),
    with the epoch's mean loss and patches/s; tqdm's ETA counts only the steps run
    here. ``lines``: one plain line every ``interval`` seconds and at each epoch end
    (step/total, loss, patches/s, ETA), no carriage returns. ``off``: nothing.
    """

    def __init__(
        self,
        mode: str,
        stream: TextIO | None,
        desc: str,
        total: int,
        start: int = 0,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.mode = progress_mode(mode, stream)
        self.stream, self.desc, self.total, self.start = stream, desc, max(total, start), start
        self.interval, self.clock = interval, clock
        self.step, self.epoch, self.loss, self.rate = start, 0, math.nan, math.nan
        self.t0 = self.last_line = clock()
        self.last_loss = -math.inf
        self.bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=start,
                desc=desc,
                unit="step",
                file=stream,
                dynamic_ncols=True,
                leave=True,
                smoothing=0.05,
            )
        elif self.mode == "lines":
            self._line(f"{desc} starting at step {start}/{self.total}")

    def eta(self) -> float:
        """Seconds left at this process's pace (validation included); inf before the first step."""
        done, elapsed = self.step - self.start, self.clock() - self.t0
        if done <= 0 or elapsed <= 0:
            return math.inf
        return (self.total - self.step) * elapsed / done

    def wants_loss(self) -> bool:
        """Whether the next ``update`` shows the loss (a bar's postfix at most once a second, a
        line when one is due): the trainer reads its losses from the device only then."""
        if self.bar is not None:
            return self.clock() - self.last_loss >= 1.0
        return self.mode == "lines" and self.clock() - self.last_line >= self.interval

    def update(self, step: int, epoch: int, loss: float | None, patches_per_s: float) -> None:
        """``loss`` None: the loss shown stays as it was (not read from the device this step)."""
        self.step, self.epoch, self.rate = step, epoch, patches_per_s
        if loss is not None:
            self.loss, self.last_loss = loss, self.clock()
        loss = self.loss
        if self.bar is not None:
            self.bar.set_postfix_str(f"epoch={epoch} loss={loss:.3f} {patches_per_s:.0f} patches/s", refresh=False)
            self.bar.update(step - self.bar.n)
        elif self.mode == "lines" and self.clock() - self.last_line >= self.interval:
            self._status_line()

    def epoch_end(self) -> None:
        if self.mode == "lines":
            self._status_line("epoch end")

    def _status_line(self, note: str = "") -> None:
        pct = 100.0 * self.step / self.total if self.total else 100.0
        self._line(
            f"{self.desc} step {self.step}/{self.total} ({pct:.0f}%) epoch {self.epoch} loss {self.loss:.3f} "
            f"{self.rate:.0f} patches/s elapsed {format_duration(self.clock() - self.t0)} "
            f"ETA {format_duration(self.eta())}{f' ({note})' if note else ''}"
        )

    def _line(self, text: str) -> None:
        self.last_line = self.clock()
        assert self.stream is not None  # (no stream: progress_mode is off, nothing is written)
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream never stops training
            self.mode = "off"

    @contextlib.contextmanager
    def write_mode(self) -> Iterator[None]:
        """Clear the bar(s) on this stream while something else prints a line, then redraw."""
        if self.bar is None:
            yield
            return
        from tqdm import tqdm

        with tqdm.external_write_mode(file=self.stream):
            yield

    def close(self, finished: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "lines":
            how = "finished" if finished else "stopped"
            self._line(f"{self.desc} {how} at step {self.step}/{self.total} after {format_duration(self.clock() - self.t0)}")
        self.mode = "off"


def tb_run_name(run_key: str, now: datetime | None = None) -> str:
    """``<UTC timestamp>-<run_key[:8]>``, e.g. ``20240501T120304Z-3fa2c1d0``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", run_key[:8])
    return f"{stamp}-{key}" if key else stamp


class Trainer:
    """Trains ``model`` on ``train_batches(epoch, skip)``, validating on ``val_batches()``.

    ``out_dir`` receives ``last.pt`` (every ``checkpoint_every`` steps and at the
    end), ``best.pt`` (best validation metric) and TensorBoard scalars in
    ``tb/<UTC timestamp>-<run_key[:8]>/``: a folder per run; a resumed run writes on in its own.
    ``meta`` is stored in every checkpoint (what evaluation needs to rebuild the model).
    ``feed`` makes each batch (train and validation) what the model and loss take, on the device
    (``storage.torch_data.Feed``: the model input from the feature's stored codes, the task's
    ``on_device`` targets); default ``Feed(task)``, for batches that already hold the model input.

    ``progress``: ``auto`` (a bar when ``progress_stream`` is a terminal, else
    plain lines; ``MIRPIPE_PROGRESS`` overrides), ``bar``, ``lines`` or ``off``.
    ``progress_stream`` defaults to ``sys.stderr`` at ``fit`` time; lines come every
    ``progress_interval`` seconds and at each epoch end.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        train_batches: Callable[[int, int], Batches],
        val_batches: Callable[[], Batches],
        settings: TrainerSettings,
        out_dir: Path,
        run_key: str,
        meta: CheckpointMeta | dict[str, Any] | None = None,
        log: Callable[[str], None] = print,
        tensorboard: bool = True,
        progress: str = "auto",
        progress_stream: TextIO | None = None,
        progress_interval: float = 30.0,
        feed: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ):
        if progress not in PROGRESS_MODES:
            raise ValueError(f"progress must be one of {PROGRESS_MODES}, not {progress!r}")
        self.settings = settings
        self.task = task
        if task.network is None:
            raise ConfigurationError(f"task {task.name!r} has no network to train")
        self.network: Network = task.network  # the trainer needs no decoder or scorer
        # the loader's compact batch -> the model's, on the device (model input, dtypes, on_device targets)
        self.feed = feed or Feed(task)
        self.train_batches = train_batches
        self.val_batches = val_batches
        self.out_dir = Path(out_dir)
        self.meta = meta or {}
        self.log = log
        self.progress, self.progress_stream, self.progress_interval = progress, progress_stream, progress_interval
        self._progress: TrainProgress | None = None
        self._losses = StepLosses()  # the steps' losses not yet read from the device
        torch.set_num_threads(settings.threads or default_threads())
        if settings.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.device = resolve_device(settings.device)
        self.amp = settings.amp and self.device.type == "cuda"
        torch.manual_seed(settings.seed)
        np.random.seed(settings.seed % 2**32)
        random.seed(settings.seed)
        self.model = model.to(self.device)
        if settings.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # the training steps' module: compiled (its state is the model's own, checkpoints unchanged)
        self.step_model: Callable[..., Any] = torch.compile(self.model) if settings.compile else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        if settings.lr_schedule == "cosine":
            self.scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=max(1, settings.max_epochs * settings.steps_per_epoch)
            )
        elif settings.lr_schedule == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=settings.lr_factor, patience=settings.lr_patience
            )
        else:
            raise ValueError(f"lr_schedule must be plateau or cosine, not {settings.lr_schedule!r}")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.state = TrainState(run_key=run_key)
        self.tensorboard = tensorboard
        # a SummaryWriter (imported lazily), opened by fit, once it knows whether this is a new run or a resumed one
        self.writer: Any = None
        self._writer_dir: Path | None = None

    # -- checkpoints -----------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def tb_dir(self) -> Path | None:
        """This run's TensorBoard folder (named when ``fit`` starts a run)."""
        return self.out_dir / "tb" / self.state.tb_run if self.state.tb_run else None

    def checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states(),
            "state": plain(asdict(self.state)),
            "settings": plain(self.settings.model_dump(mode="json")),
            "meta": plain(self.meta.to_json() if isinstance(self.meta, CheckpointMeta) else self.meta),
        }

    def save_last(self) -> None:
        self._read_losses()  # the checkpoint's epoch loss counts every step it holds
        atomic_save(self.checkpoint(), self.last_path)

    def try_resume(self) -> bool:
        """Continue an unfinished run with the same ``run_key``; anything else starts afresh."""
        if not self.last_path.exists():
            return False
        try:
            ckpt = load_checkpoint(self.last_path, map_location=self.device)  # never unpickles code
            state = TrainState(**ckpt["state"])
        except Exception as exc:  # noqa: BLE001 - a torn, foreign or unsafe file: start over, say so
            self.log(f"train: ignoring unreadable checkpoint {self.last_path}: {exc}")
            return False
        if state.run_key != self.state.run_key or state.finished:
            return False
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_states(ckpt["rng"])
        self.state = state
        self.log(f"train: resuming at step {state.global_step} (epoch {state.epoch}, step {state.step_in_epoch})")
        return True

    # -- loop ------------------------------------------------------------------
    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch on the device as the model and loss take it (``feed`` applied there)."""
        return self.feed({k: v.to(self.device, non_blocking=True) for k, v in batch.items()})

    def _forward(self, batch: dict[str, torch.Tensor], training: bool = False):
        x = batch[self.task.feature]
        if self.settings.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        model = self.step_model if training else self.model  # compiled for training steps only
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            return model(x)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        """One optimisation step. The loss and its parts come back as they are (detached tensors on
        the device): reading one would make the host wait for the device (``fit`` reads them at
        logging points, ``StepLosses``)."""
        self.model.train()
        batch = self._to_device(batch)
        outputs = self._forward(batch, training=True)
        total, parts = self.network.loss(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.settings.lr_schedule == "cosine":
            self.scheduler.step()
        return {"loss": total.detach(), **parts}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        loss_sum, n_batches, num, den = 0.0, 0, 0.0, 0.0
        for batch in self.val_batches():
            batch = self._to_device(batch)
            outputs = self._forward(batch)
            total, _ = self.network.loss(outputs, batch)
            loss_sum += float(total)
            n_batches += 1
            a, b = self.network.metric(outputs, batch)
            num, den = num + a, den + b
        return {
            "val_loss": loss_sum / max(n_batches, 1),
            self.network.metric_name: num / den if den else float("nan"),
        }

    def _start_run(self, resumed: bool) -> None:
        """Name a fresh run's TensorBoard folder; open the writer on this run's folder."""
        st = self.state
        if not st.tb_run:
            name = base = tb_run_name(st.run_key)
            n = 1
            while (self.out_dir / "tb" / name).exists():  # two runs started within one second
                name, n = f"{base}.{n}", n + 1
            st.tb_run = name
        if not self.tensorboard:
            return
        if self.writer is not None and self._writer_dir == self.tb_dir:
            return
        if self.writer is not None:
            self.writer.close()
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run repeats the steps after its last checkpoint: hide their first take
        self.writer = SummaryWriter(str(self.tb_dir), purge_step=st.global_step if resumed and st.global_step else None)
        self._writer_dir = self.tb_dir

    def _say(self, message: str) -> None:
        """``log`` a line without tearing the progress bar."""
        if self._progress is None:
            self.log(message)
        else:
            with self._progress.write_mode():
                self.log(message)

    def _scalar(self, tag: str, value: float, step: int | None = None) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.state.global_step if step is None else step)

    def _read_losses(self) -> None:
        """Bring the steps' losses since the last logging point to the host (one wait for the
        device), add them to the epoch's sum in step order and log them per step."""
        for step, parts in self._losses.read():
            self.state.epoch_loss_sum += parts["loss"]
            for k, v in parts.items():
                self._scalar(f"train/{k}", v, step)

    def _end_epoch(self, train_loss: float, patches_per_s: float) -> None:
        st = self.state
        val = self.validate()
        score = val[self.network.metric_name]
        if self.settings.lr_schedule == "plateau":
            assert isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            self.scheduler.step(score)
        improved = score > st.best_metric
        if improved:
            st.best_metric, st.best_step, st.bad_epochs = score, st.global_step, 0
        else:
            st.bad_epochs += 1
        lr = self.optimizer.param_groups[0]["lr"]
        row = {
            "epoch": st.epoch,
            "step": st.global_step,
            "train_loss": train_loss,
            **val,
            "lr": lr,
            "patches_per_s": patches_per_s,
        }
        st.history.append(row)
        for k in ("val_loss", self.network.metric_name):
            self._scalar(f"val/{k}", val[k])
        self._scalar("lr", lr)
        self._say(
            f"train[{self.task.name}] epoch {st.epoch}: step {st.global_step} loss {train_loss:.3f} "
            f"val_loss {val['val_loss']:.3f} {self.network.metric_name} {score:.3f} lr {lr:.2g} "
            f"{patches_per_s:.0f} patches/s{' *' if improved else ''}"
        )
        st.epoch += 1
        st.step_in_epoch = 0
        st.epoch_loss_sum = 0.0
        if st.bad_epochs >= self.settings.patience or st.epoch >= self.settings.max_epochs:
            st.finished = True
        if improved:
            atomic_save(self.checkpoint(), self.best_path)
        self._write_progress(row, score)

    @property
    def progress_path(self) -> Path:
        return self.out_dir / PROGRESS_FILE

    def _write_progress(self, row: dict[str, Any], score: float) -> None:
        """The last epoch's figures, atomically (``mirpipe status`` reads them while training runs)."""
        from mirpipe.storage.atomic import write_json

        st, s = self.state, self.settings

        def finite(x):
            return float(x) if x is not None and math.isfinite(x) else None

        write_json(
            self.progress_path,
            TrainingProgress(
                task=self.task.name,
                epoch=st.epoch,
                max_epochs=s.max_epochs,
                step=st.global_step,
                total_steps=s.max_epochs * s.steps_per_epoch,
                train_loss=finite(row["train_loss"]),
                val_loss=finite(row["val_loss"]),
                metric=self.network.metric_name,
                value=finite(score),
                best=finite(st.best_metric),
                best_step=st.best_step,
                lr=row["lr"],
                patches_per_s=finite(row["patches_per_s"]),
                finished=st.finished,
                tensorboard=str(self.tb_dir) if self.tb_dir else None,
                updated=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            ).to_json(),
        )

    def fit(self, stop_at_step: int | None = None) -> dict[str, Any]:
        """Train until early stopping or ``max_epochs``; ``stop_at_step`` interrupts (checkpointed) like a kill would.
        A stop request (``mirpipe.stop``: SIGTERM) saves ``last.pt`` after the current step and raises
        ``StopRequested``; the next run resumes from it exactly."""
        resumed = self.try_resume()
        st, s = self.state, self.settings
        self._start_run(resumed)
        t_start = time.perf_counter()
        stream = self.progress_stream if self.progress_stream is not None else sys.stderr
        self._progress = TrainProgress(
            self.progress,
            stream,
            f"train[{self.task.name}]",
            s.max_epochs * s.steps_per_epoch,
            start=st.global_step,
            interval=self.progress_interval,
        )
        try:
            while not st.finished and (stop_at_step is None or st.global_step < stop_at_step):
                t0, patches = time.perf_counter(), 0
                for batch in self.train_batches(st.epoch, st.step_in_epoch):
                    parts = self.train_step(batch)
                    st.global_step += 1
                    st.step_in_epoch += 1
                    patches += int(batch[self.task.feature].shape[0])
                    self._losses.add(st.global_step, parts)
                    epoch_done = st.step_in_epoch >= s.steps_per_epoch
                    checkpoint = st.global_step % s.checkpoint_every == 0 or st.global_step == stop_at_step
                    # logging points (and save_last): the only places the host waits for the device
                    logging = epoch_done or self._progress.wants_loss()
                    if logging:
                        self._read_losses()
                    rate = patches / max(time.perf_counter() - t0, 1e-9)
                    mean_loss = st.epoch_loss_sum / st.step_in_epoch if logging else None
                    self._progress.update(st.global_step, st.epoch, mean_loss, rate)
                    if epoch_done:
                        self._scalar("train/patches_per_s", rate)
                        self._end_epoch(st.epoch_loss_sum / st.step_in_epoch, rate)
                        self._progress.epoch_end()
                    if checkpoint or st.finished:
                        self.save_last()
                    if stop.requested() and not st.finished:  # SIGTERM: a walltime, a pre-emption
                        self.save_last()
                        raise StopRequested(
                            f"train[{self.task.name}]: stopped at step {st.global_step}, checkpoint {self.last_path}"
                        )
                    if epoch_done or st.global_step == stop_at_step:
                        break
            self.save_last()
        finally:
            self._progress.close(st.finished)
            self._progress = None
        if self.writer is not None:
            self.writer.flush()
        return {
            "steps": st.global_step,
            "epochs": st.epoch,
            "finished": st.finished,
            "best_metric": st.best_metric,
            "best_step": st.best_step,
            "metric": self.network.metric_name,
            "seconds": time.perf_counter() - t_start,
            "device": str(self.device),
            "amp": self.amp,
            "history": st.history,
        }

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
