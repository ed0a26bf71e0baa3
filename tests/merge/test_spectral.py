"""TSV-M, Iso-C, Iso-CTS and KnOTS against independent dense references (plain torch, dense SVDs).

Each reference below is written from the paper's recipe on dense ``d_out x d_in`` task matrices
``ΔW_i = w_i s_i B_i A_i`` (float64); the production code works in factor space, so agreement to
1e-4 checks both the recipe and the factor-space algebra.
"""

from __future__ import annotations

import math

import pytest
import torch

from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.merge import merge_adapters
from adapterhub.merge.base import ModuleContext, Term
from adapterhub.merge.params import IsoCParams, IsoCtsParams, KnotsParams, TsvParams
from adapterhub.merge.spectral import iso_c_merge, iso_cts_merge, knots_merge, tsv_merge
from tests.helpers import rel

D_OUT, D_IN = 24, 20
TOL = 1e-4


# ---------------------------------------------------------------------------- inputs
def make_terms(seed, ranks, weights=None, scales=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    weights = weights or [1.0] * len(ranks)
    scales = scales or [0.5 + 0.5 * i for i in range(len(ranks))]
    terms = []
    for i, (r, w, s) in enumerate(zip(ranks, weights, scales)):
        A = torch.randn(r, D_IN, generator=g, dtype=torch.float64).to(dtype)
        B = torch.randn(D_OUT, r, generator=g, dtype=torch.float64).to(dtype)
        terms.append(Term(i, w, LoraModule(A=A, B=B, scale=s)))
    return terms


def orthogonal_terms(seed, ranks):
    """Inputs whose column spaces are mutually orthogonal, and whose row spaces are too."""
    g = torch.Generator().manual_seed(seed)
    R = sum(ranks)
    Qo = torch.linalg.qr(torch.randn(D_OUT, R, generator=g, dtype=torch.float64))[0]
    Qi = torch.linalg.qr(torch.randn(D_IN, R, generator=g, dtype=torch.float64))[0]
    terms, start = [], 0
    for i, r in enumerate(ranks):
        B = Qo[:, start : start + r] @ torch.randn(r, r, generator=g, dtype=torch.float64)
        A = torch.randn(r, r, generator=g, dtype=torch.float64) @ Qi[:, start : start + r].T
        terms.append(Term(i, 1.0, LoraModule(A=A.float(), B=B.float(), scale=1.0)))
        start += r
    return terms


def ctx_for(terms):
    return ModuleContext(path="m", index=0, weights=tuple(t.weight for t in terms), seed=0)


def deltas(terms):
    return [t.coeff * (t.module.B.double() @ t.module.A.double()) for t in terms]


def out(merged):
    return merged.B.double() @ merged.A.double()


# ---------------------------------------------------------------------------- dense references
def svd(M):
    return torch.linalg.svd(M, full_matrices=False)


def nonzero(S):
    return int((S > S[0] * 1e-9).sum()) if S.numel() and S[0] > 0 else 0


def best_rank(M, k):
    U, S, Vh = svd(M)
    return (U[:, :k] * S[:k]) @ Vh[:k]


def procrustes(M):
    P, _, Qh = svd(M)
    return P @ Qh


def ref_tsv(Ds, k, task_rank=None):
    Us, Ss, Vs = [], [], []
    for D in Ds:
        U, S, Vh = svd(D)
        keep = nonzero(S) if task_rank is None else min(task_rank, nonzero(S))
        Us.append(U[:, :keep]), Ss.append(S[:keep]), Vs.append(Vh[:keep].T)
    M = procrustes(torch.cat(Us, 1)) @ torch.diag(torch.cat(Ss)) @ procrustes(torch.cat(Vs, 1)).T
    return best_rank(M, k)


def ref_iso_c(Ds, k, scale):
    U, S, Vh = svd(sum(Ds))
    r = nonzero(S)
    kk = min(k, r)
    return scale * S[:r].mean() * U[:, :kk] @ Vh[:kk]


def ref_iso_cts(Ds, k, scale, common_fraction):
    n = len(Ds)
    U, S, Vh = svd(sum(Ds))
    kk = min(k, nonzero(S))
    if kk <= n:
        common, per_task = kk, 0
    else:
        per_task = max(1, math.floor((1 - common_fraction) * kk / n))
        common = kk - n * per_task
    Uc = U[:, :common]
    Us, Ss, Vs = [Uc], [S[:common]], [Vh[:common].T]
    for D in Ds if per_task else []:
        Ut, St, Vht = svd(D - Uc @ (Uc.T @ D))
        keep = min(per_task, nonzero(St))  # a zero singular value's direction is arbitrary: dropped
        Us.append(Ut[:, :keep]), Ss.append(St[:keep]), Vs.append(Vht[:keep].T)
    sigma = torch.cat(Ss).mean() * scale
    return sigma * procrustes(torch.cat(Us, 1)) @ procrustes(torch.cat(Vs, 1)).T


def ref_ties(blocks, density):
    trimmed = []
    for X in blocks:
        keep = int(density * X.numel())
        flat = torch.zeros(X.numel(), dtype=X.dtype)
        idx = X.abs().reshape(-1).argsort(descending=True)[:keep]
        flat[idx] = X.reshape(-1)[idx]
        trimmed.append(flat.reshape(X.shape))
    T = torch.stack(trimmed)
    elected = torch.where(T.sum(0) >= 0, 1.0, -1.0).to(T.dtype)
    agree = (torch.sign(T) == elected).to(T.dtype)
    return (T * agree).sum(0) / agree.sum(0).clamp_min(1)


def ref_knots(Ds, k, density):
    U, S, Vh = svd(torch.cat(Ds, dim=1))
    r = nonzero(S)
    V = Vh[:r].T
    blocks = [V[i * D_IN : (i + 1) * D_IN] for i in range(len(Ds))]
    return best_rank(U[:, :r] @ torch.diag(S[:r]) @ ref_ties(blocks, density).T, k)


# ---------------------------------------------------------------------------- TSV-M
CASES = [(0, [2, 3]), (1, [4, 2, 3]), (2, [3, 4, 2, 4])]


@pytest.mark.parametrize("seed,ranks", CASES)
@pytest.mark.parametrize("k", [2, 5, 64])
@pytest.mark.parametrize("task_rank", [None, 2])
def test_tsv_matches_dense(seed, ranks, k, task_rank):
    terms = make_terms(seed, ranks, weights=[1.0, -0.7, 1.3, 0.4][: len(ranks)])
    got = out(tsv_merge(terms, TsvParams(k=k, task_rank=task_rank), ctx_for(terms)))
    assert rel(got, ref_tsv(deltas(terms), k, task_rank)) < TOL
    assert torch.linalg.matrix_rank(got, rtol=1e-5) <= k


@pytest.mark.parametrize("k", [3, 9])
def test_tsv_orthogonal_inputs_is_the_truncated_sum(k):
    terms = orthogonal_terms(3, [2, 3, 4])
    got = out(tsv_merge(terms, TsvParams(k=k), ctx_for(terms)))
    assert rel(got, best_rank(sum(deltas(terms)), k)) < TOL


def test_tsv_honours_weights_and_scales():
    base = make_terms(4, [3, 2, 4])
    doubled = [Term(t.index, 2.0 * t.weight, t.module) for t in base]
    p = TsvParams(k=5)
    assert rel(out(tsv_merge(doubled, p, ctx_for(doubled))), 2 * out(tsv_merge(base, p, ctx_for(base)))) < TOL
    rescaled = [Term(t.index, 1.0, LoraModule(A=t.module.A, B=t.module.B, scale=3.0 * t.module.scale)) for t in base]
    assert rel(out(tsv_merge(rescaled, p, ctx_for(rescaled))), 3 * out(tsv_merge(base, p, ctx_for(base)))) < TOL


def test_tsv_float64_factors():
    terms = make_terms(5, [3, 4], dtype=torch.float64)
    got = out(tsv_merge(terms, TsvParams(k=4), ctx_for(terms)))
    assert rel(got, ref_tsv(deltas(terms), 4)) < TOL


# ---------------------------------------------------------------------------- Iso-C / Iso-CTS
@pytest.mark.parametrize("seed,ranks", CASES)
@pytest.mark.parametrize("k,scale", [(1, 1.0), (4, 1.0), (6, 1.7), (64, 0.5)])
def test_iso_c_matches_dense_and_is_flat(seed, ranks, k, scale):
    terms = make_terms(seed, ranks, weights=[0.8, 1.2, -0.5, 1.0][: len(ranks)])
    got = out(iso_c_merge(terms, IsoCParams(k=k, scale=scale), ctx_for(terms)))
    assert rel(got, ref_iso_c(deltas(terms), k, scale)) < TOL
    kk = min(k, sum(ranks))
    S = torch.linalg.svdvals(got)
    assert torch.allclose(S[:kk], S[0].expand(kk), rtol=1e-4)  # flat spectrum
    assert float(S[kk:].max()) < 1e-5 * float(S[0])  # rank exactly min(k, r)


@pytest.mark.parametrize("seed,ranks", CASES)
@pytest.mark.parametrize("k", [1, 2, 5, 8, 64])
@pytest.mark.parametrize("common_fraction", [0.0, 0.5, 0.8])
def test_iso_cts_matches_dense_and_is_flat(seed, ranks, k, common_fraction):
    terms = make_terms(seed, ranks, weights=[1.0, 0.6, -1.1, 0.9][: len(ranks)])
    p = IsoCtsParams(k=k, scale=1.3, common_fraction=common_fraction)
    got = out(iso_cts_merge(terms, p, ctx_for(terms)))
    ref = ref_iso_cts(deltas(terms), k, 1.3, common_fraction)
    assert rel(got, ref) < TOL
    S = torch.linalg.svdvals(got)
    nz = int((S > 1e-5 * S[0]).sum())
    # min(k, r) directions, fewer only when a task has fewer than per_task of its own
    assert nz == torch.linalg.matrix_rank(ref, rtol=1e-5) <= min(k, sum(ranks))
    assert torch.allclose(S[:nz], S[0].expand(nz), rtol=1e-4)  # flat spectrum


def test_iso_scale_is_honoured():
    terms = make_terms(6, [3, 3])
    one = out(iso_c_merge(terms, IsoCParams(k=4, scale=1.0), ctx_for(terms)))
    assert rel(out(iso_c_merge(terms, IsoCParams(k=4, scale=2.5), ctx_for(terms))), 2.5 * one) < TOL
    one = out(iso_cts_merge(terms, IsoCtsParams(k=5, scale=1.0), ctx_for(terms)))
    assert rel(out(iso_cts_merge(terms, IsoCtsParams(k=5, scale=2.5), ctx_for(terms))), 2.5 * one) < TOL


# ---------------------------------------------------------------------------- KnOTS
@pytest.mark.parametrize("seed,ranks", CASES)
@pytest.mark.parametrize("k", [2, 6, 64])
@pytest.mark.parametrize("density", [0.3, 0.5, 1.0])
def test_knots_ties_matches_dense(seed, ranks, k, density):
    terms = make_terms(seed, ranks, weights=[1.0, 0.5, 1.5, 0.8][: len(ranks)])
    p = KnotsParams(k=k, combine="ties", density=density, majority_sign="total")
    got = out(knots_merge(terms, p, ctx_for(terms)))
    assert rel(got, ref_knots(deltas(terms), k, density)) < TOL
    assert torch.linalg.matrix_rank(got, rtol=1e-5) <= k


def test_knots_dare_ties_is_seeded_and_low_rank():
    terms = make_terms(7, [3, 4, 2])
    p = KnotsParams(k=4, combine="dare_ties", density=0.5)
    a, b = (out(knots_merge(terms, p, ctx_for(terms))) for _ in range(2))
    assert torch.equal(a, b)
    assert torch.linalg.matrix_rank(a, rtol=1e-5) <= 4


# ---------------------------------------------------------------------------- end to end
def adapters_for(seed, ranks, paths=("layer.0.q", "layer.1.v")):
    g = torch.Generator().manual_seed(seed)
    return [
        LoraAdapter.from_modules(
            {p: LoraModule(A=torch.randn(r, D_IN, generator=g), B=torch.randn(D_OUT, r, generator=g), scale=0.5 + i)
             for p in paths},
            base_model="base",
        )
        for i, r in enumerate(ranks)
    ]


def adapter_deltas(adapters, weights, path):
    return [w * a.module(path).delta(torch.float64) for a, w in zip(adapters, weights)]


@pytest.mark.parametrize(
    "method,params,ref",
    [
        ("tsv", {"k": 4}, lambda Ds: ref_tsv(Ds, 4)),
        ("tsv", {"k": 6, "task_rank": 2}, lambda Ds: ref_tsv(Ds, 6, 2)),
        ("iso_c", {"k": 5, "scale": 1.5}, lambda Ds: ref_iso_c(Ds, 5, 1.5)),
        ("iso_cts", {"k": 7, "common_fraction": 0.5}, lambda Ds: ref_iso_cts(Ds, 7, 1.0, 0.5)),
        ("knots", {"k": 5, "density": 0.4}, lambda Ds: ref_knots(Ds, 5, 0.4)),
    ],
)
@pytest.mark.parametrize("weights", [None, [0.5, 2.0, -1.0]])
def test_end_to_end_matches_dense(method, params, ref, weights):
    adapters = adapters_for(11, [3, 2, 4])
    result = merge_adapters(adapters, method, weights=weights, params=params)
    assert result.weights == tuple(weights or [1.0, 1.0, 1.0])
    for path in ("layer.0.q", "layer.1.v"):
        expected = ref(adapter_deltas(adapters, result.weights, path))
        module = result.adapter.module(path)
        assert module.rank <= params["k"]
        assert rel(module.delta(torch.float64), expected) < TOL
