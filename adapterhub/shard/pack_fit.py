"""The memory-bounded core of ``pack_library``: read each adapter once, fit each pool in chunks.

Memory: an adapter is read, checked and canonicalised, and then only its canonical rank vectors are
kept, as shards in the storage dtype, appended to one ``RowStore`` per pool (no float32 copy of the
library, no adapter object kept). When those vectors would take more than ``SPILL_BYTES`` the stores
live in a temporary file instead (written once, read back in chunks with ``pread``, deleted when
packing ends), so resident memory holds what is stored in the end (pools, indices,
coefficients, private vectors) plus, for one pool at a time, its k-means sample (float32, and a
weighted copy: at most ``max_fit_points`` shards) and one chunk (``release_memory`` returns the
transients to the OS between steps). At 1,000 Llama-7B-layer adapters: 0.93 GB peak for 2.4 GB of
adapters, +33 KB per adapter from 300 to 1,000 (``bench/shard_bench.py --sizes``).

Every pool-wide step goes ``CHUNK`` rows at a time: the k-means weights, the subsample it fits on
(``pack_vectors.fit_sample``), and the assignment of every shard to its nearest centre. The chunks
are multiples of ``pack_vectors``' own block, so the results are those of the whole-pool
computation, bit for bit (``tests/shard/test_pack_speed_shape.py``).
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.lora.adapter import LoraAdapter
from adapterhub.shard.pack_types import pool_key
from adapterhub.shard.pack_vectors import _CHUNK, canonical_vectors, directions, fit_sample, from_shards, kmeans_fit, nearest, to_shards

CHUNK = _CHUNK  # rows per pool-wide step (a multiple of nearest()'s block: same results as unchunked)
SPILL_BYTES = 64 << 20  # canonical vectors above this (estimated from the first adapter) go to a temp file


def check_shapes(name: str, adapter: LoraAdapter, shapes: dict[str, tuple[int, int]]) -> None:
    for path in adapter.module_paths:
        d_out, d_in, _ = adapter.module_shape(path)
        seen = shapes.setdefault(path, (d_out, d_in))
        if seen != (d_out, d_in):
            raise IncompatibleAdaptersError(
                f"adapter '{name}' module '{path}' is {d_out}x{d_in} but another adapter's is "
                f"{seen[0]}x{seen[1]}; adapters of one base must agree on shapes"
            )


class RowStore:
    """The shards of one pool, ``(n, width)`` in one dtype, appended block by block; in memory or in a file."""

    def __init__(self, width: int, dtype: torch.dtype, folder: str | None) -> None:
        self.width, self.dtype, self.n = width, dtype, 0
        self._blocks: list[torch.Tensor] = []
        self._starts: list[int] = []
        self._row_bytes = width * torch.empty(0, dtype=dtype).element_size()
        self._fd = os.open(os.path.join(folder, f"pool{id(self)}"), os.O_RDWR | os.O_CREAT, 0o600) if folder else None

    def append(self, block: torch.Tensor) -> int:
        """Store ``block`` (rows of this width); returns the index of its first row."""
        block = block.to(self.dtype).contiguous()
        start = self.n
        if self._fd is not None:
            os.pwrite(self._fd, block.view(torch.uint8).numpy().tobytes(), start * self._row_bytes)
        else:
            self._blocks.append(block)
            self._starts.append(start)
        self.n += block.shape[0]
        return start

    def rows(self, start: int, stop: int) -> torch.Tensor:
        stop = min(stop, self.n)
        if self._fd is not None:
            raw = os.pread(self._fd, (stop - start) * self._row_bytes, start * self._row_bytes)
            return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(self.dtype).reshape(stop - start, self.width)
        first = bisect.bisect_right(self._starts, start) - 1
        parts, at = [], first
        while at < len(self._blocks) and self._starts[at] < stop:
            s0 = self._starts[at]
            parts.append(self._blocks[at][max(start - s0, 0) : stop - s0])
            at += 1
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def chunks(self):  # type: ignore[no-untyped-def]
        for start in range(0, self.n, CHUNK):
            yield start, self.rows(start, start + CHUNK)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Rows at sorted ``index``, read ``CHUNK`` rows at a time (only the chunks it touches)."""
        out = torch.empty(index.numel(), self.width, dtype=self.dtype)
        at = 0
        while at < index.numel():
            start = int(index[at]) // CHUNK * CHUNK
            block = self.rows(start, start + CHUNK)
            stop = int(torch.searchsorted(index, start + block.shape[0]))
            out[at:stop] = block[index[at:stop] - start]
            at = stop
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Canonical:
    """Canonical vectors of a whole library, in per-pool stores, and where each module's are."""

    l: int
    dtype: torch.dtype
    folder: str | None
    stores: dict[str, RowStore] = field(default_factory=dict)
    members: dict[str, list[tuple[str, str, str, int, int]]] = field(default_factory=dict)  # key -> (name, path, side, start, rows)
    where: dict[tuple[str, str, str], tuple[str, int, int, int]] = field(default_factory=dict)  # (name, path, side) -> key, start, rows, d
    paths: dict[str, list[str]] = field(default_factory=dict)  # name -> module paths, in the adapter's order
    norm_sq: dict[str, float] = field(default_factory=dict)  # ||ΔW||² of each adapter

    def add(self, name: str, adapter: LoraAdapter) -> None:
        vecs, total = {}, 0.0
        for path, module in adapter.modules():
            cu, cv = canonical_vectors(module)
            total += float((cu.square().sum(1) * cv.square().sum(1)).sum())
            vecs[path] = (cu.to(self.dtype), cv.to(self.dtype))
        self.paths[name], self.norm_sq[name] = list(vecs), total
        for path in sorted(vecs):
            for side, vec in zip(("B", "A"), vecs[path]):
                key = pool_key(path, side, vec.shape[1])
                shards = to_shards(vec, self.l)
                if key not in self.stores:
                    self.stores[key] = RowStore(shards.shape[1], self.dtype, self.folder)
                start = self.stores[key].append(shards)
                self.members.setdefault(key, []).append((name, path, side, start, shards.shape[0]))
                self.where[(name, path, side)] = (key, start, shards.shape[0], vec.shape[1])

    def vectors(self, name: str, path: str, side: str) -> torch.Tensor:
        """``(r, d)`` canonical vectors of one module side, in the storage dtype."""
        key, start, rows, d = self.where[(name, path, side)]
        return from_shards(self.stores[key].rows(start, start + rows), d, self.l)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


def read_library(adapters: Mapping[str, LoraAdapter], names: list[str], l: int, dtype: torch.dtype | None, folder: str):  # type: ignore[no-untyped-def]
    """Read every adapter once (checking base and shapes), keeping its canonical vectors.

    Returns ``(canonical, info)``, ``info``: name -> ``(config, extras, factor_bytes)``. The stores
    go to files in ``folder`` when the library's vectors are estimated above ``SPILL_BYTES``.
    """
    canon: Canonical | None = None
    shapes: dict[str, tuple[int, int]] = {}
    info = {}
    base = None
    for name in names:
        adapter = adapters[name]
        if canon is None:
            base = adapter.base_model
            if dtype is None:
                dtype = next(adapter.modules())[1].A.dtype
            itemsize = torch.empty(0, dtype=dtype).element_size()
            estimate = len(names) * itemsize * sum(r * (d_out + d_in) for d_out, d_in, r in map(adapter.module_shape, adapter.module_paths))
            canon = Canonical(l, dtype, folder if estimate > SPILL_BYTES else None)
        elif adapter.base_model != base:
            raise IncompatibleAdaptersError(
                f"adapters of different base models cannot share pools: {sorted(map(str, {base, adapter.base_model}))} "
                f"('{names[0]}', '{name}'); pack each base separately"
            )
        check_shapes(name, adapter, shapes)
        canon.add(name, adapter)
        factor_bytes = sum(m.A.numel() * m.A.element_size() + m.B.numel() * m.B.element_size() for _, m in adapter.modules())
        info[name] = (adapter.config, adapter.extra_tensors(), factor_bytes)
        del adapter
    if canon is None:
        raise InvalidParameterError("pack_library needs at least one adapter")
    return canon, info


def fit_pool(store: RowStore, k: int, *, seed: int, max_iter: int, max_fit_points: int, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    """One pool: weighted k-means on a seeded subsample, then every shard's index and coefficient.

    Returns ``(pool, idx, coef)``: ``(k', width)`` centres in ``dtype``, ``(n,)`` long, ``(n,)`` ``dtype``.
    """
    weights = torch.cat([directions(block)[1] for _, block in store.chunks()])
    generator = torch.Generator().manual_seed(seed)
    live = fit_sample(weights, max_fit_points, generator)
    X = torch.empty(live.numel(), store.width)
    for start in range(0, live.numel(), CHUNK):  # directions of the sample, a chunk at a time
        X[start : start + CHUNK] = directions(store.take(live[start : start + CHUNK]))[0]
    centers = kmeans_fit(X, weights[live].double(), k, generator=generator, max_iter=max_iter)
    del X
    release_memory()
    pool = centers.to(dtype)
    centers = pool.float()
    c_sq = centers.square().sum(1)
    c_sq = torch.where(c_sq > 0, c_sq, torch.ones_like(c_sq))
    idx = torch.empty(store.n, dtype=torch.long)
    coef = torch.empty(store.n, dtype=dtype)
    for start, block in store.chunks():
        stop = start + block.shape[0]
        idx[start:stop] = nearest(directions(block)[0], centers)
        coef[start:stop] = ((block.float() * centers[idx[start:stop]]).sum(1) / c_sq[idx[start:stop]]).to(dtype)
    release_memory()
    return pool, idx, coef


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    A pool's chunked steps allocate and free blocks of 1-32 MB, which glibc serves from its heap
    once its mmap threshold has grown; long-lived tensors (pools, indices) allocated in between
    then keep that heap from shrinking, and the resident size would carry the largest transient of
    every earlier pool into the next one (1.5 GB instead of 0.6 GB at 100 Llama-layer adapters).
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():  # type: ignore[no-untyped-def]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def spill_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="adapterhub-pack-")
