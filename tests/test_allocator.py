"""Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then returns every freed
block to the OS and each new large buffer faults its pages in again. The processes that run
items raise the thresholds back (measured: pitch training 7 -> 12 patches/s in a worker)."""

from __future__ import annotations

import platform

import pytest

from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import parse_cluster

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")


def _faults_per_buffer(n: int = 40, mb: int = 8) -> float:
    """Minor page faults per malloc-touch-free cycle of an ``mb`` MB buffer (libc's own malloc:
    numpy asks for huge pages on large arrays, which hides the faults from the count)."""
    import ctypes
    import ctypes.util
    import resource

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = mb * 2**20

    def cycle() -> None:
        buf = libc.malloc(size)
        ctypes.memset(buf, 1, size)
        libc.free(buf)

    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        cycle()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n


def _in_worker() -> tuple[str | None, float, bool, float, int]:
    import os

    from mirpipe.pipeline.allocator import reuse_freed_memory
    from mirpipe.pipeline.execute import execute_item

    env = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    before = _faults_per_buffer()
    try:  # an item of a stage that does not exist: it fails after the allocator is set up
        execute_item("no-such-stage", None, "", None, 0, 0.0)
    except Exception:  # noqa: BLE001 - any failure will do: the test looks only at the allocator after it
        pass
    called = reuse_freed_memory.cache_info().currsize
    return env, before, reuse_freed_memory(), _faults_per_buffer(), called


def test_items_run_in_a_dask_worker_reuse_freed_memory_instead_of_faulting_it_in_again():
    cluster = parse_cluster({"type": "local", "n_workers": 1, "threads_per_worker": 1, "memory_limit": "2GiB"})
    with open_executor(cluster) as ex:
        env, before, changed, after, called = ex.client.submit(_in_worker, pure=False).result()
    assert env == "65536"  # the premise: distributed's default for its worker processes
    assert before > 1000, (before, after)  # 8 MB = 2048 pages, faulted in again on every cycle
    assert changed and called == 1  # execute_item set it up
    assert after < before / 20, (before, after)
