"""LoRA-LEGO: rank, degenerate case (k >= units is the exact sum), invariances, reweighting."""

from __future__ import annotations

import pytest
import torch

from adapterhub.lora import AdapterConfig, LoraAdapter
from adapterhub.lora.keys import lora_key
from adapterhub.lora.tensorfile import DictSource
from adapterhub.merge import merge_adapters
from adapterhub.merge.lego import canonical_units, direction_gram, kmeans_signed
from tests.helpers import dense_delta, dense_sum, rel, toy_adapter


def from_factors(factors: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float, base: str = "base") -> LoraAdapter:
    """An adapter with given (A, B) per path and lora_alpha = alpha (scale alpha/r)."""
    r = next(iter(factors.values()))[0].shape[0]
    tensors = {}
    for path, (A, B) in factors.items():
        tensors[lora_key(path, "A")] = A
        tensors[lora_key(path, "B")] = B
    raw = {"peft_type": "LORA", "base_model_name_or_path": base, "r": r, "lora_alpha": alpha,
           "target_modules": sorted({p.rsplit(".", 1)[-1] for p in factors})}
    return LoraAdapter(AdapterConfig(raw), DictSource(tensors))


def factors_of(adapter: LoraAdapter) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {p: (m.A.clone(), m.B.clone()) for p, m in adapter.modules()}


@pytest.fixture
def inputs():
    return [
        toy_adapter(21, r=4, alpha=8),
        toy_adapter(22, r=6, alpha=4, paths=("layer.0.q", "layer.0.up", "layer.1.q")),
        toy_adapter(23, r=4, alpha=16, use_rslora=True),
    ]


def test_output_rank_is_k_and_mixing_is_reported(inputs):
    result = merge_adapters(inputs, "lego", params={"k": 3})
    assert result.weights == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    for module in result.report.modules:
        assert module.rank == 3
        assert 0 <= module.stats["mixing_share"] <= 1
        assert module.stats["units"] == sum(a.module(module.path).rank for a in inputs if module.path in a.module_paths)
    assert result.report.output_rank == 3
    assert 0 <= result.report.mixing_share <= 1
    assert result.adapter.module_paths == ["layer.0.q", "layer.0.up", "layer.0.v", "layer.1.q"]


@pytest.mark.parametrize("cluster", ["kmeans", "kmedoids"])
def test_k_at_least_total_units_reproduces_the_exact_weighted_sum(inputs, cluster):
    weights = [0.5, 2.0, -1.0]
    none = merge_adapters(inputs, "lego", weights=weights, params={"k": 64, "output_reweight": "none", "cluster": cluster})
    unit = sum(abs(w) for w in weights) / len(weights)
    norm = merge_adapters(inputs, "lego", weights=weights, params={"k": 64, "cluster": cluster, "output_reweight": "norm"})
    for path in none.adapter.module_paths:
        exact = dense_sum(inputs, weights, path)
        assert rel(none.adapter.module(path).delta(torch.float64), exact) < 1e-5
        # output reweighting "norm": the sum with weights taken as proportions (w / mean|w|)
        assert rel(norm.adapter.module(path).delta(torch.float64), exact / unit) < 1e-5
    assert none.report.rel_error < 1e-5
    assert norm.report.shape_error < 1e-5


def test_default_weights_and_norm_reweighting_give_the_plain_sum_when_k_is_large(inputs):
    result = merge_adapters(inputs, "lego", params={"k": 100, "output_reweight": "norm"})
    path = "layer.0.up"
    assert rel(result.adapter.module(path).delta(torch.float64), dense_sum(inputs, [1, 1, 1], path)) < 1e-5


def test_permuting_inputs_and_ranks_changes_nothing(inputs):
    base = merge_adapters(inputs, "lego", params={"k": 4}, seed=3)
    g = torch.Generator().manual_seed(0)
    shuffled = []
    for adapter in inputs:
        factors = {}
        for path, (A, B) in factors_of(adapter).items():
            perm = torch.randperm(A.shape[0], generator=g)
            factors[path] = (A[perm], B[:, perm])
        shuffled.append(from_factors(factors, adapter.config.lora_alpha) if not adapter.config.use_rslora else adapter)
    permuted = merge_adapters(shuffled[::-1], "lego", params={"k": 4}, seed=3)
    for path in base.adapter.module_paths:
        assert rel(permuted.adapter.module(path).delta(), base.adapter.module(path).delta()) < 1e-5
    assert permuted.report.mixing_share == base.report.mixing_share


def test_sign_and_gauge_of_units_change_nothing(inputs):
    """(a, b) -> (-a, -b) and (c a, b / c) describe the same unit."""
    base = merge_adapters(inputs[:2], "lego", params={"k": 5}, seed=1)
    g = torch.Generator().manual_seed(1)
    regauged = []
    for adapter in inputs[:2]:
        factors = {}
        for path, (A, B) in factors_of(adapter).items():
            c = torch.rand(A.shape[0], generator=g) * 3 + 0.2
            c = c * torch.where(torch.rand(A.shape[0], generator=g) < 0.5, -1.0, 1.0)
            factors[path] = (A * c[:, None], B / c[None, :])
        regauged.append(from_factors(factors, adapter.config.lora_alpha))
    other = merge_adapters(regauged, "lego", params={"k": 5}, seed=1)
    for path in base.adapter.module_paths:
        assert rel(other.adapter.module(path).delta(), base.adapter.module(path).delta()) < 1e-5


def test_deterministic_under_a_seed(inputs):
    a = merge_adapters(inputs, "lego", params={"k": 3}, seed=5)
    b = merge_adapters(inputs, "lego", params={"k": 3}, seed=5)
    for path in a.adapter.module_paths:
        assert torch.equal(a.adapter.module(path).A, b.adapter.module(path).A)
        assert torch.equal(a.adapter.module(path).B, b.adapter.module(path).B)


def _shared(seed: int, strengths: list[float], noise: float = 1e-3) -> list[LoraAdapter]:
    """Adapters made of the same 4 rank-one directions at different strengths (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    A0, B0 = torch.randn(4, 16, generator=g), torch.randn(24, 4, generator=g)
    out = []
    for s in strengths:
        A = A0 + noise * torch.randn(4, 16, generator=g)
        B = s * B0 + noise * torch.randn(24, 4, generator=g)
        out.append(from_factors({"layer.0.q": (A, B)}, alpha=4.0))  # scale 1
    return out


@pytest.mark.parametrize("cluster", ["kmeans", "kmedoids"])
def test_shared_units_are_averaged_not_summed(cluster):
    """Two adapters with the same directions: every cluster mixes both inputs, and parameter
    reweighting gives each direction the *mean* strength (the trap would be the sum)."""
    a, b = _shared(0, [1.0, 3.0])
    result = merge_adapters([a, b], "lego", weights=[1, 1], params={"k": 4, "output_reweight": "none", "cluster": cluster})
    assert result.report.mixing_share == 1.0
    merged = result.adapter.module("layer.0.q").delta()
    mean = (dense_delta(a, "layer.0.q") + dense_delta(b, "layer.0.q")) / 2
    assert rel(merged, mean) < 1e-2
    # without parameter reweighting, averaging the balanced factors of units of magnitude m and 3m
    # gives ((sqrt(m) + sqrt(3m)) / 2)^2 = 0.933 * 2m: the norm decay that reweighting restores
    plain = merge_adapters(
        [a, b], "lego", weights=[1, 1], params={"k": 4, "output_reweight": "none", "param_reweight": False, "cluster": cluster}
    )
    decayed = plain.adapter.module("layer.0.q").delta()
    assert rel(decayed, mean * (1 + 3**0.5) ** 2 / 8) < 1e-2


def test_parameter_reweighting_restores_the_mean_member_norm():
    inputs = [toy_adapter(31, r=6), toy_adapter(32, r=6)]
    on = merge_adapters(inputs, "lego", params={"k": 2, "output_reweight": "none"}, seed=0)
    off = merge_adapters(inputs, "lego", params={"k": 2, "output_reweight": "none", "param_reweight": False}, seed=0)
    for path in on.adapter.module_paths:
        m_on, m_off = on.adapter.module(path), off.adapter.module(path)
        norms_on = (m_on.B.norm(dim=0) * m_on.A.norm(dim=1)).sort().values
        norms_off = (m_off.B.norm(dim=0) * m_off.A.norm(dim=1)).sort().values
        assert norms_on.sum() > norms_off.sum() * 1.05
        # same directions (clusters may be listed in another order), only rescaled
        cos = (torch.nn.functional.normalize(m_on.A, dim=1) @ torch.nn.functional.normalize(m_off.A, dim=1).T).abs()
        assert (cos.max(dim=1).values > 1 - 1e-5).all()


@pytest.mark.parametrize("mode", ["norm", "mean", "sum"])
def test_output_reweighting_targets(inputs, mode):
    weights = [1.0, 3.0, 2.0]
    result = merge_adapters(inputs, "lego", weights=weights, params={"k": 3, "output_reweight": mode})
    unit = sum(weights) / 3
    for path in result.adapter.module_paths:
        have = [(a, w) for a, w in zip(inputs, weights) if path in a.module_paths]
        if mode == "norm":
            target = float(dense_sum(inputs, weights, path).norm()) / unit
        else:
            total = sum(w * float(dense_delta(a, path).norm()) for a, w in have) / unit
            target = total if mode == "sum" else total / len(inputs)
        got = float(result.adapter.module(path).delta(torch.float64).norm())
        assert got == pytest.approx(target, rel=1e-5)


def test_output_reweighting_ignores_the_overall_weight_scale(inputs):
    a = merge_adapters(inputs, "lego", weights=[1, 2, 3], params={"k": 3})
    b = merge_adapters(inputs, "lego", weights=[10, 20, 30], params={"k": 3})
    for path in a.adapter.module_paths:
        assert rel(a.adapter.module(path).delta(), b.adapter.module(path).delta()) < 1e-5


def test_units_are_balanced_and_sign_canonical(inputs):
    from adapterhub.merge.base import Term

    terms = [Term(i, 0.5, a.module("layer.0.up")) for i, a in enumerate(inputs)]
    units = canonical_units(terms)
    assert torch.allclose(units.a.norm(dim=1), units.b.norm(dim=1), rtol=1e-5)
    assert torch.allclose(units.a.norm(dim=1).double() ** 2, units.magnitude, rtol=1e-5)
    lead = torch.cat([units.a, units.b], dim=1)
    idx = lead.abs().argmax(dim=1)
    assert (lead[torch.arange(len(idx)), idx] > 0).all()
    assert (units.magnitude[:-1] >= units.magnitude[1:]).all()
    # the units sum to the weighted sum exactly
    total = sum(0.5 * dense_delta(a, "layer.0.up") for a in inputs)
    assert rel(units.b.double().T @ units.a.double(), total) < 1e-5


def test_kmeans_recovers_planted_sign_mixed_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(3, 40, generator=g), dim=1)
    labels = torch.arange(30) % 3
    signs = torch.where(torch.rand(30, generator=g) < 0.5, -1.0, 1.0)
    X = torch.nn.functional.normalize(signs[:, None] * (centers[labels] + 0.05 * torch.randn(30, 40, generator=g)), dim=1)
    G = (X @ X.T).double()
    found, found_signs = kmeans_signed(G, torch.rand(30, generator=g).double() + 0.5, 3, generator=g, restarts=3, max_iter=50)
    # same partition up to relabelling, and members sign-aligned within each cluster
    for c in range(3):
        members = labels[found == c]
        assert members.unique().numel() == 1
        aligned = found_signs[found == c] * signs[found == c]
        assert aligned.unique().numel() == 1


def test_zero_units_are_dropped():
    a = toy_adapter(41, r=4)
    factors = factors_of(a)
    A, B = factors["layer.0.q"]
    B[:, :2] = 0  # two untrained ranks
    z = from_factors({"layer.0.q": (A, B)}, alpha=8)
    result = merge_adapters([z], "lego", params={"k": 10, "output_reweight": "none"}, weights=[1.0])
    module = result.report.modules[0]
    assert module.stats["null_units"] == 2 and module.rank == 2
    assert rel(result.adapter.module("layer.0.q").delta(torch.float64), dense_delta(z, "layer.0.q")) < 1e-5


def test_gram_is_sign_invariant_cosine(inputs):
    from adapterhub.merge.base import Term

    units = canonical_units([Term(0, 1.0, inputs[0].module("layer.0.q"))])
    G = direction_gram(units)
    assert torch.allclose(G.diagonal(), torch.ones(G.shape[0], dtype=G.dtype))


def test_one_cluster_has_the_mean_member_magnitude():
    a = toy_adapter(51, r=5)
    result = merge_adapters([a], "lego", weights=[1.0], params={"k": 1, "output_reweight": "none"})
    for path in a.module_paths:
        m = a.module(path)
        magnitudes = m.scale * m.B.double().norm(dim=0) * m.A.double().norm(dim=1)
        merged = result.adapter.module(path).delta(torch.float64)
        assert float(merged.norm()) == pytest.approx(float(magnitudes.mean()), rel=1e-5)


def test_merging_an_adapter_with_itself():
    """Shared units pair up (mixing 1.0); "mean" gives the adapter back, "norm" the sum (2x)."""
    a = toy_adapter(61, r=4)
    mean = merge_adapters([a, a], "lego", params={"k": 4, "output_reweight": "mean"})
    norm = merge_adapters([a, a], "lego", params={"k": 4, "output_reweight": "norm"})
    assert mean.report.mixing_share == 1.0
    for path in a.module_paths:
        assert rel(mean.adapter.module(path).delta(torch.float64), dense_delta(a, path)) < 1e-5
        assert rel(norm.adapter.module(path).delta(torch.float64), 2 * dense_delta(a, path)) < 1e-5


def test_default_output_reweighting_is_the_validated_mean():
    """"mean" was picked on the validation split (module docstring, step 6): with k >= all units it
    is the exact weighted sum rescaled to the inputs' mean norm."""
    import inspect

    from adapterhub.merge.base import ModuleContext, Term
    from adapterhub.merge.lego import DEFAULT_OUTPUT_REWEIGHT, lego_module

    assert DEFAULT_OUTPUT_REWEIGHT == "mean"
    assert inspect.signature(lego_module).parameters["output_reweight"].default == DEFAULT_OUTPUT_REWEIGHT
    inputs = [toy_adapter(71, r=3), toy_adapter(72, r=3)]
    path = inputs[0].module_paths[0]
    terms = [Term(i, 0.5, a.module(path)) for i, a in enumerate(inputs)]
    out = lego_module(terms, ModuleContext(path=path, index=0, weights=(0.5, 0.5), seed=0), k=6)
    exact = dense_sum(inputs, [1, 1], path)
    target = sum(float(dense_delta(a, path).norm()) for a in inputs) / 2
    merged = out.B.double() @ out.A.double()
    assert rel(merged, exact * (target / float(exact.norm()))) < 1e-5


def test_cohesion_tells_shared_units_from_a_shared_init():
    """Shared units: members agree on both factors. Adapters trained from one init share their A
    rows but not their B columns: clusters are the init's rank slots, and the B's averaged in
    each are unrelated (b_cohesion about 1/sqrt(4) for four adapters)."""
    a, b = _shared(0, [1.0, 3.0])
    shared = merge_adapters([a, b], "lego", params={"k": 4}).report.modules[0].stats
    assert shared["a_cohesion"] > 0.99 and shared["b_cohesion"] > 0.99
    g = torch.Generator().manual_seed(5)
    A0 = torch.randn(4, 64, generator=g)
    same_init = [
        from_factors({"layer.0.q": (A0 + 0.01 * torch.randn(4, 64, generator=g), torch.randn(64, 4, generator=g))}, 4.0)
        for _ in range(4)
    ]
    stats = merge_adapters(same_init, "lego", params={"k": 4}, seed=0).report.modules[0].stats
    assert stats["mixing_share"] == 1.0 and stats["a_cohesion"] > 0.99
    assert 0.3 < stats["b_cohesion"] < 0.75
    alone = merge_adapters([toy_adapter(81, r=2)], "lego", params={"k": 8}, weights=[1.0])
    assert "a_cohesion" not in alone.report.modules[0].stats  # singletons only: nothing to measure
