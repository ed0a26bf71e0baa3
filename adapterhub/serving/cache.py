"""``AdapterCache``: recently used adapters' factors in memory under a byte budget (LRU).

S-LoRA keeps adapters in a unified memory pool and pages them in on demand; here the pool is a
byte budget over :class:`ServedAdapter` objects, least recently used out first. A miss calls the
loader (blob store → factors) once per key however many requests wait for it: concurrent callers
of the same key wait for the first one's load (single flight) and share its result or its error.

Adapters pinned by a running batch are never evicted mid-batch; a batch whose adapters together
exceed the budget still runs (the budget is exceeded by that batch only, until it unpins), so the
budget bounds the cache, not one request's working set.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager

from adapterhub.errors import InvalidParameterError
from adapterhub.serving.factors import ServedAdapter

__all__ = ["AdapterCache", "CacheStats"]

Loader = Callable[[str], ServedAdapter]


class CacheStats:
    """Counters of one cache (read by ``/v1/models``' owner and the benchmark)."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.loads_shared = 0  # callers that waited for another caller's load

    def to_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions, "loads_shared": self.loads_shared}


class AdapterCache:
    """LRU map of key → :class:`ServedAdapter` under ``budget_bytes``.

    Args:
        loader: makes the adapter of a key (called outside the lock; may raise).
        budget_bytes: most factor bytes kept when nothing is pinned.
    """

    def __init__(self, loader: Loader, budget_bytes: int) -> None:
        if budget_bytes <= 0:
            raise InvalidParameterError(f"the adapter cache budget must be positive, got {budget_bytes} bytes")
        self._loader = loader
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, ServedAdapter] = OrderedDict()
        self._loading: dict[str, Future[ServedAdapter]] = {}
        self._pins: dict[str, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = CacheStats()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> ServedAdapter:
        """The adapter of ``key``, loading it on a miss (once, however many callers ask)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return entry
            pending = self._loading.get(key)
            if pending is None:
                pending = Future()
                self._loading[key] = pending
                owner = True
                self.stats.misses += 1
            else:
                owner = False
                self.stats.loads_shared += 1
        if not owner:
            return pending.result()
        try:
            loaded = self._loader(key)
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._loading[key]
            if key not in self._entries:
                self._entries[key] = loaded
                self._bytes += loaded.nbytes
            self._evict()
        pending.set_result(loaded)
        return loaded

    @contextmanager
    def pinned(self, keys: Sequence[str]) -> Iterator[dict[str, ServedAdapter]]:
        """The adapters of ``keys`` (loaded as needed), kept from eviction inside the block."""
        with self._lock:
            for key in keys:
                self._pins[key] = self._pins.get(key, 0) + 1
        try:
            yield {key: self.get(key) for key in dict.fromkeys(keys)}
        finally:
            with self._lock:
                for key in keys:
                    self._pins[key] -= 1
                    if not self._pins[key]:
                        del self._pins[key]
                self._evict()

    def _evict(self) -> None:
        """Drop least recently used, unpinned entries until under budget (lock held)."""
        for key in list(self._entries):
            if self._bytes <= self.budget_bytes:
                break
            if key in self._pins:
                continue
            self._bytes -= self._entries.pop(key).nbytes
            self.stats.evictions += 1
