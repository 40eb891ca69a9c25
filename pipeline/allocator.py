"""glibc's malloc settings for the processes that run items: keep freed memory for reuse.

Dask's nanny starts every worker process with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``): glibc then hands every freed block above 64 KB
back to the OS, and because a threshold set explicitly also freezes the mmap threshold at
128 KB, every tensor or audio buffer larger than that is a fresh ``mmap`` whose pages fault
in again on first touch. A training step allocates and frees the same few-MB activations
every time: a salience-model training in a Dask worker ran at 7 patches/s with 50 s of system time
per 30 steps, against 11 patches/s and 2 s without that setting (the README's "Training and
evaluation" has the figures). Items here free what they allocate and return small records, so the memory
the setting saves is small and the price is most of a core.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
TRIM_THRESHOLD = 128 * 2**20  # free heap top kept before returning it to the OS
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: requests above it are still mmap'ed


@functools.cache
def reuse_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds for this process (once). False where the C
    library is not glibc (musl, macOS): nothing to change there."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
