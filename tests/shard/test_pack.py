"""Packing a library into shared shard pools: exactness, determinism, refusals, add, bytes, speed."""

from __future__ import annotations

import math
import time

import pytest
import torch

from adapterhub.errors import IncompatibleAdaptersError, InvalidAdapterError, InvalidParameterError
from adapterhub.lora.adapter import LoraAdapter
from adapterhub.lora.module import LoraModule
from adapterhub.shard.pack import PackedLibrary, pack_library
from adapterhub.shard.pack_baselines import int8_quantise, truncate_rank

SHAPES = {"q_proj": (32, 16), "up_proj": (48, 16)}


def make_adapter(seed: int, *, base: str = "tiny-base", rank: int = 4, shared: torch.Tensor | None = None) -> LoraAdapter:
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for layer in range(2):
        for kind, (d_out, d_in) in SHAPES.items():
            A = torch.randn(rank, d_in, generator=g)
            B = torch.randn(d_out, rank, generator=g)
            modules[f"model.layers.{layer}.{kind}"] = LoraModule(A=A, B=B, scale=0.5)
    return LoraAdapter.from_modules(modules, base_model=base, config_overrides={"task_type": "CAUSAL_LM"})


@pytest.fixture(scope="module")
def library() -> dict[str, LoraAdapter]:
    return {f"ns/a{i}": make_adapter(i) for i in range(5)}


def rel_delta_error(a: LoraAdapter, b: LoraAdapter) -> float:
    num = sum(float((a.delta_weight(p) - b.delta_weight(p)).square().sum()) for p in a.module_paths)
    den = sum(float(a.delta_weight(p).square().sum()) for p in a.module_paths)
    return math.sqrt(num / den)


def test_unlimited_private_budget_is_exact(library):
    packed = pack_library(library, pool_size=8, shards_per_vector=2, private_budget=math.inf, seed=0)
    for name, original in library.items():
        out = packed.unpack(name)
        assert out.module_paths == original.module_paths
        assert out.config.raw["task_type"] == "CAUSAL_LM" and out.base_model == "tiny-base"
        assert rel_delta_error(original, out) < 1e-5
        assert packed.stats().errors[name] < 1e-5


def test_private_budget_lowers_error(library):
    errors = [pack_library(library, pool_size=8, shards_per_vector=2, private_budget=b, seed=0).stats().mean_error
              for b in (0, 4000, 20000)]
    assert errors[0] > errors[1] > errors[2]


def test_reported_error_matches_dense(library):
    packed = pack_library(library, pool_size=8, shards_per_vector=2, private_budget=2000, seed=0)
    for name in library:
        assert packed.stats().errors[name] == pytest.approx(rel_delta_error(library[name], packed.unpack(name)), rel=1e-4)


def test_deterministic_under_seed(library):
    a, _ = pack_library(library, pool_size=8, shards_per_vector=2, seed=3).to_tensors()
    b, _ = pack_library(library, pool_size=8, shards_per_vector=2, seed=3).to_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_refusals(library):
    with pytest.raises(InvalidParameterError):
        pack_library(library, pool_size=0)
    mixed = dict(library, other=make_adapter(9, base="other-base"))
    with pytest.raises(IncompatibleAdaptersError):
        pack_library(mixed, pool_size=8)
    wrong = LoraAdapter.from_modules(
        {"model.layers.0.q_proj": LoraModule(A=torch.randn(4, 8), B=torch.randn(32, 4), scale=1.0)}, base_model="tiny-base"
    )
    with pytest.raises(IncompatibleAdaptersError):
        pack_library(dict(library, wrong=wrong), pool_size=8)


def test_round_trip_and_out_of_range_index(library):
    packed = pack_library(library, pool_size=8, shards_per_vector=2, private_budget=2000, seed=0)
    tensors, meta = packed.to_tensors()
    again = PackedLibrary.from_tensors(tensors, meta)
    for name in library:
        assert rel_delta_error(packed.unpack(name), again.unpack(name)) < 1e-6
    key = next(k for k, t in tensors.items() if ".idx_" in k and t.numel())
    bad = dict(tensors)
    bad[key] = tensors[key].clone()
    bad[key].view(-1)[0] = 60000
    with pytest.raises(InvalidAdapterError, match="outside pool"):
        PackedLibrary.from_tensors(bad, meta)
    missing = {k: v for k, v in tensors.items() if k != key}
    with pytest.raises(InvalidAdapterError):
        PackedLibrary.from_tensors(missing, meta)


def test_add_keeps_others_and_grows_when_over_budget(library):
    names = sorted(library)[:4]
    packed = pack_library({n: library[n] for n in names}, pool_size=8, shards_per_vector=2, seed=0)
    before = {n: packed.unpack(n) for n in names}
    pool_sizes = {k: p.shape[0] for k, p in packed.pools.items()}
    err = packed.add("ns/new", library[sorted(library)[4]], max_error=0.1)
    assert err <= 0.1 + 1e-6
    assert any(packed.pools[k].shape[0] > n for k, n in pool_sizes.items())  # it had to grow
    for n in names:
        after = packed.unpack(n)
        assert all(torch.equal(before[n].module(p).A, after.module(p).A) for p in after.module_paths)
    with pytest.raises(InvalidParameterError):
        packed.add("ns/new", library[names[0]])


def test_stats_bytes_add_up(library):
    packed = pack_library(library, pool_size=8, shards_per_vector=2, private_budget=3000, seed=0)
    s = packed.stats()
    assert s.total_packed_bytes == sum(s.packed_bytes.values())
    assert s.unpacked_bytes == sum(
        m.A.numel() * 4 + m.B.numel() * 4 for a in library.values() for _, m in a.modules()
    )
    assert s.packed_bytes["pools"] == sum(p.numel() * 4 for p in packed.pools.values())
    assert 0 < s.packed_bytes["private"] <= 3000
    assert s.ratio == pytest.approx(s.unpacked_bytes / s.total_packed_bytes)


def test_baselines():
    a = make_adapter(0)
    t, size = truncate_rank(a, 2)
    assert t.ranks() == {p: 2 for p in a.module_paths} and size == sum((16 + d) * 2 * 4 for d, _ in SHAPES.values()) * 2
    q, qsize = int8_quantise(a)
    assert rel_delta_error(a, q) < 0.02 and qsize < sum(m.A.numel() + m.B.numel() for _, m in a.modules()) * 4 / 3


def test_minilm_library_speed():
    from adapterhub.eval import load_library

    try:
        lib = {name: adapter for name, (adapter, _) in load_library().items()}
    except Exception as e:  # pragma: no cover - the examples are shipped
        pytest.skip(f"no example library: {e}")
    start = time.perf_counter()
    packed = pack_library(lib, pool_size=256, shards_per_vector=2, seed=0)
    pack_s = time.perf_counter() - start
    name = sorted(lib)[0]
    packed.unpack(name)
    start = time.perf_counter()
    packed.unpack(name)
    unpack_s = time.perf_counter() - start
    s = packed.stats()
    print(f"MiniLM x{len(lib)}: pack {pack_s:.2f} s, unpack {unpack_s * 1000:.1f} ms, ratio {s.ratio:.2f}, mean err {s.mean_error:.3f}")
    assert pack_s < 30 * 3 and unpack_s < 0.050 * 3
    exact = pack_library(lib, pool_size=16, shards_per_vector=2, private_budget=math.inf, seed=0)
    assert rel_delta_error(lib[name], exact.unpack(name)) < 1e-5
