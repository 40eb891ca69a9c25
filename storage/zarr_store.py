"""Zarr v3 backend: one zip file per entry (``<track>.zarr.zip``), time-chunked arrays (zstd).

One file per track keeps a 100,000-track corpus far from an HPC file quota (a
directory store costs a file per chunk and per array). The zip is written whole
into a temporary file and renamed into place; members are stored uncompressed
(zarr compresses each chunk), so a slab read is a seek and a chunk decode.

Reads of ``[variant, start:stop]`` (what streaming does) go straight to the zip members
(``DirectArray``): zarr-python spends ~0.35 ms of indexing and async machinery per call on a
chunk that takes 0.01-0.03 ms to read and 0.02-0.12 ms to decode, and a streamer activation reads
five arrays. The files are the ones zarr-python writes; anything the direct path does not know
(sharding, other codecs or chunk grids, other indexing) is read through zarr-python.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import ZipStore

from .base import STORE_BACKENDS, ArraySink, FeatureStore


def _array_names(group: zarr.Group, prefix: str = "") -> list[str]:
    names = [prefix + k for k in group.array_keys()]
    for k in group.group_keys():
        sub = group[k]
        assert isinstance(sub, zarr.Group)  # a key of group_keys()
        names += _array_names(sub, f"{prefix}{k}/")
    return sorted(names)


class CorruptChunkError(zipfile.BadZipFile):
    """A chunk of an entry that fails its CRC-32, is cut short or does not decode: names the entry
    file, the array and the chunk (rerun features to rewrite the entry)."""

    def __init__(self, path: str, array: str, chunk: str, reason: str):
        super().__init__(f"{path}: array {array!r}, chunk {chunk}: {reason} (a damaged entry: rerun features)")
        self.path, self.array, self.chunk = path, array, chunk


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


class DirectArray:
    """A zarr v3 array inside an entry's zip, read chunk by chunk from its zip members.

    Only the layout this backend writes: a regular grid one variant per chunk, chunked in time only,
    ``bytes`` then optionally ``zstd``, no sharding (``direct`` returns None for anything else).
    ``[v]`` and ``[v, start:stop]`` are read here; any other key and every attribute
    (``shape``, ``nchunks_initialized``...) go to the zarr-python array. A chunk missing
    from the zip reads as the fill value, as zarr-python reads it.

    A stored member is one ``os.pread`` at the data offset its local header gives (parsed once per
    member and open), not ``ZipFile.read`` (which re-reads the local header and wraps a file object
    per call). Integrity as zipfile's: each member's CRC-32 is checked on its first read through this
    open handle (a streamer reads the same chunks again and again: later reads skip the CRC of bytes
    already verified), its length every time, and the codec must decode it; a failure is a
    ``CorruptChunkError`` naming the entry, the array and the chunk. Decoded chunks are kept per open
    array up to ``cache_bytes`` (least recently used dropped first), as HDF5 keeps 1 MiB per open
    dataset: the slabs a streamer cuts again from an entry whose handles are open decode once.
    """

    # decoded chunks kept per open array, least recently used dropped first: HDF5's default chunk cache
    # (1 MiB per open dataset), so a streamer's repeated slabs of an entry decode once; 0: none
    cache_bytes: int = 1 << 20

    def __init__(self, array: zarr.Array, zf: zipfile.ZipFile, decoder: Any, endian: Literal["<", ">"]):
        self.array = array
        self.zf = zf
        self.decoder = decoder
        self.fd = zf.fp.fileno() if zf.fp is not None else -1
        self.members: dict[str, tuple[int, int, int] | None] = {}  # key -> (data offset, size, CRC-32); None: not stored
        self.verified: set[str] = set()
        self.cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # (v, t) -> decoded chunk, read-only
        self.cached_bytes = 0
        meta = array.metadata
        assert isinstance(meta, ArrayV3Metadata) and isinstance(meta.chunk_grid, RegularChunkGrid)  # checked by ``direct``
        self.chunks = tuple(meta.chunk_grid.chunk_shape)
        self.dtype = np.dtype(array.dtype)
        self.stored = self.dtype.newbyteorder(endian) if self.dtype.itemsize > 1 else self.dtype
        self.fill = np.asarray(meta.fill_value, self.dtype)
        self.prefix = f"{array.path}/" if array.path else ""
        self.encode = meta.chunk_key_encoding.encode_chunk_key

    @classmethod
    def direct(cls, array: zarr.Array, zf: zipfile.ZipFile) -> DirectArray | None:
        meta = array.metadata
        if not isinstance(meta, ArrayV3Metadata) or meta.storage_transformers or len(array.shape) < 2:
            return None
        grid = meta.chunk_grid
        if not isinstance(grid, RegularChunkGrid) or grid.chunk_shape[0] != 1 or tuple(grid.chunk_shape[2:]) != array.shape[2:]:
            return None
        codecs = list(meta.codecs)
        if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
            return None
        decoder = None
        if len(codecs) == 2:
            if not isinstance(codecs[1], ZstdCodec):
                return None
            decoder = numcodecs.Zstd(level=codecs[1].level, checksum=codecs[1].checksum)
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "biuf" or not dtype.isnative:
            return None
        endian: Literal["<", ">"] = "<" if codecs[0].endian is None or codecs[0].endian.value == "little" else ">"
        return cls(array, zf, decoder, endian)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.array, name)

    def _member(self, key: str) -> tuple[int, int, int] | None:
        """(data offset, size, CRC-32) of a stored member (KeyError when the zip has none), None for
        one this reader leaves to ``ZipFile.read`` (compressed or encrypted by another writer)."""
        if key in self.members:
            return self.members[key]
        info = self.zf.getinfo(key)
        found = None
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1 and self.fd >= 0:
            header = os.pread(self.fd, _LOCAL_HEADER.size, info.header_offset)
            if len(header) != _LOCAL_HEADER.size:
                raise CorruptChunkError(str(self.zf.filename), self.array.path, key, "its local header is cut short")
            signature, n_name, n_extra = _LOCAL_HEADER.unpack(header)
            if signature != b"PK\x03\x04":
                raise CorruptChunkError(str(self.zf.filename), self.array.path, key, "bad local header")
            found = (info.header_offset + _LOCAL_HEADER.size + n_name + n_extra, info.compress_size, info.CRC)
        self.members[key] = found
        return found

    def _raw(self, key: str) -> bytes:
        member = self._member(key)
        if member is None:
            return self.zf.read(key)
        offset, size, crc = member
        raw = os.pread(self.fd, size, offset)
        if len(raw) != size:
            raise CorruptChunkError(str(self.zf.filename), self.array.path, key, f"{len(raw)} of its {size} bytes")
        if key not in self.verified:
            if zlib.crc32(raw) != crc:
                raise CorruptChunkError(str(self.zf.filename), self.array.path, key, "bad CRC-32")
            self.verified.add(key)
        return raw

    def _chunk(self, v: int, t: int) -> np.ndarray:
        """Chunk (v, t): ``(chunk frames, ...)`` of variant ``v`` (read-only when it comes from the cache)."""
        hit = self.cache.get((v, t))
        if hit is not None:
            self.cache.move_to_end((v, t))
            return hit
        chunk = self._read_chunk(v, t)
        if 0 < chunk.nbytes <= self.cache_bytes:
            chunk.flags.writeable = False
            self.cache[v, t] = chunk
            self.cached_bytes += chunk.nbytes
            while self.cached_bytes > self.cache_bytes:
                _, old = self.cache.popitem(last=False)
                self.cached_bytes -= old.nbytes
        return chunk

    def _read_chunk(self, v: int, t: int) -> np.ndarray:
        key = self.prefix + self.encode((v, t) + (0,) * (len(self.chunks) - 2))
        try:
            raw = self._raw(key)
        except KeyError:
            return np.full(self.chunks[1:], self.fill)
        except zipfile.BadZipFile as exc:
            if isinstance(exc, CorruptChunkError):
                raise
            raise CorruptChunkError(str(self.zf.filename), self.array.path, key, str(exc)) from exc
        try:
            data = raw if self.decoder is None else self.decoder.decode(raw)
            return np.frombuffer(data, self.stored).reshape(self.chunks).astype(self.dtype, copy=False)[0]
        except (RuntimeError, ValueError) as exc:  # numcodecs' zstd errors, a wrong decoded size
            raise CorruptChunkError(str(self.zf.filename), self.array.path, key, f"does not decode ({exc})") from exc

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            key = (key, slice(None))
        if not (
            isinstance(key, tuple)
            and len(key) == 2
            and isinstance(key[0], (int, np.integer))
            and isinstance(key[1], slice)
            and key[1].step in (None, 1)
        ):
            return self.array[key]
        n_v, n_t = self.array.shape[:2]
        v = int(key[0])
        if not -n_v <= v < n_v:
            return self.array[key]  # zarr-python raises its IndexError
        v %= n_v
        start, stop, _ = key[1].indices(n_t)
        stop = max(start, stop)
        ct = self.chunks[1]
        first, last = start // ct, (stop - 1) // ct
        if stop == start:
            return np.empty((0,) + tuple(self.array.shape[2:]), self.dtype)
        if first == last:
            return self._chunk(v, first)[start - first * ct : stop - first * ct].copy()
        parts = [self._chunk(v, c) for c in range(first, last + 1)]
        parts[-1] = parts[-1][: stop - last * ct]
        parts[0] = parts[0][start - first * ct :]
        return np.concatenate(parts)


class _ZarrSink(ArraySink):
    """A new entry file: a zarr v3 group in a zip, attributes at creation (rewriting zarr.json
    inside a zip would duplicate the member), every chunk written once."""

    def __init__(self, tmp: Path, attrs: dict[str, Any], compressors: Any):
        self.store = ZipStore(tmp, mode="w")
        self.compressors = compressors
        self.group = zarr.create_group(store=self.store, zarr_format=3, attributes=attrs)
        self.arrays: dict[str, zarr.Array] = {}

    def create(self, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...]) -> None:
        # every chunk on disk, fill-valued or not, so a missing one marks a broken entry
        self.arrays[name] = self.group.create_array(
            name, shape=shape, dtype=dtype, chunks=chunks, compressors=self.compressors, config={"write_empty_chunks": True}
        )

    def put(self, name: str, variant: int, start: int, frames: np.ndarray) -> None:
        self.arrays[name][variant, start : start + len(frames)] = frames

    def close(self) -> None:
        self.store.close()


class _Owner:
    """Closes the zarr store and the zip the direct reads use."""

    def __init__(self, *owners: Any):
        self.owners = owners

    def close(self) -> None:
        for owner in self.owners:
            owner.close()


@STORE_BACKENDS.register(name="zarr")
class ZarrStore(FeatureStore):
    backend = "zarr"
    suffix = ".zarr.zip"
    direct_reads = True  # slab reads straight from the zip members (``DirectArray``)
    compressors: Any = "auto"  # zarr's default, zstd; None stores chunks raw (a benchmark variant)

    def _sink(self, tmp: Path, attrs: dict[str, Any]) -> ArraySink:
        return _ZarrSink(tmp, attrs, self.compressors)

    def _open(self, path: Path, names: list[str] | None) -> tuple[dict[str, Any], dict[str, Any], Any]:
        store = ZipStore(path, mode="r")
        try:
            group = zarr.open_group(store=store, mode="r", zarr_format=3)
            names = _array_names(group) if names is None else list(names)
            arrays: dict[str, Any] = {n: group[n] for n in names}
            if not self.direct_reads or not arrays:
                return arrays, dict(group.attrs), store
            zf = zipfile.ZipFile(path, "r")
        except BaseException:
            store.close()
            raise
        direct = {n: DirectArray.direct(a, zf) for n, a in arrays.items()}
        return {n: direct[n] or a for n, a in arrays.items()}, dict(group.attrs), _Owner(store, zf)

    def _valid(self, path: Path) -> bool:
        try:
            arrays, _, store = self._open(path, None)
        except Exception:  # noqa: BLE001 - a missing, partial or foreign entry (zarr raises by cause): recompute it
            return False
        try:
            return bool(arrays) and all(a.nchunks_initialized == a.nchunks for a in arrays.values())
        except Exception:  # noqa: BLE001 - chunk listing failed on a damaged entry: recompute it
            return False
        finally:
            store.close()
