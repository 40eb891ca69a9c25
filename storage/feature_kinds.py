"""Feature kinds: how a feature is computed once per track, and how a patch's model input
is cut from it by index arithmetic (a pitch shift is a bin offset; HCQT harmonics are
bin offsets of one wide CQT).

A kind stores a time-major ``(T, stored_bins)`` array per variant, with ``margin``
extra bins on each side for the largest pitch shift, and its geometry in the entry
attributes (``attrs["features"][name]``). ``view`` needs only that geometry, so a
streamer reads it from the entry, not from the configuration.

A new kind is one module: a ``FeatureKind`` subclass registered with
``@FEATURE_KINDS.register``; a task names it in ``Task.feature``; its parameters
are ``features.<name>`` in pipeline.yaml.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mirpipe.registry import Registry

if TYPE_CHECKING:
    import torch

Packer = Callable[[np.ndarray], dict[str, np.ndarray]]
DeviceView = Callable[[Mapping[str, "torch.Tensor"]], "torch.Tensor"]


class FeatureKind:
    name: ClassVar[str]
    version: ClassVar[str] = "1"  # bump when what ``compute`` stores changes
    Params: ClassVar[type[BaseModel]]
    # True when it implements ``geometry``, ``n_frames`` and ``context_samples``: the features stage then
    # computes it block by block (bounded memory); otherwise ``compute`` runs on the whole waveform
    blockwise: ClassVar[bool] = False

    # params: Any, each kind takes its own Params model (CQTParams, HCQTParams...)
    def hop_length(self, params: Any) -> int:
        return int(params.hop_length)

    def compute(self, y: np.ndarray, sr: int, params: Any, margin_semitones: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The stored ``(T, bins)`` array of one variant and its geometry (JSON-able)."""
        raise NotImplementedError

    def geometry(self, sr: int, params: Any, margin_semitones: int) -> dict[str, Any]:
        """The geometry ``compute`` returns, without computing anything."""
        raise NotImplementedError

    def n_frames(self, n_samples: int, params: Any, sr: int, margin_semitones: int) -> int:
        """Exactly the ``T`` of ``compute`` on ``n_samples`` samples at ``sr``."""
        raise NotImplementedError

    def context_samples(self, sr: int, params: Any, margin_semitones: int) -> int:
        """Samples of context on each side of a block (a multiple of the hop) so that the frames
        ``compute`` gives inside the block equal the whole track's, to rounding
        (``mirpipe.storage.blockwise``)."""
        raise NotImplementedError

    def viewer(self, geometry: Mapping[str, Any], shift: int) -> Callable[[np.ndarray], np.ndarray]:
        """What turns stored frames into the model input (float32) at a pitch shift of ``shift``
        semitones; built once per slab (the geometry is parsed and the shift checked here, not per patch)."""
        raise NotImplementedError

    def view(self, frames: np.ndarray, geometry: Mapping[str, Any], shift: int) -> np.ndarray:
        """The model input (float32) of stored frames at a pitch shift of ``shift`` semitones."""
        return self.viewer(geometry, shift)(frames)

    def input_bins(self, geometry: Mapping[str, Any]) -> int:
        """Frequency bins of the model input (what a network is built for)."""
        return int(geometry["n_bins"])

    def floor(self, frames: np.ndarray) -> Any:
        """The value that pads a short track's frames (silence)."""
        return frames.min() if frames.size else 0

    def octaves(self, geometry: Mapping[str, Any]) -> np.ndarray | None:
        """Where each bin of the model input lies, in octaves above its lowest bin, shaped to broadcast
        against one patch of it (batch axis dropped): what the feature-domain timbre deformations
        (``augment.eq_tilt_db``, ``augment.noise_snr_db``: gains in dB per octave) need. The model
        input must then be dB. None: the kind does not support them."""
        return None

    def db_floor(self, geometry: Mapping[str, Any]) -> float | None:
        """The dB value the stored frames cannot go below (silence), which ``augment.gain_db`` keeps
        where it is; None: each patch's own minimum stands in for it."""
        return None

    # -- what a training patch carries across a process boundary (loader workers -> trainer) ------
    def packer(self, geometry: Mapping[str, Any], shift: int) -> Packer:
        """What a training patch carries in place of the model input: compact arrays (the stored
        codes, not floats) keyed by part, ``""`` the frames (batch key ``<feature>``) and any other
        part under ``<feature>:<part>`` (e.g. the shift); built once per slab, like ``viewer``.
        ``device_view`` makes the model input from a batch of them on the trainer's device.
        Default: the model input itself."""
        view = self.viewer(geometry, shift)
        return lambda frames: {"": view(frames)}

    def device_view(self, geometry: Mapping[str, Any]) -> DeviceView:
        """torch, on whatever device the tensors are: the model input (float32, batch first) from
        a batch of ``packer``'s parts (stacked, keyed as there). It must equal the stacked ``viewer``
        output within float32 rounding. Default: the frames as float32."""
        return lambda parts: parts[""].float()


FEATURE_KINDS: Registry[FeatureKind] = Registry(
    "feature", builtin=("mirpipe.storage.feature_kinds",), entry_points="mirpipe.features", instantiate=True
)


def check_shift(geometry: Mapping[str, Any], shift: int) -> int:
    """Bins to move for ``shift`` semitones; refuses a shift beyond the stored margin."""
    bps = int(geometry["bins_per_octave"]) // 12
    if abs(shift) * bps > int(geometry["margin_bins"]):
        raise ValueError(
            f"a shift of {shift} semitones needs {abs(shift) * bps} margin bins; the entry holds "
            f"{geometry['margin_bins']} (recompute features with augment.shifts covering it)"
        )
    return shift * bps


class SemitoneGrid(BaseModel):
    """Settings of a log-frequency grid on which a pitch shift is a whole number of bins."""

    model_config = ConfigDict(extra="forbid")
    bins_per_octave: int = Field(36, ge=12)

    @model_validator(mode="after")
    def _semitones(self):
        if self.bins_per_octave % 12:
            raise ValueError(f"bins_per_octave must be a multiple of 12 (shifts are whole bins), got {self.bins_per_octave}")
        return self


class CQTParams(SemitoneGrid):
    """The chord CQT of McFee & Bello (2017): 6 octaves from C1, 36 bins/octave, ~10.8 frames/s."""

    hop_length: int = Field(2048, ge=32)
    fmin: float = Field(32.703195662574764, gt=0, description="Hz; C1")
    n_bins: int = Field(216, ge=12)
    amin: float = Field(1e-5, gt=0, description="floor of the magnitude before the log")


@FEATURE_KINDS.register
class CQT(FeatureKind):
    """Log-magnitude CQT in dB (absolute reference, float16), ``margin`` bins below and above."""

    name = "cqt"
    Params = CQTParams
    blockwise = True

    @staticmethod
    def _call(sr: int, params: CQTParams, margin_semitones: int) -> tuple[float, int]:
        """fmin and n_bins of the one ``librosa.cqt`` call (margin bins included)."""
        margin = margin_semitones * params.bins_per_octave // 12
        return params.fmin * 2.0 ** (-margin / params.bins_per_octave), params.n_bins + 2 * margin

    def compute(self, y: np.ndarray, sr: int, params: CQTParams, margin_semitones: int) -> tuple[np.ndarray, dict[str, Any]]:
        import librosa

        fmin, n_bins = self._call(sr, params, margin_semitones)
        C = np.abs(
            librosa.cqt(
                y,
                sr=sr,
                hop_length=params.hop_length,
                fmin=fmin,
                n_bins=n_bins,
                bins_per_octave=params.bins_per_octave,
            )
        )
        db = librosa.amplitude_to_db(C, ref=1.0, amin=params.amin, top_db=None).T.astype(np.float16)
        return db, self.geometry(sr, params, margin_semitones)

    def geometry(self, sr: int, params: CQTParams, margin_semitones: int) -> dict[str, Any]:
        return {
            "kind": self.name,
            "sr": sr,
            "hop_length": params.hop_length,
            "fmin": params.fmin,
            "n_bins": params.n_bins,
            "bins_per_octave": params.bins_per_octave,
            "margin_bins": margin_semitones * params.bins_per_octave // 12,
            "frame_rate": sr / params.hop_length,
        }

    def _plan(self, sr: int, params: CQTParams, margin_semitones: int):
        from .cqt_plan import cqt_plan

        fmin, n_bins = self._call(sr, params, margin_semitones)
        return cqt_plan(sr, params.hop_length, fmin, n_bins, params.bins_per_octave)

    def n_frames(self, n_samples: int, params: CQTParams, sr: int, margin_semitones: int) -> int:
        return self._plan(sr, params, margin_semitones).n_frames(n_samples)

    def context_samples(self, sr: int, params: CQTParams, margin_semitones: int) -> int:
        from .cqt_plan import context_from_reach

        return context_from_reach(self._plan(sr, params, margin_semitones).reach(), params.hop_length)

    def viewer(self, geometry: Mapping[str, Any], shift: int) -> Callable[[np.ndarray], np.ndarray]:
        start = int(geometry["margin_bins"]) - check_shift(geometry, shift)
        stop = start + int(geometry["n_bins"])
        return lambda frames: np.asarray(frames[..., start:stop], dtype=np.float32)

    def octaves(self, geometry: Mapping[str, Any]) -> np.ndarray:
        """``(n_bins,)``: the input is dB of a CQT with ``bins_per_octave``."""
        return np.arange(int(geometry["n_bins"]), dtype=np.float32) / np.float32(geometry["bins_per_octave"])

    def packer(self, geometry: Mapping[str, Any], shift: int) -> Packer:
        """The shifted bin window as stored (float16: half the bytes of the float32 view)."""
        start = int(geometry["margin_bins"]) - check_shift(geometry, shift)
        stop = start + int(geometry["n_bins"])
        return lambda frames: {"": frames[..., start:stop]}


class HCQTParams(SemitoneGrid):
    """The harmonic CQT of Bittner et al. (2017), kept as one wide 8-bit log-CQT per track:
    60 bins/octave, 6 octaves from C1, harmonics 0.5..5, hop 256 at 22050 Hz."""

    hop_length: int = Field(256, ge=32)
    fmin: float = Field(32.703195662574764, gt=0, description="Hz; C1, the lowest bin of harmonic 1")
    n_bins: int = Field(360, ge=12, description="bins per harmonic")
    bins_per_octave: int = Field(60, ge=12)
    harmonics: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
    amin: float = Field(1e-5, gt=0)
    quantize: bool = Field(True, description="store 8-bit codes over a fixed dB range (see mirpipe.storage.hcqt.DB_RANGE)")

    @model_validator(mode="after")
    def _harmonics(self):
        if not self.harmonics or min(self.harmonics) <= 0:
            raise ValueError(f"harmonics must be positive, got {self.harmonics}")
        return self


@FEATURE_KINDS.register
class HCQT(FeatureKind):
    """One wide log-CQT holding every harmonic; the (harmonic, time, frequency) stack is a view."""

    name = "hcqt"
    Params = HCQTParams
    blockwise = True

    @staticmethod
    def _geometry(sr: int, params: HCQTParams, margin_semitones: int):
        from .hcqt import WideCQT

        return WideCQT(
            sr=sr,
            hop_length=params.hop_length,
            fmin=params.fmin,
            bins_per_octave=params.bins_per_octave,
            n_bins=params.n_bins,
            harmonics=tuple(params.harmonics),
            margin_semitones=margin_semitones,
        )

    def compute(self, y: np.ndarray, sr: int, params: HCQTParams, margin_semitones: int) -> tuple[np.ndarray, dict[str, Any]]:
        from .hcqt import compute_wide_cqt, quantize_db

        geom = self._geometry(sr, params, margin_semitones)
        db = compute_wide_cqt(y, geom, amin=params.amin)
        stored = quantize_db(db) if params.quantize else db.astype(np.float16)
        return stored, self.geometry(sr, params, margin_semitones)

    def geometry(self, sr: int, params: HCQTParams, margin_semitones: int) -> dict[str, Any]:
        from .hcqt import DB_RANGE

        geom = self._geometry(sr, params, margin_semitones)
        return {
            "kind": self.name,
            "wide": geom.to_json(),
            "sr": sr,
            "hop_length": params.hop_length,
            "n_bins": params.n_bins,
            "bins_per_octave": params.bins_per_octave,
            "margin_bins": geom.margin_bins,
            "frame_rate": sr / params.hop_length,
            "db_range": list(DB_RANGE) if params.quantize else None,
        }

    def n_frames(self, n_samples: int, params: HCQTParams, sr: int, margin_semitones: int) -> int:
        from .hcqt import wide_cqt_plans

        return min(p.n_frames(n_samples) for p in wide_cqt_plans(self._geometry(sr, params, margin_semitones)))

    def context_samples(self, sr: int, params: HCQTParams, margin_semitones: int) -> int:
        from .cqt_plan import context_from_reach
        from .hcqt import wide_cqt_plans

        reach = max(p.reach() for p in wide_cqt_plans(self._geometry(sr, params, margin_semitones)))
        return context_from_reach(reach, params.hop_length)

    def viewer(self, geometry: Mapping[str, Any], shift: int) -> Callable[[np.ndarray], np.ndarray]:
        from .hcqt import WideCQT, dequantize_db, harmonic_view

        check_shift(geometry, shift)
        wide = WideCQT.from_json(geometry["wide"])
        db_range = geometry.get("db_range")

        def view(frames: np.ndarray) -> np.ndarray:
            db = dequantize_db(frames, *db_range) if db_range else np.asarray(frames, np.float32)
            return harmonic_view(db, wide, shift)

        return view

    def floor(self, frames: np.ndarray) -> Any:
        return 0 if frames.dtype == np.uint8 else super().floor(frames)

    def octaves(self, geometry: Mapping[str, Any]) -> np.ndarray:
        """``(harmonics, 1, n_bins)``: harmonic h's bin b lies log2(h) octaves above the grid's bin b."""
        from .hcqt import WideCQT

        wide = WideCQT.from_json(geometry["wide"])
        grid = np.arange(wide.n_bins, dtype=np.float32) / np.float32(wide.bins_per_octave)
        shift = np.log2(np.asarray(wide.harmonics, np.float32))
        return (grid[None, None, :] + (shift - shift.min())[:, None, None]).astype(np.float32)

    def db_floor(self, geometry: Mapping[str, Any]) -> float | None:
        """The bottom of the quantized range (code 0): what amin maps below."""
        db_range = geometry.get("db_range")
        return float(db_range[0]) if db_range else None

    def packer(self, geometry: Mapping[str, Any], shift: int) -> Packer:
        """The wide slab's stored codes (uint8, or float16 unquantized) and the shift: ``(T,
        wide bins)`` bytes instead of the ``(H, T, n_bins)`` float32 stack (13x fewer at the defaults)."""
        check_shift(geometry, shift)
        code = np.array(shift, np.int8)
        return lambda frames: {"": frames, "shift": code}

    def device_view(self, geometry: Mapping[str, Any]) -> DeviceView:
        """``harmonic_view`` of dequantized codes in torch, each patch at its own shift."""
        from .hcqt import WideCQT, torch_harmonic_view

        wide = WideCQT.from_json(geometry["wide"])
        db_range = geometry.get("db_range")
        return lambda parts: torch_harmonic_view(parts[""], parts["shift"], wide, db_range)


class MusicnnParams(BaseModel):
    """A pretrained tagger's embedding per frame: musicnn (Pons & Serra 2019, ISC licence), its
    MagnaTagATune model by default, run in torch from the checkpoint its PyPI wheel ships
    (``pip install --no-deps musicnn==0.1.0``; ``mirpipe.storage.musicnn``)."""

    model_config = ConfigDict(extra="forbid")
    model: Literal["MTT_musicnn", "MSD_musicnn"] = Field(
        "MTT_musicnn", description="the checkpoint: MagnaTagATune (50 tags, instruments among them) or Million Song Dataset"
    )
    layer: Literal["pooled", "penultimate"] = Field(
        "pooled",
        description="pooled: the 1506-d max and mean of the mid-end features (normalised); penultimate: the 200-d layer "
        "under the tags (7.5x smaller; 0.57 against 0.63 on the demo's unseen soundfont, docs/experiments/2026-12-07-instrument-embedding.md)",
    )
    window_frames: int = Field(64, ge=4, description="mel frames (256 samples at 16 kHz) pooled into one embedding: 64 -> 1.02 s")
    hop_frames: int = Field(16, ge=1, description="mel frames between embeddings: 16 -> 0.256 s (3.9 frames/s)")
    checkpoint_dir: str | None = Field(
        None, description="a folder holding the checkpoint's .index/.data files; default: the installed musicnn package's"
    )

    @model_validator(mode="after")
    def _window(self):
        if self.hop_frames > self.window_frames:
            raise ValueError(
                f"hop_frames ({self.hop_frames}) must not exceed window_frames ({self.window_frames}): frames would skip audio"
            )
        return self


@FEATURE_KINDS.register
class Musicnn(FeatureKind):
    """musicnn's 200-d penultimate layer, or its pooled mid-end features (float16), over windows, computed
    at 16 kHz (the waveform resampled from the store's rate). Frame t is centred on t * hop.

    An embedding has no frequency axis: a pitch shift is not a bin offset, so a patch reads the
    unshifted frames at every shift (margin 0). Use it for tasks whose targets do not move under a
    shift (instrument)."""

    name = "musicnn"
    version = "1"
    Params = MusicnnParams
    DIMS: ClassVar[dict[str, int]] = {"penultimate": 200, "pooled": 1506}

    def hop_length(self, params: MusicnnParams) -> int:
        from .musicnn import FFT_HOP

        return params.hop_frames * FFT_HOP

    @staticmethod
    def _resampled_length(n_samples: int, sr: int) -> int:
        from .musicnn import SR

        return n_samples if sr == SR else int(np.ceil(n_samples * SR / sr))  # librosa.resample's length

    def compute(self, y: np.ndarray, sr: int, params: MusicnnParams, margin_semitones: int) -> tuple[np.ndarray, dict[str, Any]]:
        import librosa

        from .musicnn import SR, embed

        y16 = np.asarray(y, np.float32) if sr == SR else librosa.resample(np.asarray(y, np.float32), orig_sr=sr, target_sr=SR)
        layers = embed(y16, params.window_frames, params.hop_frames, params.model, params.checkpoint_dir)
        return layers[params.layer].astype(np.float16), self.geometry(sr, params, margin_semitones)

    def geometry(self, sr: int, params: MusicnnParams, margin_semitones: int) -> dict[str, Any]:
        from .musicnn import FFT_HOP, SR

        return {
            "kind": self.name,
            "model": params.model,
            "layer": params.layer,
            "sr": SR,  # the frame grid is in samples at the network's rate
            "hop_length": params.hop_frames * FFT_HOP,
            "window": params.window_frames * FFT_HOP,
            "n_bins": self.DIMS[params.layer],
            "margin_bins": 0,
            "frame_rate": SR / (params.hop_frames * FFT_HOP),
        }

    def n_frames(self, n_samples: int, params: MusicnnParams, sr: int, margin_semitones: int) -> int:
        from .musicnn import n_mel_frames

        return 1 + (n_mel_frames(self._resampled_length(n_samples, sr)) - 1) // params.hop_frames

    def viewer(self, geometry: Mapping[str, Any], shift: int) -> Callable[[np.ndarray], np.ndarray]:
        """``(1, T, dims)`` float32 (one channel, like the HCQT view's harmonics axis); any shift reads the unshifted frames."""
        return lambda frames: np.asarray(frames, dtype=np.float32)[None]

    def floor(self, frames: np.ndarray) -> Any:
        return 0

    def packer(self, geometry: Mapping[str, Any], shift: int) -> Packer:
        """The frames as stored (float16: half the bytes of the float32 view)."""
        return lambda frames: {"": frames}

    def device_view(self, geometry: Mapping[str, Any]) -> DeviceView:
        return lambda parts: parts[""].float()[:, None]
