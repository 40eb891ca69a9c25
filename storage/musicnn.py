"""musicnn (Pons & Serra 2019) in torch, read from the checkpoint its PyPI wheel ships.

The ``musicnn`` wheel (ISC licence) holds TensorFlow 1 checkpoints of music taggers trained on
real recordings, among them ``musicnn/MTT_musicnn/`` (MagnaTagATune: 50 tags, among them guitar,
piano, violin, strings, flute, harpsichord, sitar, harp, cello, drums, voice). TensorFlow is not
needed: ``read_checkpoint`` reads the checkpoint's tensor bundle (an SSTable index of
``BundleEntryProto`` records, and the raw little-endian tensors) with the standard library and
numpy, and ``MusicnnNet`` is the network of ``musicnn/models.py`` (``build_musicnn``) as torch
modules (NHWC kernels permuted to NCHW, TensorFlow's 'same' padding of even kernels put as TF
does, its batch-normalisation epsilon 1e-3).

Install the checkpoint without the wheel's declared dependencies (TensorFlow, numpy<1.17)::

    pip install --no-deps musicnn==0.1.0

Nothing is downloaded at run time; ``checkpoint_dir`` reads the files from elsewhere.
"""

from __future__ import annotations

import functools
import importlib.util
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SR = 16000
FFT_HOP = 256
FFT_SIZE = 512
N_MELS = 96
INSTALL = "pip install --no-deps musicnn==0.1.0"
MTT_LABELS = (  # MTT_musicnn's 50 outputs, in order (musicnn/configuration.py)
    "guitar",
    "classical",
    "slow",
    "techno",
    "strings",
    "drums",
    "electronic",
    "rock",
    "fast",
    "piano",
    "ambient",
    "beat",
    "violin",
    "vocal",
    "synth",
    "female",
    "indian",
    "opera",
    "male",
    "singing",
    "vocals",
    "no vocals",
    "harpsichord",
    "loud",
    "quiet",
    "flute",
    "woman",
    "male vocal",
    "no vocal",
    "pop",
    "soft",
    "sitar",
    "solo",
    "man",
    "classic",
    "choir",
    "voice",
    "new age",
    "dance",
    "male voice",
    "female vocal",
    "beats",
    "harp",
    "cello",
    "no voice",
    "weird",
    "country",
    "metal",
    "female voice",
    "choral",
)


class MissingPackageError(ImportError):
    """The musicnn checkpoint is not installed (nor given as ``checkpoint_dir``)."""


def checkpoint_prefix(model: str, checkpoint_dir: str | None = None) -> Path:
    """Where the checkpoint of ``model`` lies: ``<dir>/`` holding ``.index`` and ``.data-00000-of-00001``."""
    if checkpoint_dir:
        base = Path(checkpoint_dir)
    else:
        spec = importlib.util.find_spec("musicnn")  # the package's files only: musicnn.models imports TensorFlow
        if spec is None or not spec.submodule_search_locations:
            raise MissingPackageError(
                f"the 'musicnn' feature kind needs the musicnn checkpoint (ISC licence, ~29 MB wheel): {INSTALL} "
                "(TensorFlow is not needed; `make install` does it), or features.musicnn.checkpoint_dir"
            )
        base = Path(next(iter(spec.submodule_search_locations))) / model
    index = base / ".index"
    if not index.exists():
        raise MissingPackageError(f"{index}: no {model} checkpoint there ({INSTALL})")
    return base


# -- the tensor bundle (TensorFlow's checkpoint format), read without TensorFlow --------------------


def _varint(b: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        c = b[i]
        i += 1
        out |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return out, i


def _block(data: bytes, offset: int, size: int) -> bytes:
    if data[offset + size] != 0:
        raise ValueError("compressed checkpoint index block (TensorFlow writes them uncompressed)")
    return data[offset : offset + size]


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of an SSTable block (prefix-compressed keys, restart array at the end)."""
    n = struct.unpack_from("<I", block, len(block) - 4)[0]
    end, i, key = len(block) - 4 - 4 * n, 0, b""
    while i < end:
        shared, i = _varint(block, i)
        fresh, i = _varint(block, i)
        size, i = _varint(block, i)
        key = key[:shared] + block[i : i + fresh]
        i += fresh
        yield key, block[i : i + size]
        i += size


def _fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) of a protobuf message (varints, length-delimited, fixed32/64)."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        kind = tag & 7
        value: Any
        if kind == 0:
            value, i = _varint(buf, i)
        elif kind == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif kind == 5:
            value, i = buf[i : i + 4], i + 4
        elif kind == 1:
            value, i = buf[i : i + 8], i + 8
        else:
            raise ValueError(f"protobuf wire type {kind}")
        yield tag >> 3, value


_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}


def read_checkpoint(prefix: Path | str) -> dict[str, np.ndarray]:
    """Every tensor of a TensorFlow checkpoint (``<prefix>.index`` + one data shard), by name."""
    prefix = str(prefix)
    index = Path(prefix + ".index").read_bytes()
    footer = index[-48:]
    _, j = _varint(footer, 0)  # the metaindex handle
    _, j = _varint(footer, j)
    offset, j = _varint(footer, j)
    size, j = _varint(footer, j)
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    out: dict[str, np.ndarray] = {}
    for _, handle in _entries(_block(index, offset, size)):
        b_off, k = _varint(handle, 0)
        b_size, _ = _varint(handle, k)
        for key, value in _entries(_block(index, b_off, b_size)):
            if not key:  # the bundle header
                continue
            entry: dict[str, Any] = {"dtype": 1, "shape": [], "shard": 0, "offset": 0, "size": 0}
            for f, v in _fields(value):
                if f == 1:
                    entry["dtype"] = v
                elif f == 2:
                    entry["shape"] = [dict(_fields(d)).get(1, 0) for g, d in _fields(v) if g == 2]
                elif f == 3:
                    entry["shard"] = v
                elif f == 4:
                    entry["offset"] = v
                elif f == 5:
                    entry["size"] = v
            if entry["shard"] != 0 or entry["dtype"] not in _DTYPES:
                continue
            dt = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
            n = entry["size"] // dt.itemsize
            out[key.decode()] = (
                np.frombuffer(data, dt, count=n, offset=entry["offset"]).reshape(entry["shape"]).astype(dt.newbyteorder("="))
            )
    return out


# -- the network ------------------------------------------------------------------------------------


def log_mel(y16: np.ndarray) -> np.ndarray:
    """musicnn's input: (frames, 96) log10(10000 mel + 1), mel power via float16 as its extractor does."""
    import librosa

    mel = librosa.feature.melspectrogram(y=y16, sr=SR, hop_length=FFT_HOP, n_fft=FFT_SIZE, n_mels=N_MELS).T
    return np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1).astype(np.float32)


def _torch_module(weights: dict[str, np.ndarray]):
    import torch
    import torch.nn.functional as F
    from torch import nn

    def bn(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch normalisation (inference) as scale and shift."""
        g, b = weights[f"{name}/gamma"], weights[f"{name}/beta"]
        m, v = weights[f"{name}/moving_mean"], weights[f"{name}/moving_variance"]
        scale = g / np.sqrt(v + 1e-3)
        return torch.from_numpy(scale.astype(np.float32)), torch.from_numpy((b - m * scale).astype(np.float32))

    def conv(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        k = weights[f"{name}/kernel"]  # (kh, kw, in, out) -> (out, in, kh, kw)
        return torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))), torch.from_numpy(weights[f"{name}/bias"])

    class MusicnnNet(nn.Module):
        """``build_musicnn`` of musicnn/models.py, inference only: (B, frames, 96) log-mel -> per
        frame the mid-end features (B, frames, 753); ``penultimate`` pools them over windows."""

        dense_w: torch.Tensor  # buffers (register_buffer), declared for the type checker
        dense_b: torch.Tensor
        out_w: torch.Tensor
        out_b: torch.Tensor

        def __init__(self):
            super().__init__()
            tensors: dict[str, torch.Tensor] = {}
            for i, name in enumerate(["batch_normalization"] + [f"batch_normalization_{k}" for k in range(1, 11)]):
                tensors[f"bn{i}_scale"], tensors[f"bn{i}_shift"] = bn(name)
            for i, name in enumerate(["conv2d"] + [f"conv2d_{k}" for k in range(1, 8)]):
                tensors[f"conv{i}_w"], tensors[f"conv{i}_b"] = conv(name)
            tensors["dense_w"] = torch.from_numpy(np.ascontiguousarray(weights["dense/kernel"].T))
            tensors["dense_b"] = torch.from_numpy(weights["dense/bias"])
            tensors["out_w"] = torch.from_numpy(np.ascontiguousarray(weights["dense_1/kernel"].T))
            tensors["out_b"] = torch.from_numpy(weights["dense_1/bias"])
            for k, v in tensors.items():
                self.register_buffer(k, v.float().contiguous())

        def _bn(self, x: torch.Tensor, i: int, dim: int) -> torch.Tensor:
            shape = [1] * x.ndim
            scale = getattr(self, f"bn{i}_scale")
            shape[dim] = scale.shape[0]
            return x * scale.view(shape) + getattr(self, f"bn{i}_shift").view(shape)

        def _conv(self, x: torch.Tensor, i: int) -> torch.Tensor:
            return F.relu(F.conv2d(x, getattr(self, f"conv{i}_w"), getattr(self, f"conv{i}_b")))

        def midend(self, mel: torch.Tensor) -> torch.Tensor:
            """(B, T, 96) -> (B, T, 753): the front end (timbral 7x38, 7x67; temporal 128, 64, 32 frames)
            and the three mid-end layers, concatenated as the back end sees them."""
            x = self._bn(mel[:, None], 0, 1)  # (B, 1, T, 96): NCHW with H time, W mel
            front = []
            padded = F.pad(x, (0, 0, 3, 3))
            for i, bn_i in ((0, 1), (1, 2)):  # timbral: valid convs over the time-padded input
                h = self._bn(self._conv(padded, i), bn_i, 1)
                front.append(h.amax(dim=3).transpose(1, 2))  # max over frequency -> (B, T, C)
            for i, bn_i, k in ((2, 3, 128), (3, 4, 64), (4, 5, 32)):  # temporal: TF 'same' (extra pad after)
                h = self._bn(self._conv(F.pad(x, (0, 0, (k - 1) // 2, k // 2)), i), bn_i, 1)
                front.append(h.amax(dim=3).transpose(1, 2))
            f = torch.cat(front, dim=2)  # (B, T, 561)
            layers = [f]
            h = f[:, None]  # (B, 1, T, 561)
            prev = None
            for i, bn_i in ((5, 6), (6, 7), (7, 8)):
                out = self._bn(self._conv(F.pad(h, (0, 0, 3, 3)), i), bn_i, 1)  # (B, 64, T, 1)
                out = out[..., 0].transpose(1, 2)  # (B, T, 64)
                if prev is not None:
                    out = out + prev
                layers.append(out)
                prev = out
                h = out[:, None]
            return torch.cat(layers, dim=2)

        def pooled(self, pooled_max: torch.Tensor, pooled_mean: torch.Tensor) -> torch.Tensor:
            """The back end's normalised input (N, 1506) from time-pooled mid-end features (N, 753) each."""
            flat = torch.stack([pooled_max, pooled_mean], dim=2).reshape(pooled_max.shape[0], -1)  # TF's flatten order
            return self._bn(flat, 9, 1)

        def penultimate(self, pooled: torch.Tensor) -> torch.Tensor:
            """The back end's 200-d layer from ``pooled``."""
            return self._bn(F.relu(pooled @ self.dense_w.T + self.dense_b), 10, 1)

        def logits(self, penultimate: torch.Tensor) -> torch.Tensor:
            return penultimate @ self.out_w.T + self.out_b

    return MusicnnNet().eval()


@functools.lru_cache(maxsize=2)
def load_network(model: str = "MTT_musicnn", checkpoint_dir: str | None = None):
    """The torch network of ``model``'s checkpoint (read once per process)."""
    weights = read_checkpoint(str(checkpoint_prefix(model, checkpoint_dir)) + "/")
    return _torch_module(weights)


def n_mel_frames(n16: int) -> int:
    return 1 + n16 // FFT_HOP


def embed(
    y16: np.ndarray, window: int, hop: int, model: str = "MTT_musicnn", checkpoint_dir: str | None = None
) -> dict[str, np.ndarray]:
    """Per frame of 16 kHz audio, by layer: ``pooled`` (T, 1506: the back end's normalised input,
    max and mean of the mid-end features), ``penultimate`` (T, 200), ``logits`` (T, 50 tags). Frame t pools the mid-end
    features over the ``window`` mel frames centred on mel frame ``t * hop`` (mel frames are
    centred, 256 samples apart), T = 1 + (mel frames - 1) // hop."""
    import torch

    net = load_network(model, checkpoint_dir)
    mel = log_mel(np.asarray(y16, np.float32))
    n = mel.shape[0]
    T = 1 + (n - 1) // hop
    threads = torch.get_num_threads()
    # one thread: a feature worker is one core (Dask's threads_per_worker), and the frames then do not depend
    # on the machine's core count (reduction order)
    torch.set_num_threads(1)
    try:
        return _windows(net, mel, n, T, window, hop)
    finally:
        torch.set_num_threads(threads)


def _windows(net, mel: np.ndarray, n: int, T: int, window: int, hop: int) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        feats = net.midend(torch.from_numpy(mel)[None])[0]  # (n, 753)
        lo = np.clip(np.arange(T) * hop - window // 2, 0, None)
        hi = np.minimum(np.arange(T) * hop - window // 2 + window, n)
        hi = np.maximum(hi, lo + 1)
        # windows by cumulative sums (mean) and a padded unfold (max): one pass for every frame
        csum = torch.cat([torch.zeros(1, feats.shape[1]), feats.double().cumsum(0)]).to(torch.float64)
        lo_t, hi_t = torch.from_numpy(lo), torch.from_numpy(hi)
        mean = ((csum[hi_t] - csum[lo_t]) / (hi_t - lo_t)[:, None].double()).float()
        pad = torch.cat([feats, torch.full((window, feats.shape[1]), -torch.inf)])
        idx = lo_t[:, None] + torch.arange(window)[None]
        idx = torch.where(idx < hi_t[:, None], idx, torch.full_like(idx, n))
        mx = pad[idx].amax(dim=1)
        pooled = net.pooled(mx, mean)
        pen = net.penultimate(pooled)
        logits = net.logits(pen)
    return {"pooled": pooled.numpy(), "penultimate": pen.numpy(), "logits": logits.numpy()}
