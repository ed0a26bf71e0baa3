"""The memory-bounding paths of packing (spill to a file, chunked pool steps, single read) give the
same library as the plain in-memory, whole-pool path, bit for bit. Not timed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
import torch

from adapterhub.lora.adapter import LoraAdapter
from adapterhub.shard import pack_fit
from adapterhub.shard.pack import pack_library
from adapterhub.shard.pack_fit import RowStore
from adapterhub.shard.pack_vectors import directions, nearest, to_shards, weighted_kmeans

from .test_pack import make_adapter


class CountingLibrary(Mapping[str, LoraAdapter]):
    """Builds an adapter on every read and counts the reads."""

    def __init__(self, n: int) -> None:
        self.names = [f"ns/a{i}" for i in range(n)]
        self.reads = 0

    def __getitem__(self, name: str) -> LoraAdapter:
        self.reads += 1
        return make_adapter(self.names.index(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _tensors(lib, **kw) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    tensors, meta = pack_library(lib, **kw).to_tensors()
    tensors["errors"] = torch.tensor([a["error"] for a in meta["adapters"]], dtype=torch.float64)
    return tensors


KW = [
    dict(pool_size=8, shards_per_vector=2, private_budget=2000, seed=1),
    dict(pool_size=6, shards_per_vector=3, private_budget=500, seed=2, max_fit_points=20, max_iter=5),
    dict(pool_size=4, shards_per_vector=1, private_budget=10_000, seed=0, dtype=torch.float16, max_fit_points=7),
]


@pytest.mark.parametrize("kw", KW)
def test_spilled_and_chunked_equal_in_memory(kw, monkeypatch):
    lib = {f"ns/a{i}": make_adapter(i) for i in range(5)}
    plain = _tensors(lib, **kw)
    monkeypatch.setattr(pack_fit, "SPILL_BYTES", 0)  # every store in a temp file
    monkeypatch.setattr(pack_fit, "CHUNK", 8)  # many chunks, members straddling them
    bounded = _tensors(lib, **kw)
    assert plain.keys() == bounded.keys()
    assert all(torch.equal(plain[k], bounded[k]) for k in plain)


def test_each_adapter_read_once_unless_verbatim():
    lib = CountingLibrary(4)
    pack_library(lib, pool_size=8, shards_per_vector=2, seed=0)
    assert lib.reads == 4


def test_pool_fit_matches_whole_pool_kmeans(monkeypatch):
    """``fit_pool`` on a chunked, spilled store == ``weighted_kmeans`` + ``nearest`` on the whole pool."""
    g = torch.Generator().manual_seed(0)
    shards = to_shards(torch.randn(40, 12, generator=g), 2)
    dirs, weights = directions(shards)
    whole = weighted_kmeans(dirs, weights, 5, seed=7, max_iter=6, max_fit_points=30)
    monkeypatch.setattr(pack_fit, "CHUNK", 7)
    with pack_fit.spill_folder() as folder:
        store = RowStore(shards.shape[1], torch.float32, folder)
        for block in shards.split(9):
            store.append(block)
        assert torch.equal(store.rows(0, store.n), shards) and torch.equal(store.take(torch.tensor([3, 20, 79])), shards[[3, 20, 79]])
        pool, idx, _ = pack_fit.fit_pool(store, 5, seed=7, max_iter=6, max_fit_points=30, dtype=torch.float32)
        store.close()
    assert torch.equal(pool, whole) and torch.equal(idx, nearest(dirs, whole))
