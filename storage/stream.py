"""Out-of-core patch streams over the feature store, built on pescador.

One ``pescador.Streamer`` per track is given only keys (backend, root, track):
pescador deep-copies streamer arguments on every activation, so arrays or open
handles would be copied each time. An activation draws a pitch shift from the
spec's list, reads one slab of the entry and cuts many random patches from it
(one read per patch starves a trainer). A shift the entry stores as a variant
(audio mode) is read as it is; any other is the unshifted variant seen through a
bin offset (the feature kind's ``view``) with the targets moved by the task
(``transpose``): index arithmetic instead of stored copies. A ``StochasticMux`` per *shard* mixes the streamers; the
batch sequence round-robins over a fixed number of shards, so a worker count
that divides the shard count changes who computes a batch, never which batch
it is. A mux may weight its streamers (``weights``: one per track, e.g. so every class is
drawn about equally often). Seeds derive from (seed, epoch, shard, streamer, activation): pescador
muxes re-seed identically on every ``iterate()``, so an epoch must bring its own.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pescador

from mirpipe.shifts import Timbre

from .base import open_store
from .feature_kinds import FEATURE_KINDS, FeatureKind
from .memory_store import preload_memory  # noqa: F401 - re-exported for benchmarks and tests

IGNORE = -1  # target value of padded frames: losses skip them


def derive_seed(*parts: Any) -> int:
    """A 32-bit seed from any tuple of values, stable across processes and runs."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class EntryKey:
    track: str
    n_frames: int  # frames of the streamed feature


@dataclass(frozen=True)
class StreamSpec:
    """Where entries live and what a patch holds; small and picklable."""

    backend: str  # a registered store backend (zarr, hdf5, memory)
    root: str  # store root, or the name of a preloaded memory store
    feature: str
    targets: tuple[str, ...]
    patch_frames: int = 128
    slab_frames: int = 1024  # frames read per activation (a whole track when shorter)
    shifts: tuple[int, ...] = (0,)  # semitones an activation draws from
    task: Any = None  # what moves the targets under a shift (``targets.transpose(targets, n)``) and derives batch
    # targets from stored ones (``network.prepare_batch(batch)``); None: only shift 0, batches as stored
    # the streamed feature's geometry, as every entry must hold it: set, a patch carries the kind's compact
    # parts (``FeatureKind.packer``: stored codes, not floats) and the trainer's ``torch_data.Feed`` makes
    # the model input on its device (``FeatureKind.device_view``); None, a patch carries the model input
    geometry: Mapping[str, Any] | None = field(default=None, hash=False)
    # feature-domain timbre deformations (``augment.eq_tilt_db``, ``noise_snr_db``, ``gain_db``): each patch
    # draws its parameters (``aug:tilt``, ``aug:snr``, ``aug:colour``, ``aug:gain``), the trainer's ``Feed``
    # applies them
    timbre: Timbre | None = None
    # stored deformed variants (``augment.deformations``, by label): an activation reads one of them with
    # probability ``deform_share`` (each equally often), the original audio otherwise
    deformations: tuple[str, ...] = ()
    deform_share: float = 0.5

    @property
    def names(self) -> list[str]:
        return [self.feature, *self.targets]

    def prepare(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A stacked batch with the task's derived targets (``task.network.prepare_batch``)."""
        return batch if self.task is None else self.task.network.prepare_batch(batch)


def resolve_shift(attrs: dict[str, Any], shift: int, deformation: str | None = None) -> tuple[int, int]:
    """(stored variant, residual shift taken by index arithmetic) of a patch at ``shift`` of the
    original audio, or of the variant a ``deformation`` made (``augment.deformations``: stored
    unshifted; in audio mode, where entries hold no margin, it is read at shift 0)."""
    variants = list(attrs.get("variants", [0]))
    labels = list(attrs.get("deformations") or [None] * len(variants))
    if deformation is not None:
        if deformation not in labels:
            held = [d for d in labels if d is not None]
            raise ValueError(
                f"entry {attrs.get('track')}: no variant of deformation {deformation!r} (it holds {held or 'none'}): "
                "rerun features with these augment.deformations"
            )
        v = labels.index(deformation)
        return (v, 0) if attrs.get("mode") == "audio" else (v, shift - variants[v])
    original = [n if d is None else None for n, d in zip(variants, labels)]
    if shift in original:
        return original.index(shift), 0
    if 0 not in original:
        raise ValueError(f"entry {attrs.get('track')}: no variant for shift {shift} and no unshifted one")
    return original.index(0), shift


class HandleCache:
    """Open array handles of recently streamed entries, per process (never shared across a fork).

    Each slab read then costs the chunk reads alone, not the metadata of a fresh open.
    """

    def __init__(self, size: int = 256):
        self.size = size
        self.pid = os.getpid()
        self.handles: OrderedDict[tuple, tuple[dict[str, Any], dict[str, Any], Any]] = OrderedDict()

    def arrays(self, spec: StreamSpec, key: EntryKey) -> tuple[dict[str, Any], dict[str, Any]]:
        """Open handles of the spec's arrays in an entry, and the entry's attributes."""
        if self.pid != os.getpid():  # a forked DataLoader worker: the parent's handles are not ours
            self.handles, self.pid = OrderedDict(), os.getpid()
        k = (spec.backend, spec.root, key.track, tuple(spec.names))
        if k in self.handles:
            self.handles.move_to_end(k)
            return self.handles[k][:2]
        store = open_store(spec.backend, spec.root)
        with store.reading(key.track, spec.names):
            opened = store.open_arrays(key.track, spec.names)
        self.handles[k] = opened
        while len(self.handles) > self.size:
            _, (_, _, owner) = self.handles.popitem(last=False)
            if owner is not None:
                owner.close()
        return opened[:2]

    def clear(self) -> None:
        for _, _, owner in self.handles.values():
            if owner is not None:
                owner.close()
        self.handles.clear()


_HANDLES = HandleCache()


def part_key(feature: str, part: str) -> str:
    """The batch key of a part of a packed patch (``FeatureKind.packer``): ``""`` is the feature's own."""
    return f"{feature}:{part}" if part else feature


@dataclass
class Slab:
    """Stored frames of one variant, the residual shift still to apply, and how to view them."""

    frames: np.ndarray  # the feature as stored (T, bins)
    targets: dict[str, np.ndarray]  # already moved by the residual shift
    shift: int
    kind: FeatureKind
    # stored frames -> what a patch carries at ``shift``, by part (built once per slab): the model input
    # (``{"": viewer(frames)}``) or the kind's compact parts (``packer``)
    view: Callable[[np.ndarray], dict[str, np.ndarray]]

    def __len__(self) -> int:
        return self.frames.shape[0]

    def patch(self, feature: str, at: int, n: int) -> dict[str, np.ndarray]:
        out = {part_key(feature, part): a for part, a in self.view(self.frames[at : at + n]).items()}
        for name, a in self.targets.items():
            out[name] = a[at : at + n]
        return out

    def pad(self, n: int) -> Slab:
        """Padded to ``n`` frames: the feature with its floor (silence), targets with ``IGNORE``."""
        missing = n - len(self)
        if missing <= 0:
            return self
        fill = self.kind.floor(self.frames)
        frames = np.concatenate([self.frames, np.full((missing,) + self.frames.shape[1:], fill, self.frames.dtype)])
        targets = {k: np.concatenate([a, np.full((missing,) + a.shape[1:], IGNORE, a.dtype)]) for k, a in self.targets.items()}
        return replace(self, frames=frames, targets=targets)


def read_slab(spec: StreamSpec, key: EntryKey, start: int, stop: int, shift: int = 0, deformation: str | None = None) -> Slab:
    """Frames [start, stop) of an entry at a pitch shift (a stored variant, or a bin offset), of the
    original audio or of a stored deformation's variant."""
    arrays, attrs = _HANDLES.arrays(spec, key)
    variant, residual = resolve_shift(attrs, shift, deformation)
    try:
        targets = {n: np.asarray(arrays[n][variant, start:stop]) for n in spec.targets}
        frames = np.asarray(arrays[spec.feature][variant, start:stop])
    except Exception as exc:  # noqa: BLE001 - a damaged chunk: named by its entry and arrays (the runner heals it)
        raise open_store(spec.backend, spec.root).read_error(key.track, spec.names, exc) from exc
    if residual:
        if spec.task is None:
            raise ValueError(f"a shift of {residual} semitones needs the task that moves the targets")
        targets = spec.task.targets.transpose(targets, residual)
    geometry = attrs["features"][spec.feature]
    kind = FEATURE_KINDS.get(geometry["kind"])
    if spec.geometry is None:
        view = kind.viewer(geometry, residual)
        return Slab(frames, targets, residual, kind, lambda f: {"": view(f)})
    if geometry != spec.geometry:
        raise ValueError(
            f"entry {key.track}: its {spec.feature} geometry {geometry} is not the stream's {dict(spec.geometry)} "
            "(entries written with other feature settings: rerun features)"
        )
    return Slab(frames, targets, residual, kind, kind.packer(geometry, residual))


# an activation's generators besides its own (``seed``), each seeded ``(seed, n)``: adding draws to one
# leaves the others' draws as they were, and no two share a seed (their draws would be the same numbers)
SUBSTREAMS = {"timbre": 1, "deformation": 2, "gain": 3}


def random_patches(spec: StreamSpec, key: EntryKey, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Endless random patches from one slab of one entry at one drawn shift (the mux decides how many to take)."""
    rng = np.random.default_rng(seed)
    shift = int(spec.shifts[int(rng.integers(0, len(spec.shifts)))])
    slab_len = min(key.n_frames, max(spec.slab_frames, spec.patch_frames))
    start = int(rng.integers(0, key.n_frames - slab_len + 1))
    deformation = None
    if spec.deformations:  # from a generator of its own: without deformations, draws are as before them
        deform_rng = np.random.default_rng((seed, SUBSTREAMS["deformation"]))
        if deform_rng.random() < spec.deform_share:
            deformation = spec.deformations[int(deform_rng.integers(0, len(spec.deformations)))]
    slab = read_slab(spec, key, start, start + slab_len, shift, deformation).pad(spec.patch_frames)
    # timbre draws come from a generator of their own: patches and shifts are those without them
    timbre = spec.timbre
    timbre_rng, gain_rng = (np.random.default_rng((seed, SUBSTREAMS[name])) for name in ("timbre", "gain"))
    while True:
        at = int(rng.integers(0, len(slab) - spec.patch_frames + 1))
        patch = slab.patch(spec.feature, at, spec.patch_frames)
        if timbre is not None:
            patch.update(draw_timbre(timbre, timbre_rng, gain_rng))
        yield patch


NOISE_COLOURS_DB_PER_OCTAVE = (3.0, 0.0, -3.0)  # white, pink, brown noise, as power per constant-Q bin


def draw_timbre(timbre: Timbre, rng: np.random.Generator, gain_rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One patch's timbre parameters: EQ tilt (dB/octave), noise SNR (dB; NaN: no noise), the
    noise's colour (dB/octave per constant-Q bin: white +3, pink 0, brown -3) and a gain (dB).
    The gain draws from a generator of its own, so that tilt and noise draw as they did before it."""
    tilt = rng.uniform(-timbre.tilt_db, timbre.tilt_db) if timbre.tilt_db else 0.0
    snr, colour = np.nan, 0.0
    if timbre.snr_db is not None and rng.random() < timbre.noise_share:
        snr = rng.uniform(*timbre.snr_db)
        colour = NOISE_COLOURS_DB_PER_OCTAVE[int(rng.integers(0, len(NOISE_COLOURS_DB_PER_OCTAVE)))]
    gain = gain_rng.uniform(-timbre.gain_db, timbre.gain_db) if timbre.gain_db else 0.0
    values = (("aug:tilt", tilt), ("aug:snr", snr), ("aug:colour", colour), ("aug:gain", gain))
    return {name: np.array(v, np.float32) for name, v in values}


class PatchStreamer(pescador.Streamer):
    """A streamer of one entry whose every activation draws a fresh, reproducible seed."""

    def __init__(self, spec: StreamSpec, key: EntryKey, seed: int):
        super().__init__(random_patches, spec, key)
        self.base_seed = seed
        self.activations_ = 0

    def __enter__(self, *args, **kwargs):
        if not self.is_activated_copy:
            self.activations_ += 1  # the copy made below sees the new count
        return super().__enter__(*args, **kwargs)

    def _activate(self) -> None:
        spec, key = self.args
        self.stream_ = random_patches(spec, key, derive_seed(self.base_seed, self.activations_))


class WeightedMux(pescador.StochasticMux):
    """A ``StochasticMux`` that also *activates* streamers in proportion to their weights.

    pescador 3.0 draws the streamer to activate uniformly (its ``distribution_``); the weights
    only tilt sampling among the active ones, and a rate limit then undoes the tilt (pescador
    issue #161): 12 tracks of one class and 2 of another still stream ~6:1. Here each
    activation draws by weight, so a streamer's share of patches follows its weight.
    """

    def _new_stream(self, idx):
        if self.mode == "with_replacement":
            live = np.where(self.distribution_ > 0, self.weights, 0.0)
            if live.sum() > 0:
                self.distribution_ = live / live.sum()
        super()._new_stream(idx)


@dataclass(frozen=True)
class MuxSettings:
    batch_size: int = 32
    n_active: int = 16
    rate: float = 16.0
    mode: str = "with_replacement"  # or single_active, exhaustive
    n_shards: int = 4


class PatchStream:
    """Endless batches of random patches over a set of entries, reproducible from a seed."""

    def __init__(
        self, spec: StreamSpec, keys: Sequence[EntryKey], mux: MuxSettings, seed: int, weights: Mapping[str, float] | None = None
    ):
        if not keys:
            raise ValueError("no store entries to stream from (is the split empty?)")
        self.spec = spec
        self.keys = sorted(keys, key=lambda k: k.track)
        # a sampling weight per track (e.g. class-balanced: ``Task.stream_weights``); None: uniform
        self.weights = None if weights is None else {k.track: float(weights[k.track]) for k in self.keys}
        if self.weights is not None and not all(w > 0 and np.isfinite(w) for w in self.weights.values()):
            raise ValueError("stream weights must be positive and finite")
        self.mux = mux
        self.seed = seed
        self.n_shards = min(mux.n_shards, len(self.keys))
        _HANDLES.clear()  # a long-lived worker may hold handles of entries rewritten since

    def check_workers(self, n_workers: int) -> None:
        if self.n_shards % max(1, n_workers) != 0:
            raise ValueError(
                f"{n_workers} loader workers do not divide the {self.n_shards} stream shards; "
                "choose a worker count that divides n_shards so batches do not depend on it"
            )

    def shard_batches(self, epoch: int, shard: int) -> Iterator[dict[str, np.ndarray]]:
        keys = self.keys[shard :: self.n_shards]
        streamers = [PatchStreamer(self.spec, k, derive_seed(self.seed, epoch, shard, i)) for i, k in enumerate(keys)]
        n_active = self.mux.n_active if self.mux.mode == "with_replacement" else min(self.mux.n_active, len(streamers))
        weights = None if self.weights is None else np.array([self.weights[k.track] for k in keys])
        mux = (pescador.StochasticMux if weights is None else WeightedMux)(
            streamers,
            n_active=n_active,
            rate=self.mux.rate,
            mode=self.mux.mode,
            weights=weights,
            random_state=derive_seed(self.seed, epoch, shard, "mux"),
        )
        return map(self.spec.prepare, pescador.buffer_stream(mux.iterate(), self.mux.batch_size))

    def batches(self, epoch: int, worker: int = 0, n_workers: int = 1, skip: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Global batches ``skip + worker``, ``skip + worker + n_workers``, ... of an epoch.

        Batch ``j`` always comes from shard ``j % n_shards``; a worker drops its shards'
        batches before ``skip`` without yielding them (resuming mid-epoch).
        """
        self.check_workers(n_workers)
        shards: dict[int, Iterator] = {}
        index = skip + worker
        while True:
            shard = index % self.n_shards
            if shard not in shards:
                shards[shard] = self.shard_batches(epoch, shard)
                for _ in range(max(0, (skip - shard + self.n_shards - 1) // self.n_shards)):
                    next(shards[shard])
            yield next(shards[shard])
            index += n_workers


def track_patches(spec: StreamSpec, keys: Sequence[EntryKey], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Whole tracks (unshifted) cut into consecutive patches, in a fixed order, for validation.

    The last patch of a track is padded (targets ``IGNORE``); every frame is seen once.
    """
    buf: list[dict[str, np.ndarray]] = []
    for key in sorted(keys, key=lambda k: k.track):
        slab = read_slab(spec, key, 0, key.n_frames)
        n_padded = -(-key.n_frames // spec.patch_frames) * spec.patch_frames
        slab = slab.pad(n_padded)
        for at in range(0, key.n_frames, spec.patch_frames):
            buf.append(slab.patch(spec.feature, at, spec.patch_frames))
            if len(buf) == batch_size:
                yield spec.prepare({n: np.stack([p[n] for p in buf]) for n in buf[0]})
                buf = []
    if buf:
        yield spec.prepare({n: np.stack([p[n] for p in buf]) for n in buf[0]})
