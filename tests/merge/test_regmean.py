"""RegMean against an independent dense reference (plain torch, float64, dense solve and SVD).

Reference: ``G~_i = alpha G_i + (1 - alpha) diag(G_i)``,
``ΔW* = (sum_i w_i s_i B_i A_i G~_i) (mean_i G~_i)^-1``, then the best rank-k approximation. The
production code adds a ``1e-6`` ridge, negligible for the well-conditioned Grams used here.
"""

from __future__ import annotations

import pytest
import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.merge import merge_adapters
from adapterhub.merge.base import ModuleContext, Term
from adapterhub.merge.params import RegMeanParams
from adapterhub.merge.regmean import regmean_merge
from tests.helpers import rel

D_OUT, D_IN = 24, 20
TOL = 1e-4


def random_gram(g, n_rows=50):
    X = torch.randn(n_rows, D_IN, generator=g, dtype=torch.float64)
    return X.T @ X


def make_terms(seed, ranks, weights=None, grams="random", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    weights = weights or [1.0 / len(ranks)] * len(ranks)
    shared = random_gram(g)
    terms = []
    for i, (r, w) in enumerate(zip(ranks, weights)):
        A = torch.randn(r, D_IN, generator=g, dtype=torch.float64).to(dtype)
        B = torch.randn(D_OUT, r, generator=g, dtype=torch.float64).to(dtype)
        G = {"random": random_gram(g), "shared": shared, None: None}[grams]
        terms.append(Term(i, w, LoraModule(A=A, B=B, scale=0.5 + 0.5 * i), G))
    return terms


def ctx_for(terms, path="m"):
    return ModuleContext(path=path, index=0, weights=tuple(t.weight for t in terms), seed=0)


def out(merged):
    return merged.B.double() @ merged.A.double()


def delta(t):
    return t.coeff * (t.module.B.double() @ t.module.A.double())


def best_rank(M, k):
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    return (U[:, :k] * S[:k]) @ Vh[:k]


def ref_regmean(deltas, grams, k, alpha):
    shrunk = [alpha * G.double() + (1 - alpha) * torch.diag(torch.diagonal(G.double())) for G in grams]
    numerator = sum(D @ G for D, G in zip(deltas, shrunk))
    mean = sum(shrunk) / len(shrunk)
    merged = torch.linalg.solve(mean, numerator.T).T  # numerator @ mean^-1 (mean symmetric)
    return best_rank(merged, k)


# ---------------------------------------------------------------------------- module level
@pytest.mark.parametrize("seed,ranks", [(0, [2, 3]), (1, [4, 2, 3]), (2, [3, 4, 2, 4])])
@pytest.mark.parametrize("k", [1, 4, 64])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.0])
def test_regmean_matches_dense(seed, ranks, k, alpha):
    terms = make_terms(seed, ranks, weights=[0.4, -0.3, 0.7, 0.2][: len(ranks)])
    got = out(regmean_merge(terms, RegMeanParams(k=k, alpha=alpha), ctx_for(terms)))
    expected = ref_regmean([delta(t) for t in terms], [t.gram for t in terms], k, alpha)
    assert rel(got, expected) < TOL
    assert torch.linalg.matrix_rank(got, rtol=1e-5) <= min(k, sum(ranks))


def test_regmean_float64_factors():
    terms = make_terms(3, [3, 4], dtype=torch.float64)
    got = out(regmean_merge(terms, RegMeanParams(k=5, alpha=0.9), ctx_for(terms)))
    assert rel(got, ref_regmean([delta(t) for t in terms], [t.gram for t in terms], 5, 0.9)) < TOL


def test_regmean_differs_from_linear_with_different_grams():
    """Sanity check that the data actually matters (the tests above are not trivially the sum)."""
    terms = make_terms(4, [3, 3, 2])
    got = out(regmean_merge(terms, RegMeanParams(k=64, alpha=1.0), ctx_for(terms)))
    assert rel(got, sum(delta(t) for t in terms)) > 1e-2


@pytest.mark.parametrize("weights", [[1 / 3] * 3, [1.0] * 3, [0.7, -1.3, 2.0], [3 ** -0.5] * 3])
@pytest.mark.parametrize("alpha", [0.0, 0.9, 1.0])
def test_identical_grams_give_the_linear_merge(weights, alpha):
    terms = make_terms(5, [2, 4, 3], weights=weights, grams="shared")
    got = out(regmean_merge(terms, RegMeanParams(k=9, alpha=alpha), ctx_for(terms)))
    assert rel(got, sum(delta(t) for t in terms)) < TOL


def test_identical_grams_uniform_weights_is_the_average():
    terms = make_terms(6, [3, 3], weights=[0.5, 0.5], grams="shared")
    got = out(regmean_merge(terms, RegMeanParams(k=6), ctx_for(terms)))
    average = sum(t.module.scale * t.module.B.double() @ t.module.A.double() for t in terms) / 2
    assert rel(got, average) < TOL


def test_weights_are_honoured():
    terms = make_terms(7, [3, 2, 4])
    doubled = [Term(t.index, 2 * t.weight, t.module, t.gram) for t in terms]
    p = RegMeanParams(k=5)
    assert rel(out(regmean_merge(doubled, p, ctx_for(doubled))), 2 * out(regmean_merge(terms, p, ctx_for(terms)))) < TOL


def test_gram_scale_does_not_matter():
    """Scaling every Gram by the same factor (more tokens) leaves the merge unchanged."""
    terms = make_terms(8, [3, 2])
    scaled = [Term(t.index, t.weight, t.module, 10.0 * t.gram) for t in terms]
    p = RegMeanParams(k=5)
    assert rel(out(regmean_merge(scaled, p, ctx_for(scaled))), out(regmean_merge(terms, p, ctx_for(terms)))) < TOL


def test_missing_gram_is_a_clear_error():
    terms = make_terms(9, [2, 3, 2])
    terms[1] = Term(1, terms[1].weight, terms[1].module, None)
    with pytest.raises(InvalidParameterError, match=r"regmean needs input statistics.*'layer\.0\.q'.*\[2\]"):
        regmean_merge(terms, RegMeanParams(), ctx_for(terms, "layer.0.q"))
    none = make_terms(9, [2, 3], grams=None)
    with pytest.raises(InvalidParameterError, match=r"\[1, 2\]"):
        regmean_merge(none, RegMeanParams(), ctx_for(none))


def test_wrong_gram_shape_is_a_clear_error():
    terms = make_terms(10, [2, 3])
    terms[0] = Term(0, terms[0].weight, terms[0].module, torch.eye(D_IN + 1))
    with pytest.raises(InvalidParameterError, match=r"input 1: Gram matrix .* expected \(20, 20\)"):
        regmean_merge(terms, RegMeanParams(), ctx_for(terms))


# ---------------------------------------------------------------------------- end to end
PATHS = ("layer.0.q", "layer.1.v")


def adapters_and_grams(seed, ranks):
    g = torch.Generator().manual_seed(seed)
    adapters, grams = [], []
    for i, r in enumerate(ranks):
        modules = {
            p: LoraModule(A=torch.randn(r, D_IN, generator=g), B=torch.randn(D_OUT, r, generator=g), scale=0.5 + i)
            for p in PATHS
        }
        adapters.append(LoraAdapter.from_modules(modules, base_model="base"))
        grams.append({p: random_gram(g) for p in PATHS})
    return adapters, grams


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, -1.0]])
@pytest.mark.parametrize("k", [3, 64])
def test_end_to_end_matches_dense(weights, k):
    adapters, grams = adapters_and_grams(11, [3, 2, 4])
    result = merge_adapters(adapters, "regmean", weights=weights, params={"k": k, "alpha": 0.8}, grams=grams)
    assert result.weights == tuple(weights or [1 / 3] * 3)  # regmean defaults to 1/n
    for path in PATHS:
        deltas = [w * a.module(path).delta(torch.float64) for a, w in zip(adapters, result.weights)]
        expected = ref_regmean(deltas, [gs[path] for gs in grams], k, 0.8)
        module = result.adapter.module(path)
        assert module.rank <= k
        assert rel(module.delta(torch.float64), expected) < TOL


def test_end_to_end_without_grams_is_an_error():
    adapters, grams = adapters_and_grams(12, [2, 3])
    with pytest.raises(InvalidParameterError, match="regmean"):
        merge_adapters(adapters, "regmean")
    with pytest.raises(InvalidParameterError, match="regmean"):
        merge_adapters(adapters, "regmean", grams=[grams[0], None])
    with pytest.raises(InvalidParameterError, match="Gram sets"):
        merge_adapters(adapters, "regmean", grams=grams[:1])
