"""linear / cat / svd against the dense reference sum_i w_i s_i B_i A_i."""

from __future__ import annotations

import math

import pytest
import torch

from adapterhub.merge import merge_adapters
from adapterhub.merge.factors import fro_norm, truncated_svd
from tests.helpers import dense_sum, rel, toy_adapter


@pytest.fixture
def mixed_inputs():
    """Different ranks, scales (incl. rsLoRA) and module sets."""
    return [
        toy_adapter(1, r=4, alpha=8, paths=("layer.0.q", "layer.0.v", "layer.0.up")),
        toy_adapter(2, r=6, alpha=3, paths=("layer.0.q", "layer.0.up", "layer.1.q"), use_rslora=True),
        toy_adapter(3, r=2, alpha=16, paths=("layer.0.v", "layer.0.up")),
    ]


@pytest.mark.parametrize("method", ["linear", "cat"])
def test_linear_and_cat_are_exact(mixed_inputs, method):
    weights = [0.7, -1.3, 2.0]
    result = merge_adapters(mixed_inputs, method, weights=weights)
    out = result.adapter
    assert out.module_paths == ["layer.0.q", "layer.0.up", "layer.0.v", "layer.1.q"]  # union
    for path in out.module_paths:
        expected = dense_sum(mixed_inputs, weights, path)
        assert rel(out.module(path).delta(torch.float64), expected) < 1e-5
        # exact: rank = total rank of the inputs that have the module
        assert out.module(path).rank == sum(a.module(path).rank for a in mixed_inputs if path in a.module_paths)
    assert result.report.rel_error < 1e-6
    assert result.weights == tuple(weights)


def test_sum_methods_default_to_unit_weights(mixed_inputs):
    result = merge_adapters(mixed_inputs, "cat")
    assert result.weights == (1.0, 1.0, 1.0)
    path = "layer.0.up"
    assert rel(result.adapter.module(path).delta(torch.float64), dense_sum(mixed_inputs, [1, 1, 1], path)) < 1e-5


def dense_truncation(M: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    return (U[:, :k] * S[:k]) @ Vh[:k], float(S[k:].pow(2).sum().sqrt() / S.pow(2).sum().sqrt())


@pytest.mark.parametrize("k", [1, 3, 8])
def test_svd_matches_dense_truncated_svd_and_is_optimal(mixed_inputs, k):
    weights = [1.0, 0.5, -2.0]
    result = merge_adapters(mixed_inputs, "svd", weights=weights, params={"k": k})
    for report in result.report.modules:
        S = dense_sum(mixed_inputs, weights, report.path)
        best, eckart_young = dense_truncation(S, k)
        got = result.adapter.module(report.path).delta(torch.float64)
        total_rank = sum(a.module(report.path).rank for a in mixed_inputs if report.path in a.module_paths)
        assert report.rank == min(k, total_rank)
        assert rel(got, best) < 1e-4
        # optimality: the error is exactly the Eckart-Young bound, and the report says so
        assert abs(rel(got, S) - eckart_young) < 1e-5
        assert abs(report.rel_error - eckart_young) < 1e-5


def test_linear_with_k_is_the_svd_path(mixed_inputs):
    a = merge_adapters(mixed_inputs, "linear", params={"k": 3}).adapter
    b = merge_adapters(mixed_inputs, "svd", params={"k": 3}).adapter
    for path in a.module_paths:
        assert torch.allclose(a.module(path).delta(), b.module(path).delta(), atol=1e-6)


def test_svd_factors_are_balanced():
    g = torch.Generator().manual_seed(0)
    B, A = torch.randn(50, 12, generator=g), torch.randn(12, 30, generator=g)
    Bk, Ak, S = truncated_svd(B, A, 5)
    assert torch.allclose(Bk.norm(dim=0), Ak.norm(dim=1), rtol=1e-4)
    assert torch.allclose(Bk.norm(dim=0) ** 2, S[:5].float(), rtol=1e-4)
    # tall ranks: R larger than a side still works (the core is min(d, R) wide)
    B, A = torch.randn(8, 20, generator=g), torch.randn(20, 30, generator=g)
    Bk, Ak, _ = truncated_svd(B, A, 50)
    assert Bk.shape == (8, 8) and rel(Bk @ Ak, B @ A) < 1e-5


def test_factor_space_norm():
    g = torch.Generator().manual_seed(1)
    B, A = torch.randn(40, 7, generator=g), torch.randn(7, 33, generator=g)
    assert math.isclose(fro_norm(B, A), float((B.double() @ A.double()).norm()), rel_tol=1e-9)


def test_linear_factors_is_peft_linear_with_cross_terms():
    inputs = [toy_adapter(5, r=4, alpha=8), toy_adapter(6, r=4, alpha=2)]
    weights = [0.6, -0.4]
    out = merge_adapters(inputs, "linear_factors", weights=weights).adapter
    path = "layer.0.q"
    ms = [a.module(path) for a in inputs]
    coeff = [w * m.scale for w, m in zip(weights, ms)]
    B = sum(math.sqrt(abs(c)) * m.B.double() for c, m in zip(coeff, ms))
    A = sum(math.copysign(math.sqrt(abs(c)), c) * m.A.double() for c, m in zip(coeff, ms))
    assert rel(out.module(path).delta(torch.float64), B @ A) < 1e-6
    assert rel(out.module(path).delta(torch.float64), dense_sum(inputs, weights, path)) > 0.1  # cross terms
