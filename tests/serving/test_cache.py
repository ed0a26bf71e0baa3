"""``AdapterCache``: LRU under a byte budget, pins that survive eviction, single-flight loads."""

from __future__ import annotations

import random
import threading
import time

import pytest
import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.serving.cache import AdapterCache
from adapterhub.serving.factors import ServedAdapter


def adapter(key: str, nbytes: int) -> ServedAdapter:
    """A synthetic adapter holding exactly ``nbytes`` bytes of factors."""
    return ServedAdapter(key, {"layer": (torch.zeros(nbytes, dtype=torch.uint8), torch.zeros(0, dtype=torch.uint8))})


class Loader:
    """Makes adapters of known sizes, counts calls per key; optionally slow or failing."""

    def __init__(self, sizes: dict[str, int] | None = None, *, default: int = 100, delay: float = 0.0) -> None:
        self.sizes = sizes or {}
        self.default = default
        self.delay = delay
        self.calls: dict[str, int] = {}
        self.fail: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> ServedAdapter:
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1
        if self.delay:
            time.sleep(self.delay)
        if key in self.fail:
            raise OSError(f"blob of {key} unreadable")
        return adapter(key, self.sizes.get(key, self.default))


def contents(cache: AdapterCache, keys: str) -> str:
    return "".join(k for k in keys if k in cache)


def test_synthetic_adapter_has_the_size_asked():
    assert adapter("x", 123).nbytes == 123


def test_budget_must_be_positive():
    with pytest.raises(InvalidParameterError):
        AdapterCache(Loader(), 0)


def test_lru_order_and_eviction_under_the_budget():
    loader = Loader()
    cache = AdapterCache(loader, 300)
    for key in "abc":
        cache.get(key)
    assert len(cache) == 3 and cache.nbytes == 300
    cache.get("a")  # a is now the most recent: b is the least recently used
    cache.get("d")
    assert contents(cache, "abcd") == "acd" and cache.nbytes == 300
    cache.get("c")
    cache.get("e")  # LRU order is now a, d, c, e: a goes
    assert contents(cache, "abcde") == "cde"
    assert loader.calls == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}
    cache.get("b")  # evicted entries are loaded again
    assert loader.calls["b"] == 2 and contents(cache, "abcde") == "bce"


def test_a_big_entry_evicts_several_small_ones():
    cache = AdapterCache(Loader({"big": 250}), 300)
    for key in "abc":
        cache.get(key)
    cache.get("big")
    assert contents(cache, "abc") == "" and "big" in cache and cache.nbytes == 250
    assert cache.stats.evictions == 3


def test_an_entry_over_the_budget_is_returned_but_not_kept():
    cache = AdapterCache(Loader({"huge": 500}), 300)
    cache.get("a")
    got = cache.get("huge")
    assert got.key == "huge" and got.nbytes == 500
    assert cache.nbytes <= 300 and "huge" not in cache


def test_size_never_above_the_budget_without_pins():
    rng = random.Random(7)
    sizes = {f"k{i}": rng.randint(1, 120) for i in range(40)}
    cache = AdapterCache(Loader(sizes), 400)
    for _ in range(500):
        key = rng.choice(list(sizes))
        assert cache.get(key).nbytes == sizes[key]
        assert cache.nbytes <= 400
        held = [k for k in sizes if k in cache]
        assert len(cache) == len(held) and cache.nbytes == sum(sizes[k] for k in held)
    assert cache.stats.hits + cache.stats.misses == 500


def test_pinned_entries_survive_eviction_and_the_budget_returns_after():
    loader = Loader()
    cache = AdapterCache(loader, 150)
    with cache.pinned(["a", "b"]) as adapters:
        assert set(adapters) == {"a", "b"} and adapters["a"].key == "a"
        assert "a" in cache and "b" in cache and cache.nbytes == 200  # over budget while pinned
        cache.get("c")  # unpinned newcomer: the only one that may go
        assert "a" in cache and "b" in cache and "c" not in cache
        cache.get("a")
        assert loader.calls == {"a": 1, "b": 1, "c": 1}
    assert cache.nbytes <= 150 and len(cache) == 1
    assert "a" in cache  # b was the least recently used once both were unpinned


def test_nested_and_repeated_pins():
    cache = AdapterCache(Loader(), 100)
    with cache.pinned(["a", "a", "b"]) as outer:
        assert set(outer) == {"a", "b"}
        with cache.pinned(["a"]):
            pass
        cache.get("c")
        assert "a" in cache and "b" in cache  # still pinned by the outer block
    assert cache.nbytes <= 100 and len(cache) == 1


def test_a_failed_load_inside_pinned_releases_the_pins():
    loader = Loader()
    loader.fail.add("bad")
    cache = AdapterCache(loader, 100)
    with pytest.raises(OSError):
        with cache.pinned(["a", "bad"]):
            pass
    cache.get("b")
    cache.get("c")
    assert "a" not in cache and cache.nbytes == 100  # a was not left pinned


def run_threads(n: int, target) -> tuple[list, list]:
    """``n`` threads released together calling ``target()``; their results and exceptions."""
    barrier = threading.Barrier(n)
    results: list = []
    errors: list = []
    lock = threading.Lock()

    def body() -> None:
        barrier.wait()
        try:
            value = target()
        except BaseException as exc:  # noqa: BLE001 - collected for the test
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=body) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return results, errors


def test_single_flight_loads_once_for_eight_threads():
    loader = Loader(delay=0.3)
    cache = AdapterCache(loader, 1000)
    results, errors = run_threads(8, lambda: cache.get("x"))
    assert errors == [] and len(results) == 8
    assert loader.calls == {"x": 1}
    assert all(r is results[0] for r in results)
    assert cache.stats.misses == 1 and cache.stats.loads_shared == 7 and cache.stats.hits == 0
    assert cache.get("x") is results[0] and cache.stats.hits == 1


def test_a_load_error_reaches_every_waiter_and_the_next_get_retries():
    loader = Loader(delay=0.3)
    loader.fail.add("x")
    cache = AdapterCache(loader, 1000)
    results, errors = run_threads(8, lambda: cache.get("x"))
    assert results == [] and len(errors) == 8
    assert all(isinstance(e, OSError) and "unreadable" in str(e) for e in errors)
    assert loader.calls == {"x": 1} and "x" not in cache and cache.nbytes == 0
    loader.fail.clear()
    loader.delay = 0
    assert cache.get("x").key == "x"  # no stale failure is remembered
    assert loader.calls == {"x": 2} and "x" in cache


def test_different_keys_load_in_parallel():
    loader = Loader(delay=0.3)
    cache = AdapterCache(loader, 10_000)
    keys = iter(range(8))
    lock = threading.Lock()

    def next_key() -> ServedAdapter:
        with lock:
            key = f"k{next(keys)}"
        return cache.get(key)

    start = time.perf_counter()
    results, errors = run_threads(8, next_key)
    assert errors == [] and len({r.key for r in results}) == 8
    assert time.perf_counter() - start < 2.0  # not 8 x 0.3 s one after another behind the lock


def test_stats_counters():
    cache = AdapterCache(Loader(), 200)
    cache.get("a")
    cache.get("a")
    cache.get("b")
    cache.get("c")  # evicts a
    cache.get("b")
    assert cache.stats.to_dict() == {"hits": 2, "misses": 3, "evictions": 1, "loads_shared": 0}
