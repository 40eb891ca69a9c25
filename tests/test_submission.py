"""Bounded submission: a stage of any size keeps at most a window of items in flight on the scheduler."""

from mirpipe.pipeline.cluster import open_executor
from mirpipe.pipeline.config import parse_cluster


def test_items_go_to_dask_in_a_bounded_window_and_all_come_back():
    cluster = parse_cluster({"type": "local", "n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB"})
    with open_executor(cluster) as ex:
        window = ex.window()
        assert window == max(ex.MIN_WINDOW, ex.WINDOW_PER_THREAD * 2)
        calls = [(f"noop-{i}", (-i,)) for i in range(10 * window)]
        results, in_flight = {}, []
        for key, value in ex.run(abs, calls):
            results[key] = value
            in_flight.append(len(ex.client.futures))
        assert results == {f"noop-{i}": i for i in range(10 * window)}
        assert max(in_flight) <= window  # never the whole stage at once
        assert max(in_flight) >= min(window, 8)  # but the workers are kept busy

        # distributed keeps one {"type": "Future"} per submit in the span's metadata for the
        # scheduler's life, and dask's key_split caches every key's prefix (up to 100,000); the
        # executor trims both every TRIM_EVERY results, so they stay bounded
        def collections(dask_scheduler=None):
            return sum(len((s._metadata or {}).get("collections", ())) for s in dask_scheduler.extensions["spans"].spans.values())

        def cached_keys(dask_scheduler=None):
            from dask.utils import key_split

            return key_split.cache_info().currsize

        ex.TRIM_EVERY = 100
        grown = ex.client.run_on_scheduler(collections)
        assert grown >= 10 * window - 100  # what it grows by without the trim
        assert ex.client.run_on_scheduler(cached_keys) >= 10 * window - 100
        for _ in ex.run(abs, [(f"more-{i}", (i,)) for i in range(450)]):
            pass
        assert ex.client.run_on_scheduler(collections) <= 60  # at most the 50 since the last trim, and one kept
        assert ex.client.run_on_scheduler(cached_keys) <= 50 + window + 10  # the keys seen since the last trim
