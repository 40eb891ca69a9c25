"""Audio deformations beyond pitch shifts, stored as extra variants of a track's entry.

``augment.deformations`` lists them, e.g.::

    deformations:
      - {kind: drc, preset: music standard}   # muda's dynamic range compression (sox's compand)
      - {kind: noise, color: pink, weight: [0.05, 0.3]}   # muda's coloured noise
      - {kind: ir, rt60_s: 0.8}                # a synthetic room (or ``file: hall.wav``, a measured one)

The features stage stores each as one more variant of every entry, unshifted: in feature mode
a patch from it is shifted by bin offsets like the original's; in audio mode it is streamed at
shift 0. Training draws a deformed variant for ``augment.deform_share`` of its activations;
evaluation reads the original variants only.

Each kind is a muda deformer, subclassed so that the two halves can run apart:

- **annotations** move through muda's own ``_transform`` (IR convolution shifts every time by
  the impulse response's median group delay, as muda does; compression and noise move nothing);
- **audio** is deformed by ``apply(y, sr, state, offset)`` with its length kept (every variant of
  an entry has the same frame grid): on the whole waveform, or on each block of a long track with
  its context (``storage.blockwise``), so a recording of hours is never whole in memory.

The state of a track (noise weight, IR and its group delay) derives from a per-track seed, so
the features and the targets of one track, computed in different runs, agree.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import warnings
from copy import copy, deepcopy
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mirpipe.registry import Registry

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # muda imports pkg_resources
    import muda
    from muda.deformers import DynamicRangeCompression, IRConvolution
    from muda.deformers.colorednoise import ColoredNoise, noise_generator
    from muda.deformers.ir import median_group_delay
    from muda.deformers.sox import PRESETS, drc


def track_seed(track: str, label: str) -> int:
    """A 32-bit seed for one deformation of one track, stable across processes and runs."""
    return int.from_bytes(hashlib.sha256(f"{track}\0{label}".encode()).digest()[:4], "little")


class Deformation:
    """One kind of deformation (``kind:`` in ``augment.deformations``): its settings (``Params``)
    and the muda deformer that does it (``transformer``)."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    @staticmethod
    def label(params: Any) -> str:
        """The variant's name in an entry (``attrs["deformations"]``): kind and settings."""
        raise NotImplementedError

    @staticmethod
    def transformer(params: Any, seed: int) -> Any:
        """The muda deformer for one track: ``state(sr)``, ``apply(y, sr, state, offset)``, and muda's
        ``_transform`` for the annotations."""
        raise NotImplementedError


DEFORMATIONS: Registry[type[Deformation]] = Registry(
    "deformation", builtin=("mirpipe.audio.deformations",), entry_points="mirpipe.deformations"
)


class _Packed:
    """Audio only where muda packed it: the features stage deforms the waveform itself, so
    ``_transform`` on a JAMS without audio moves the annotations alone."""

    def audio(self, mudabox: Any, state: dict[str, Any]) -> None:
        box = getattr(mudabox, "_audio", None)
        if box is not None:
            box["y"] = self.apply(box["y"], box["sr"], state, 0)

    def apply(self, y: np.ndarray, sr: int, state: dict[str, Any], offset: int) -> np.ndarray:
        raise NotImplementedError


# -- dynamic range compression ------------------------------------------------------------------


class DrcParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["drc"] = "drc"
    preset: str = Field("music standard", description=f"muda's preset (sox compand): {', '.join(PRESETS)}")

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown drc preset {v!r}; muda's presets are: {', '.join(PRESETS)}")
        if shutil.which("sox") is None:
            raise ValueError("a drc deformation needs the 'sox' program (Debian package sox; scripts/system-deps.sh)")
        return v


class Compression(_Packed, DynamicRangeCompression):
    """muda's ``DynamicRangeCompression``: sox's compand with a preset; times do not move (sox
    compensates the presets' look-ahead delay: tests/test_deformations.py checks the alignment)."""

    def state(self, sr: int) -> dict[str, Any]:
        return {"preset": self.preset[0]}

    def apply(self, y: np.ndarray, sr: int, state: dict[str, Any], offset: int) -> np.ndarray:
        out = np.asarray(drc(np.asarray(y, np.float64), sr, state["preset"]), np.float32)
        return _same_length(out, len(y))


@DEFORMATIONS.register
class DrcDeformation(Deformation):
    name = "drc"
    Params = DrcParams

    @staticmethod
    def label(params: DrcParams) -> str:
        return f"drc:{params.preset.replace(' ', '-')}"

    @staticmethod
    def transformer(params: DrcParams, seed: int) -> Compression:
        return Compression(preset=params.preset)


# -- coloured noise -----------------------------------------------------------------------------


class NoiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["noise"] = "noise"
    color: Literal["white", "pink", "brownian"] = Field("pink", description="muda's noise colours")
    weight: tuple[float, float] = Field(
        (0.05, 0.3), description="the noise's weight in muda's mix (1 - w) x + w n (peaks equal), drawn per track in [low, high]"
    )

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] < v[1] < 1:
            raise ValueError(f"noise weight must be [low, high] with 0 < low < high < 1 (muda's range), got {list(v)}")
        return v


class Noise(_Packed, ColoredNoise):
    """muda's ``ColoredNoise`` mix ``(1 - w) x + w n`` with ``x`` and ``n`` at equal peaks, at the
    recording's own level (muda normalises the recording to full scale first; a level change is
    not this deformation's job). The noise of a block is seeded by its first sample."""

    def state(self, sr: int) -> dict[str, Any]:
        weight = float(self._rng.uniform(self.weight_min, self.weight_max))
        return {"color": self.color[0], "weight": weight, "seed": int(self._rng.randint(0, 2**31 - 1))}

    def apply(self, y: np.ndarray, sr: int, state: dict[str, Any], offset: int) -> np.ndarray:
        y = np.asarray(y, np.float32)
        peak = float(np.max(np.abs(y))) if len(y) else 0.0
        if peak == 0.0 or len(y) < 2:
            return y
        rng = np.random.RandomState(track_seed(str(state["seed"]), str(offset)))
        noise = noise_generator(y, sr, state["color"], rng)
        noise = _same_length(noise, len(y))
        noise *= peak / max(float(np.max(np.abs(noise))), 1e-12)
        w = state["weight"]
        return ((1.0 - w) * y + w * noise).astype(np.float32)


@DEFORMATIONS.register
class NoiseDeformation(Deformation):
    name = "noise"
    Params = NoiseParams

    @staticmethod
    def label(params: NoiseParams) -> str:
        return f"noise:{params.color}:{params.weight[0]:g}-{params.weight[1]:g}"

    @staticmethod
    def transformer(params: NoiseParams, seed: int) -> Noise:
        return Noise(n_samples=1, color=[params.color], weight_min=params.weight[0], weight_max=params.weight[1], rng=seed)


# -- impulse response ---------------------------------------------------------------------------


class IrParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["ir"] = "ir"
    file: Path | None = Field(None, description="a measured impulse response (any audio file librosa reads)")
    rt60_s: float | None = Field(
        None, gt=0.05, le=8.0, description="or a synthetic room: a direct path and an exponentially decaying tail of this RT60"
    )
    direct_to_reverberant_db: float = Field(
        0.0, ge=-20, le=30, description="a synthetic room's direct-to-reverberant energy ratio"
    )

    @model_validator(mode="after")
    def _one(self) -> IrParams:
        if (self.file is None) == (self.rt60_s is None):
            raise ValueError("an ir deformation takes either file (a measured impulse response) or rt60_s (a synthetic room)")
        if self.file is not None and not self.file.is_file():
            raise ValueError(f"impulse response {self.file}: no such file")
        return self


def synthetic_room(sr: int, rt60_s: float, drr_db: float) -> np.ndarray:
    """A room's impulse response: a unit direct path, then a noise tail from 2 ms on decaying by
    60 dB in ``rt60_s`` with ``drr_db`` of direct-to-reverberant energy (one fixed noise per room)."""
    n = int(round(rt60_s * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(track_seed("room", f"{rt60_s:g}:{drr_db:g}:{sr}"))
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)
    tail[: int(0.002 * sr)] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    tail[0] = 1.0
    return tail.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _impulse_response(source: str, sr: int, rt60_s: float | None, drr_db: float) -> np.ndarray:
    if rt60_s is not None:
        return synthetic_room(sr, rt60_s, drr_db)
    import librosa

    y, _ = librosa.load(source, sr=sr, mono=True)
    if not len(y) or not np.any(y):
        raise ValueError(f"impulse response {source}: silent or empty")
    return y.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _group_delay(source: str, sr: int, rt60_s: float | None, drr_db: float, n_fft: int, rolloff: float) -> float:
    """muda's median group delay of a response (once per process: every track of a run asks)."""
    response = _impulse_response(source, sr, rt60_s, drr_db)
    return float(median_group_delay(y=response, sr=sr, n_fft=n_fft, rolloff_value=rolloff))


class Reverb(_Packed, IRConvolution):
    """muda's ``IRConvolution`` with the length kept (muda convolves in full, longer than the
    recording); every annotation moves by the response's median group delay, as muda does. A
    block of a long track carries the context ``storage.blockwise`` gives it: a tail longer than
    that context is cut at block boundaries."""

    def __init__(self, ir_files: str, rt60_s: float | None = None, drr_db: float = 0.0):
        IRConvolution.__init__(self, ir_files)
        self.rt60_s, self.drr_db = rt60_s, drr_db

    def response(self, sr: int) -> np.ndarray:
        return _impulse_response(self.ir_files[0], sr, self.rt60_s, self.drr_db)

    def states(self, jam: Any):
        yield self.state(jam.sandbox.muda._audio["sr"])

    def state(self, sr: int) -> dict[str, Any]:
        delay = _group_delay(self.ir_files[0], sr, self.rt60_s, self.drr_db, self.n_fft, self.rolloff_value)
        return {"filename": self.ir_files[0], "ir_groupdelay": delay, "sr": sr}

    def apply(self, y: np.ndarray, sr: int, state: dict[str, Any], offset: int) -> np.ndarray:
        import scipy.signal

        out = scipy.signal.fftconvolve(np.asarray(y, np.float32), self.response(sr))[: len(y)]
        return out.astype(np.float32)


@DEFORMATIONS.register
class IrDeformation(Deformation):
    name = "ir"
    Params = IrParams

    @staticmethod
    def label(params: IrParams) -> str:
        if params.rt60_s is not None:
            return f"room:{params.rt60_s:g}s:{params.direct_to_reverberant_db:g}dB"
        return f"ir:{params.file.stem if params.file else ''}"

    @staticmethod
    def transformer(params: IrParams, seed: int) -> Reverb:
        source = str(params.file) if params.file is not None else IrDeformation.label(params)
        return Reverb(source, params.rt60_s, params.direct_to_reverberant_db)


# -- the features stage's side ------------------------------------------------------------------


def validate_deformation(raw: Any) -> BaseModel:
    """One entry of ``augment.deformations`` as its kind's settings."""
    if isinstance(raw, BaseModel):
        return raw
    if not isinstance(raw, dict) or "kind" not in raw:
        raise ValueError(f"a deformation is a mapping with a 'kind' ({', '.join(DEFORMATIONS.names())}), got {raw!r}")
    return DEFORMATIONS.get(raw["kind"]).Params.model_validate(raw)


def label_of(params: BaseModel) -> str:
    return DEFORMATIONS.get(params.kind).label(params)  # type: ignore[attr-defined]


class TrackDeformation:
    """One deformation of one track: its state (from the track's seed) and both halves."""

    def __init__(self, params: BaseModel, track: str, sr: int):
        self.label = label_of(params)
        self.transformer = DEFORMATIONS.get(params.kind).transformer(params, track_seed(track, self.label))  # type: ignore[attr-defined]
        self.sr = sr
        self.state: dict[str, Any] = self.transformer.state(sr)

    def audio(self, y: np.ndarray, offset: int = 0) -> np.ndarray:
        """``y`` (mono at the stage's rate; ``offset``: its first sample in the track) deformed, same length."""
        return self.transformer.apply(y, self.sr, self.state, offset)

    def annotations(self, jam: Any) -> Any:
        """A deformed copy of ``jam`` (muda's ``_transform``: the history in ``sandbox.muda``); ``jam`` is untouched."""
        jam = copy(jam)
        jam.sandbox = deepcopy(jam.sandbox)
        if not hasattr(jam.sandbox, "muda"):
            muda.jam_pack(jam)
        return self.transformer._transform(jam, self.state)


def _same_length(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, np.float32)
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
