"""Merges that work on singular vectors: TSV-M, Iso-C, Iso-CTS and KnOTS, all in factor space.

Each paper states its method on dense task matrices ``ΔW_i`` (a full SVD per layer). For LoRA
inputs every matrix involved is a product of thin factors, so each step has a factor-space
equivalent whose cost is a few tall-skinny QRs and SVDs of ``R x R`` cores (``R`` = total input
rank); no ``d_out x d_in`` matrix is formed and no dense SVD is taken. The tests compare each
method with a dense implementation of the paper's recipe on small shapes.

* **TSV-M** (Gargiulo et al., CVPR 2025): the SVD of each task's delta, the singular vectors of
  all tasks concatenated (``U = [U_1 .. U_n]``, ``V`` likewise), decorrelated by orthogonal
  Procrustes (the nearest matrix with orthonormal columns, ``polar(U)``), and the update
  ``polar(U) diag(S) polar(V)^T``. The paper keeps each task's top ``1/n`` of the layer's
  dimension; a LoRA's rank is far below that, so by default every rank is kept (``task_rank``
  lowers it). The result is truncated to rank ``k``.
* **Iso-C** (Marczak et al., ICML 2025): the SVD of the task-arithmetic sum with its spectrum
  flattened: every kept direction gets the mean singular value of the sum (over its nonzero
  singular values, the paper's rule), times ``scale``. Rank ``k`` keeps the ``k`` leading
  directions.
* **Iso-CTS** (same paper): ``k`` directions split into a common subspace (the sum's leading
  directions) and task-specific ones (each task's leading directions of its delta with the common
  subspace projected out of its column space), concatenated, decorrelated as in TSV-M, and given
  the mean of their singular values. With ``k`` output directions and ``n`` tasks each task gets
  ``max(1, floor((1 - common_fraction) k / n))`` when ``k > n`` (else none: Iso-C's directions),
  the rest is common. The common singular value is the mean of the kept directions' singular values
  (the paper's rule for CTS), so with ``k <= n`` the scale differs from Iso-C's.
* **KnOTS** (Stoica et al., ICLR 2025): the SVD of the horizontally stacked deltas
  ``[ΔW_1 .. ΔW_n] = U S [V_1^T .. V_n^T]`` puts every task in one basis ``U S``; the per-task
  coefficient blocks ``V_i`` are merged with TIES or DARE-TIES and the update is
  ``U S V_merged^T``, truncated to rank ``k``.

The inputs' weights and scales are folded in before any SVD (``Term.coeff``), as task arithmetic
scales each task vector.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel

from adapterhub.merge import dense
from adapterhub.merge.base import ModuleContext, ModuleMerge, Term
from adapterhub.merge.factors import factor_svd, stack_terms, truncated_svd

RANK_RTOL = 1e-5
"""Singular values below ``RANK_RTOL`` times the largest are numerically zero (float32 factors)."""


def numerical_rank(S: torch.Tensor) -> int:
    """How many singular values (descending) are not numerically zero."""
    if S.numel() == 0 or float(S[0]) <= 0:
        return 0
    return int((S > float(S[0]) * RANK_RTOL).sum())


def polar(M: torch.Tensor) -> torch.Tensor:
    """The matrix with orthonormal columns nearest to ``M`` (orthogonal Procrustes): ``P Q^T`` for the
    thin SVD ``M = P Σ Q^T``, from a QR of ``M`` and the SVD of its small ``R`` (float64 core)."""
    Q, R = torch.linalg.qr(M.float())
    P, _, Qh = torch.linalg.svd(R.double(), full_matrices=False)
    return Q @ (P @ Qh).float()


def _term_svd(term: Term) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of one input's scaled delta ``coeff * B A``, numerically-zero directions dropped."""
    U, S, Vh = factor_svd(term.module.B.float() * term.coeff, term.module.A.float())
    r = numerical_rank(S)
    return U[:, :r], S[:r], Vh[:r]


def _isotropic(U: torch.Tensor, V: torch.Tensor, sigma: float) -> ModuleMerge:
    """``sigma * U V^T`` as balanced factors."""
    root = math.sqrt(max(sigma, 0.0))
    return ModuleMerge(U * root, (V * root).T.contiguous(), {"iso_sigma": sigma})


def _empty(terms: list[Term]) -> ModuleMerge:
    module = terms[0].module
    return ModuleMerge(torch.zeros(module.d_out, 1), torch.zeros(1, module.d_in))


# ---------------------------------------------------------------------------- TSV-M
def tsv_merge(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    """TSV-M: concatenate every task's singular vectors, decorrelate, reconstruct, truncate to k."""
    task_rank: int | None = params.task_rank  # type: ignore[attr-defined]
    Us, Ss, Vs = [], [], []
    for term in terms:
        U, S, Vh = _term_svd(term)
        keep = S.numel() if task_rank is None else min(task_rank, S.numel())
        Us.append(U[:, :keep])
        Ss.append(S[:keep])
        Vs.append(Vh[:keep].T)
    S = torch.cat(Ss)
    if S.numel() == 0:
        return _empty(terms)
    U_perp, V_perp = polar(torch.cat(Us, dim=1)), polar(torch.cat(Vs, dim=1))
    B, A, _ = truncated_svd(U_perp * S.float(), V_perp.T, params.k)  # type: ignore[attr-defined]
    return ModuleMerge(B, A, {"tsv_directions": float(S.numel())})


# ---------------------------------------------------------------------------- Iso-C / Iso-CTS
def iso_c_merge(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    """Iso-C: the sum's ``k`` leading singular directions, each with the sum's mean singular value."""
    U, S, Vh = factor_svd(*stack_terms(terms))
    r = numerical_rank(S)
    if r == 0:
        return _empty(terms)
    sigma = float(S[:r].mean()) * params.scale  # type: ignore[attr-defined]
    k = min(params.k, r)  # type: ignore[attr-defined]
    return _isotropic(U[:, :k], Vh[:k].T, sigma)


def cts_split(k: int, n: int, common_fraction: float) -> tuple[int, int]:
    """``(common, per_task)`` directions for ``k`` outputs and ``n`` tasks (module docstring)."""
    if k <= n:
        return k, 0
    per_task = max(1, math.floor((1.0 - common_fraction) * k / n))
    return k - n * per_task, per_task


def iso_cts_merge(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    """Iso-CTS: common directions of the sum plus each task's own, decorrelated, isotropic."""
    B, A = stack_terms(terms)
    U, S, Vh = factor_svd(B, A)
    r = numerical_rank(S)
    if r == 0:
        return _empty(terms)
    common, per_task = cts_split(min(params.k, r), len(terms), params.common_fraction)  # type: ignore[attr-defined]
    Uc = U[:, :common]
    Us, Ss, Vs = [Uc], [S[:common]], [Vh[:common].T]
    for term in terms if per_task else []:
        Bt = term.module.B.float() * term.coeff
        Ut, St, Vht = factor_svd(Bt - Uc @ (Uc.T @ Bt), term.module.A.float())
        keep = min(per_task, numerical_rank(St))
        Us.append(Ut[:, :keep])
        Ss.append(St[:keep])
        Vs.append(Vht[:keep].T)
    sigma = float(torch.cat(Ss).mean()) * params.scale  # type: ignore[attr-defined]
    merged = _isotropic(polar(torch.cat(Us, dim=1)), polar(torch.cat(Vs, dim=1)), sigma)
    merged.stats.update({"cts_common": float(common), "cts_per_task": float(per_task)})
    return merged


# ---------------------------------------------------------------------------- KnOTS
def knots_basis(terms: list[Term]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``U``, ``S`` and the blocks ``V_i`` of ``[ΔW_1 .. ΔW_n] = U diag(S) [V_1^T .. V_n^T]``.

    The stacked matrix is ``[c_1 B_1 .. c_n B_n] · blockdiag(A_1 .. A_n)``; QR of the first factor
    and of each ``A_i^T`` leave an ``R x R`` core ``R_B blockdiag(R_Ai)^T`` whose SVD gives the
    shared basis and, block by block, each task's coefficients ``V_i = Q_Ai W_i``.
    """
    Bcat, _ = stack_terms(terms)
    Qb, Rb = torch.linalg.qr(Bcat)
    blocks, cores, start = [], [], 0
    for term in terms:
        r = term.module.rank
        Qa, Ra = torch.linalg.qr(term.module.A.float().T)
        blocks.append(Qa)
        cores.append(Rb[:, start : start + r].double() @ Ra.double().T)
        start += r
    Uc, S, Wh = torch.linalg.svd(torch.cat(cores, dim=1), full_matrices=False)
    r = numerical_rank(S)
    W = Wh[:r].T.float()
    V_blocks, start = [], 0
    for term, Qa in zip(terms, blocks):
        V_blocks.append(Qa @ W[start : start + term.module.rank])
        start += term.module.rank
    return Qb @ Uc[:, :r].float(), S[:r], V_blocks


def knots_merge(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    """KnOTS: align every task in the stacked SVD's basis, merge the coefficient blocks, reconstruct."""
    U, S, V_blocks = knots_basis(terms)
    if S.numel() == 0:
        return _empty(terms)
    ones = torch.ones(len(V_blocks))
    p = params
    if p.combine == "ties":  # type: ignore[attr-defined]
        V = dense.ties(V_blocks, ones, p.density, p.majority_sign)  # type: ignore[attr-defined]
    else:
        V = dense.dare_ties(V_blocks, ones, p.density, p.majority_sign, ctx.generator())  # type: ignore[attr-defined]
    B, A, _ = truncated_svd(U * S.float(), V.T, p.k)  # type: ignore[attr-defined]
    return ModuleMerge(B, A)

