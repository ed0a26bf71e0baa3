"""RegMean (Jin et al., ICLR 2023): the least-squares merge of linear layers, in factor space.

For one linear module, RegMean asks for the single update whose outputs are closest to every
task's own outputs on that task's inputs: ``min_W sum_i ||X_i W^T - X_i W_i^T||^2``, solved by
``W* = (sum_i W_i G_i)(sum_i G_i)^-1`` with ``G_i = X_i^T X_i``. With ``W_i = W_0 + ΔW_i`` the
base weight drops out and the delta is ``ΔW* = (sum_i ΔW_i G_i)(sum_i G_i)^-1``.

Weights: ``ΔW* = (sum_i w_i ΔW_i G_i)(mean_i G_i)^-1``. With the default ``w_i = 1/n`` this is
the paper's formula; with identical Grams it is exactly the linear merge ``sum_i w_i ΔW_i`` for any
weights, so the weight conventions (``1/n``, ``1/sqrt(n)``, ``1``) mean what they mean for
``linear``.

Shrinkage (the paper's fix for Grams estimated from little data): the off-diagonal entries are
scaled by ``alpha``, ``G~ = alpha G + (1 - alpha) diag(G)``. A ridge of ``1e-6`` times the mean
diagonal keeps the solve defined when ``alpha = 1`` and a module saw fewer tokens than its width.

Factor space: ``sum_i w_i s_i B_i (A_i G~_i M^-1)`` is a product of the stacked ``B`` and the
stacked ``A_i G~_i M^-1`` (rank ``R``, one Cholesky solve of ``M = mean G~``), then the best rank-k
approximation as ``svd`` computes it. The Grams come from ``adapterhub.models.grams`` (one
forward pass of each adapter over its stored examples); this module only does the algebra.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel

from adapterhub.errors import InvalidParameterError
from adapterhub.merge.base import ModuleContext, ModuleMerge, Term
from adapterhub.merge.factors import truncated_svd

RIDGE = 1e-6


def shrink(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * G + (1 - alpha) * diag(G)`` in float64."""
    G = gram.double()
    return alpha * G + (1.0 - alpha) * torch.diag(torch.diagonal(G))


def regmean_merge(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    """One module: the stacked factors with each ``A_i`` replaced by ``A_i G~_i M^-1``, truncated to k."""
    missing = [t.index + 1 for t in terms if t.gram is None]
    if missing:
        raise InvalidParameterError(
            f"regmean needs input statistics for every adapter; module '{ctx.path}' has none for input(s) "
            f"{missing}. Adapters need stored examples (train records them; add --examples FILE)"
        )
    d_in = terms[0].module.d_in
    grams = [shrink(t.gram, params.alpha) for t in terms]  # type: ignore[arg-type, attr-defined]
    for t, G in zip(terms, grams):
        if G.shape != (d_in, d_in):
            raise InvalidParameterError(
                f"input {t.index + 1}: Gram matrix of '{ctx.path}' is {tuple(G.shape)}, expected {(d_in, d_in)}"
            )
    mean = sum(grams) / len(grams)
    ridge = RIDGE * float(torch.diagonal(mean).mean().clamp_min(1e-30))
    chol = torch.linalg.cholesky(mean + ridge * torch.eye(d_in, dtype=torch.float64))
    A_stack = torch.cat([t.module.A.double() @ G for t, G in zip(terms, grams)], dim=0)
    A_new = torch.cholesky_solve(A_stack.T, chol).T  # A_i G~_i M^-1 (M symmetric)
    B = torch.cat([t.module.B.float() * t.coeff for t in terms], dim=1)
    Bk, Ak, _ = truncated_svd(B, A_new.float(), params.k)  # type: ignore[attr-defined]
    return ModuleMerge(Bk, Ak)
