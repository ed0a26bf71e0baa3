"""ties / dare / magnitude against PEFT's own merge_utils on the same dense deltas."""

from __future__ import annotations

import pytest
import torch
from peft.utils import merge_utils as peft

from adapterhub.merge import dense, merge_adapters
from adapterhub.merge.base import ModuleContext
from tests.helpers import dense_delta, rel, toy_adapter

pytestmark = pytest.mark.filterwarnings("ignore:The density .* no pruning:UserWarning")

FULL = 16  # min(d_out, d_in) of the test modules: refit at this rank is lossless


@pytest.fixture
def inputs():
    return [toy_adapter(11, r=4, alpha=8), toy_adapter(12, r=6, alpha=6), toy_adapter(13, r=3, alpha=1)]


def _deltas(inputs, path):
    return [dense_delta(a, path).float() for a in inputs]


@pytest.mark.parametrize("majority", ["total", "frequency"])
@pytest.mark.parametrize("density", [0.1, 0.35, 1.0])
def test_ties_matches_peft(inputs, majority, density):
    weights = [1.0, 0.5, 2.0]
    deltas = _deltas(inputs, "layer.0.up")
    w = torch.tensor(weights)
    ours = dense.ties(deltas, w, density, majority)
    theirs = peft.ties(deltas, w, density, majority)
    assert torch.allclose(ours, theirs, atol=1e-6)
    # and end to end, with a lossless refit
    result = merge_adapters(
        inputs, "ties", weights=weights, params={"k": FULL, "density": density, "majority_sign": majority}
    )
    for path in result.adapter.module_paths:
        expected = peft.ties(_deltas(inputs, path), w, density, majority)
        assert rel(result.adapter.module(path).delta(), expected) < 1e-4


@pytest.mark.parametrize("density", [0.05, 0.3, 1.0])
def test_magnitude_matches_peft(inputs, density):
    weights = [0.3, -1.0, 1.5]
    w = torch.tensor(weights)
    result = merge_adapters(inputs, "magnitude", weights=weights, params={"k": FULL, "density": density})
    for path in result.adapter.module_paths:
        expected = peft.magnitude_prune(_deltas(inputs, path), w, density)
        assert rel(result.adapter.module(path).delta(), expected) < 1e-4


@pytest.mark.parametrize("density", [0.2, 0.7])
def test_dare_masks_match_peft_for_the_same_seed(inputs, density):
    deltas = _deltas(inputs, "layer.0.q")
    w = torch.tensor([1.0, 0.5, 2.0])
    torch.manual_seed(1234)
    theirs_linear = peft.dare_linear(deltas, w, density)
    theirs_ties = peft.dare_ties(deltas, w, density, "total")
    g = torch.Generator().manual_seed(1234)
    ours_linear = dense.dare_linear(deltas, w, density, g)
    ours_ties = dense.dare_ties(deltas, w, density, "total", g)  # the same generator continues, as PEFT's does
    assert torch.allclose(ours_linear, theirs_linear, atol=1e-6)
    assert torch.allclose(ours_ties, theirs_ties, atol=1e-6)


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_end_to_end_uses_the_module_seed(inputs, method):
    """The merge draws module m's masks from Generator(seed + m), in input order."""
    weights = [1.0, -0.5, 2.0]
    seed = 7
    result = merge_adapters(inputs, method, weights=weights, seed=seed, params={"k": FULL, "density": 0.4})
    for index, path in enumerate(result.adapter.module_paths):
        g = ModuleContext(path=path, index=index, weights=tuple(weights), seed=seed).generator()
        deltas, w = _deltas(inputs, path), torch.tensor(weights)
        expected = (
            dense.dare_linear(deltas, w, 0.4, g) if method == "dare_linear" else dense.dare_ties(deltas, w, 0.4, "total", g)
        )
        assert rel(result.adapter.module(path).delta(), expected) < 1e-4
    again = merge_adapters(inputs, method, weights=weights, seed=seed, params={"k": FULL, "density": 0.4})
    other = merge_adapters(inputs, method, weights=weights, seed=seed + 1, params={"k": FULL, "density": 0.4})
    path = "layer.0.up"
    assert torch.equal(again.adapter.module(path).B, result.adapter.module(path).B)
    assert not torch.allclose(other.adapter.module(path).delta(), result.adapter.module(path).delta())


def test_dare_is_unbiased():
    """E[drop-and-rescale] is the original delta: the mean over many masks converges to it."""
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(30, 20, generator=g)
    mean = torch.stack([dense.random_prune(delta, 0.3, g) for _ in range(4000)]).mean(0)
    assert rel(mean, delta) < 0.05
    kept = (dense.random_prune(delta, 0.3, g) != 0).float().mean()
    assert abs(float(kept) - 0.3) < 0.05


def test_randomized_refit_is_near_optimal():
    """A pruned (so nearly full-rank) delta: the seeded randomised refit is within 1% of the
    Eckart-Young error, and its reported error is exact."""
    g = torch.Generator().manual_seed(3)
    low_rank = torch.randn(600, 16, generator=g) @ torch.randn(16, 500, generator=g)
    D = dense.magnitude_prune(low_rank, 0.2)
    S = torch.linalg.svdvals(D.double())
    for k in (4, 16):
        optimal = float(S[k:].pow(2).sum().sqrt() / S.pow(2).sum().sqrt())
        B, A, reported = dense.refit_low_rank(D, k, generator=g, mode="randomized")
        actual = rel(B @ A, D)
        assert abs(reported - actual) < 1e-4
        assert actual <= optimal * 1.01
        Be, Ae, exact = dense.refit_low_rank(D, k, generator=g, mode="exact")
        assert abs(exact - optimal) < 1e-5


def test_refit_error_is_reported(inputs):
    result = merge_adapters(inputs, "ties", params={"k": 2, "density": 0.5})
    for module in result.report.modules:
        assert 0 < module.stats["refit_error"] < 1
        assert module.rank == 2
