"""Feature kinds of one track in blocks of audio, in bounded memory.

``feature_blocks(audio_path, sr, channel, kinds, margin_semitones, ...)`` plans a track
from its header (``n_samples``, each kind's ``n_frames`` and ``geometry``) and yields
``(kind, variant_index, start_frame, frames)`` blocks, ``frames`` of shape
``(n, stored_bins)`` in the dtype ``compute`` stores, in increasing ``start_frame`` per
``(kind, variant)``; the blocks of a ``(kind, variant)`` tile ``[0, n_frames[kind])``.

- **A track of at most ``block_seconds``** goes through today's code: ``load_mono`` then
  ``pitch_shift`` per variant and ``kind.compute`` on the whole waveform, one block per
  ``(kind, variant)``: bitwise what the whole-track path stores.
- **A longer track** is decoded once, streamed (``mirpipe.audio.blocks.MonoStream``), into a
  rolling buffer. Block ``k`` covers samples ``[k B, (k + 1) B)`` (``B`` a multiple of every
  kind's hop); kind ``K`` computes on ``[k B - c_K, (k + 1) B + c_K)`` clipped at the track's
  ends (``c_K = K.context_samples``, a multiple of its hop, so every octave of
  ``librosa.cqt`` sees the same sample phase as on the whole track, and at the ends the same
  zero padding) and keeps the frames centred in ``[k B, (k + 1) B)``. The kept frames equal
  the whole track's up to float rounding (tests/test_blockwise.py measures it).
  Alive at a time: one buffer of ``B + 2 max(c_K)`` samples (twice while it rolls), its
  pitch-shifted copy in audio mode, and one ``compute`` of one kind on one block.
- **Audio mode** (``variants != [0]``): each block's buffer (with its context) is pitch
  shifted (``mirpipe.audio.pitch_shift``) and the kinds computed from it. A phase vocoder
  is not local (its phase accumulates from the start of its input), so the frames of a
  shifted variant near block boundaries are close to, not equal to, the whole-track
  shift's (tracks of at most ``block_seconds`` are unchanged).
- **Deformations** (``augment.deformations``) are further variants, unshifted, each block's buffer
  deformed with its context (``mirpipe.audio.deformations``): like a shift, close to the whole
  track's deformation near block boundaries (a compressor's envelope, a reverb tail longer than the
  context, a noise's normalisation start again per block).

A consumer writes each block as it comes (frames of one ``(kind, variant)`` arrive in
order) and drops it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from mirpipe.audio.blocks import MonoStream
from mirpipe.audio.io import load_mono
from mirpipe.audio.pitch_shift import pitch_shift

from .feature_kinds import FEATURE_KINDS

DEFAULT_BLOCK_SECONDS = 300.0

Block = tuple[str, int, int, np.ndarray]  # (kind, variant index, start frame, (frames, stored bins))
Deform = Callable[[np.ndarray, int], np.ndarray]  # (audio, its first sample in the track) -> deformed, same length


@dataclass
class FeatureBlocks:
    """A planned track: sizes and geometry up front, blocks when iterated (once)."""

    n_samples: int
    sr: int
    n_frames: dict[str, int]
    geometry: dict[str, dict[str, Any]]
    variants: list[int]
    block_samples: int  # B; == n_samples rounded up when the track is one block
    context: dict[str, int]  # samples each kind carries on each side of a block
    blocks: Iterator[Block] = field(repr=False)

    @property
    def n_blocks(self) -> int:
        return max(1, math.ceil(self.n_samples / self.block_samples))

    @property
    def whole(self) -> bool:
        """One block: today's whole-track code path."""
        return self.n_samples <= self.block_samples

    def __iter__(self) -> Iterator[Block]:
        return self.blocks


def block_length(sr: int, hops: list[int], block_seconds: float) -> int:
    """Samples per block: ``block_seconds`` rounded to a multiple of every hop (at least one)."""
    step = math.lcm(*hops)
    return max(step, int(round(block_seconds * sr / step)) * step)


def feature_blocks(
    audio_path: Path | str,
    sr: int,
    channel: int | None,
    kinds: list[tuple[str, BaseModel]],
    margin_semitones: int,
    variants: list[int] | None = None,
    backend: str | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    deformations: list[Deform] | None = None,
) -> FeatureBlocks:
    """Plan ``audio_path``'s features (``kinds``: (name, params) pairs) and the blocks that compute
    them; see the module doc. ``variants``: the semitone shift of each stored variant (audio mode
    when not ``[0]``); ``backend``: the pitch-shift backend (default librosa); ``deformations``:
    one more unshifted variant each, after them, made by ``deform(y, first_sample)``
    (``mirpipe.audio.deformations``)."""
    variants = [0] if variants is None else list(variants)
    effects: list[Deform | None] = [None] * len(variants) + list(deformations or [])
    variants += [0] * len(deformations or [])
    backend = backend or "librosa"
    resolved = [(name, FEATURE_KINDS.get(name), params) for name, params in kinds]
    stream = MonoStream(audio_path, sr, channel)  # header only (a whole decode for non-streamable files)
    n = stream.n_samples
    n_frames = {name: k.n_frames(n, p, sr, margin_semitones) for name, k, p in resolved}
    geometry = {name: k.geometry(sr, p, margin_semitones) for name, k, p in resolved}
    context = {name: k.context_samples(sr, p, margin_semitones) for name, k, p in resolved}
    B = block_length(sr, [k.hop_length(p) for _, k, p in resolved], block_seconds)
    if n <= B:
        blocks = _whole(stream, audio_path, sr, channel, resolved, margin_semitones, variants, effects, backend, n_frames)
    else:
        blocks = _blocks(stream, sr, resolved, margin_semitones, variants, effects, backend, n_frames, context, B)
    return FeatureBlocks(n, sr, n_frames, geometry, variants, B, context, blocks)


def _whole(stream, audio_path, sr, channel, resolved, margin, variants, effects, backend, n_frames) -> Iterator[Block]:
    """Today's path, unchanged: the whole waveform, each variant, each kind."""
    # a file that did not stream was decoded whole by load_mono already: hand that over
    y = next(iter(stream)) if not stream.streamed else load_mono(audio_path, sr=sr, channel=channel)[0]
    del stream
    for v, (shift, effect) in enumerate(zip(variants, effects)):
        y_v = pitch_shift(y, sr, shift, backend) if shift else y  # feature mode: as today, no backend lookup
        if effect is not None:
            y_v = effect(y_v, 0)
        for name, kind, params in resolved:
            frames = kind.compute(y_v, sr, params, margin)[0]
            _check(name, frames.shape[0], n_frames[name], "whole track")
            yield name, v, 0, frames


def _blocks(stream, sr, resolved, margin, variants, effects, backend, n_frames, context, B) -> Iterator[Block]:
    n = stream.n_samples
    C = max(context.values())
    buf, buf_start = np.zeros(0, np.float32), 0  # audio [buf_start, buf_start + len(buf))
    for s in range(0, n, B):
        e = min(s + B, n)
        lo, hi = max(0, s - C), min(n, e + C)
        if lo > buf_start:  # roll: drop what no later block needs
            buf, buf_start = buf[lo - buf_start :], lo
        missing = hi - (buf_start + len(buf))
        if missing > 0:
            more = stream.read(missing)
            if len(more) != missing:
                raise RuntimeError(f"{stream.path}: the stream ended {missing - len(more)} samples early")
            buf = np.concatenate([buf, more])
        for v, (shift, effect) in enumerate(zip(variants, effects)):
            y_v = pitch_shift(buf, sr, shift, backend) if shift else buf  # the block with all its context
            if effect is not None:
                y_v = effect(y_v, buf_start)
            for name, kind, params in resolved:
                hop, c = kind.hop_length(params), context[name]
                a, b = max(0, s - c), min(n, e + c)
                frames = kind.compute(y_v[a - buf_start : b - buf_start], sr, params, margin)[0]
                first = (s - a) // hop
                stop = n_frames[name] if e == n else e // hop  # frames centred in [s, e)
                kept = frames[first : first + stop - s // hop]
                _check(name, kept.shape[0], stop - s // hop, f"block at sample {s}")
                yield name, v, s // hop, np.ascontiguousarray(kept)
                del frames, kept
            del y_v


def _check(name: str, got: int, want: int, where: str) -> None:
    if got != want:  # n_frames mirrors librosa's arithmetic; a new librosa could change it
        raise RuntimeError(f"{name}: {where} computed {got} frames, the plan says {want}")
