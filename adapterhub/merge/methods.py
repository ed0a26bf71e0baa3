"""The merge methods: parameters, per-module functions and the explicit list ``MERGE_METHODS``.

Weights: methods that *sum* deltas (``linear``, ``cat``, ``svd``, ``linear_factors``,
``dare_linear``, ``magnitude``) default every weight to 1, as PEFT's ``add_weighted_adapter``
and task arithmetic do; ``ties`` and ``dare_ties`` also default to 1 because their disjoint mean
already averages (PEFT and mergekit pass unnormalised weights to them); ``lego`` is an averaging
method and defaults to ``1/n`` (with its default output reweighting only the ratios matter).

Seeds: each method declares whether ``seed`` can change its result (``MergeMethod.seeded``):
``dare_*`` draw random drop masks, ``lego`` seeds its clustering when ``k`` is below a module's
total input rank, the others ignore it. Tables (``adapterhub.eval.quality``) read that instead of
keeping their own list.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel

from adapterhub.errors import IncompatibleAdaptersError
from adapterhub.merge import dense
from adapterhub.merge.base import ModuleContext, ModuleMerge, Term
from adapterhub.merge.factors import stack_terms, truncated_svd
from adapterhub.merge.lego import lego_module
from adapterhub.merge.regmean import regmean_merge
from adapterhub.merge.spectral import iso_c_merge, iso_cts_merge, knots_merge, tsv_merge
from adapterhub.merge.params import (
    METHOD_PARAMS,
    DareLinearParams,
    DareTiesParams,
    DenseParams,
    IsoCParams,
    IsoCtsParams,
    KnotsParams,
    LegoParams,
    LinearParams,
    MagnitudeParams,
    NoParams,
    RegMeanParams,
    SvdParams,
    TiesParams,
    TsvParams,
)
from adapterhub.merge.registry import MergeMethod, MethodRegistry

# ---------------------------------------------------------------------------- per-module functions
def _cat(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    B, A = stack_terms(terms)
    return ModuleMerge(B, A)


def _svd(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    B, A, _ = truncated_svd(*stack_terms(terms), params.k)  # type: ignore[attr-defined]
    return ModuleMerge(B, A)


def _linear(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    return _cat(terms, params, ctx) if params.k is None else _svd(terms, params, ctx)  # type: ignore[attr-defined]


def _linear_factors(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    ranks = sorted({t.module.rank for t in terms})
    if len(ranks) > 1:
        raise IncompatibleAdaptersError(
            f"linear_factors needs equal ranks per module; '{ctx.path}' has ranks {ranks}; use linear, cat or svd"
        )
    B = sum(math.sqrt(abs(t.coeff)) * t.module.B.float() for t in terms)
    A = sum(math.copysign(math.sqrt(abs(t.coeff)), t.coeff) * t.module.A.float() for t in terms)
    return ModuleMerge(B, A)  # type: ignore[arg-type]


def _dense(combine):  # type: ignore[no-untyped-def]
    """Wrap a dense combination (deltas, weights, params, generator) -> delta with the rank-k refit."""

    def merge(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
        p: DenseParams = params  # type: ignore[assignment]
        generator = ctx.generator()
        deltas = [t.module.delta() for t in terms]
        weights = torch.tensor([t.weight for t in terms], dtype=torch.float32)
        merged = combine(deltas, weights, p, generator)
        del deltas
        B, A, error = dense.refit_low_rank(
            merged, p.k, generator=generator, mode=p.refit, oversample=p.oversample, power_iters=p.power_iters
        )
        return ModuleMerge(B, A, {"refit_error": error})

    return merge


_ties = _dense(lambda d, w, p, g: dense.ties(d, w, p.density, p.majority_sign))
_dare_linear = _dense(lambda d, w, p, g: dense.dare_linear(d, w, p.density, g))
_dare_ties = _dense(lambda d, w, p, g: dense.dare_ties(d, w, p.density, p.majority_sign, g))
_magnitude = _dense(lambda d, w, p, g: dense.magnitude(d, w, p.density))


def _lego(terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge:
    p: LegoParams = params  # type: ignore[assignment]
    return lego_module(
        terms,
        ctx,
        k=p.k,
        cluster=p.cluster,
        restarts=p.restarts,
        max_iter=p.max_iter,
        param_reweight=p.param_reweight,
        output_reweight=p.output_reweight,
    )


# ---------------------------------------------------------------------------- the list
_DENSE_NOTE = (
    "Works on the dense per-module deltas (one module at a time), then refits to rank k "
    "(exact SVD for small layers, seeded randomised SVD otherwise; refit_error is reported)."
)

MERGE_METHODS: tuple[MergeMethod, ...] = (
    MergeMethod(
        name="linear",
        description="Weighted sum of the deltas, sum_i w_i s_i B_i A_i, kept exact (rank = sum of ranks, by "
        "concatenation) or truncated to rank k in factor space if k is given. Unlike PEFT's 'linear' it has no "
        "cross terms (see linear_factors). Weights default to 1 (a sum).",
        reference_url="https://arxiv.org/abs/2212.04089",
        params=LinearParams,
        default_weights="ones",
        merge_module=_linear,
    ),
    MergeMethod(
        name="linear_factors",
        description="PEFT-compatible 'linear': merges A and B separately, (sum_i sqrt(w_i s_i) B_i)(sum_i "
        "sqrt(w_i s_i) A_i), which adds cross terms B_i A_j and is NOT the weighted sum of the deltas. Needs equal "
        "ranks. Only for reproducing PEFT/LoRAX results. Weights default to 1.",
        reference_url="https://huggingface.co/docs/peft/main/en/package_reference/lora#peft.LoraModel.add_weighted_adapter",
        params=NoParams,
        default_weights="ones",
        merge_module=_linear_factors,
    ),
    MergeMethod(
        name="cat",
        description="Rank concatenation: B = [w_1 s_1 B_1, ...], A = [A_1; ...], exactly the weighted sum of the "
        "deltas at rank sum_i r_i. Weights default to 1 (a sum).",
        reference_url="https://huggingface.co/docs/peft/main/en/developer_guides/model_merging",
        params=NoParams,
        default_weights="ones",
        merge_module=_cat,
    ),
    MergeMethod(
        name="svd",
        description="Best rank-k approximation (Eckart-Young) of the weighted sum, computed in factor space: QR of "
        "the stacked B and A^T, SVD of the small R x R core; never a dense d x d SVD. Singular values are split "
        "evenly into both factors. Weights default to 1 (a sum).",
        reference_url="https://huggingface.co/docs/peft/main/en/package_reference/lora#peft.LoraModel.add_weighted_adapter",
        params=SvdParams,
        default_weights="ones",
        merge_module=_svd,
    ),
    MergeMethod(
        name="ties",
        description="TIES-merging as PEFT defines it: keep each delta's top-density entries by magnitude, elect a "
        "sign per entry, average the weighted entries that agree with it (disjoint mean). "
        + _DENSE_NOTE
        + " Weights default to 1 (the disjoint mean already averages).",
        reference_url="https://arxiv.org/abs/2306.01708",
        params=TiesParams,
        default_weights="ones",
        merge_module=_ties,
    ),
    MergeMethod(
        name="dare_linear",
        description="DARE: drop each delta entry with probability 1-density (seeded), rescale kept entries by "
        "1/density, then take the weighted sum. " + _DENSE_NOTE + " Weights default to 1 (a sum).",
        reference_url="https://arxiv.org/abs/2311.03099",
        params=DareLinearParams,
        default_weights="ones",
        merge_module=_dare_linear,
        seeded="always",
    ),
    MergeMethod(
        name="dare_ties",
        description="DARE's random drop-and-rescale followed by TIES' sign election and disjoint mean. "
        + _DENSE_NOTE
        + " Weights default to 1 (the disjoint mean already averages).",
        reference_url="https://arxiv.org/abs/2311.03099",
        params=DareTiesParams,
        default_weights="ones",
        merge_module=_dare_ties,
        seeded="always",
    ),
    MergeMethod(
        name="magnitude",
        description="Magnitude pruning (keep each delta's top-density entries by magnitude) then the weighted sum, "
        "as PEFT's magnitude_prune. " + _DENSE_NOTE + " Weights default to 1 (a sum).",
        reference_url="https://huggingface.co/docs/peft/main/en/package_reference/merge_utils",
        params=MagnitudeParams,
        default_weights="ones",
        merge_module=_magnitude,
    ),
    MergeMethod(
        name="lego",
        description="LoRA-LEGO (Zhao et al., ICLR 2025): split every input into rank-one units, canonicalise them "
        "(balanced norms, fixed sign), cluster them into k groups (k-means or k-medoids on unit directions), and "
        "make each cluster centroid one rank of the output; parameter reweighting restores the norm lost by "
        "averaging, output reweighting sets the overall scale. Weights are relative proportions and default to "
        "1/n; with output_reweight='none' they are absolute. Formulas: adapterhub/merge/lego.py.",
        reference_url="https://arxiv.org/abs/2409.16167",
        params=LegoParams,
        default_weights="uniform",
        merge_module=_lego,
        seeded="below_total_rank",
    ),
    MergeMethod(
        name="tsv",
        description="TSV-M (Gargiulo et al., CVPR 2025): the SVD of each input's delta, every input's singular "
        "vectors concatenated and decorrelated by orthogonal Procrustes, reconstructed with the inputs' singular "
        "values, then truncated to rank k; all in factor space. Weights default to 1 (a sum, as the paper). "
        "Formulas: adapterhub/merge/spectral.py.",
        reference_url="https://arxiv.org/abs/2412.00081",
        params=TsvParams,
        default_weights="ones",
        merge_module=tsv_merge,
    ),
    MergeMethod(
        name="iso_c",
        description="Iso-C (Marczak et al., ICML 2025): the weighted sum's k leading singular directions, each "
        "given the sum's mean singular value (a flat spectrum, so no task's directions dominate), times scale. "
        "Weights default to 1 (a sum).",
        reference_url="https://arxiv.org/abs/2502.04959",
        params=IsoCParams,
        default_weights="ones",
        merge_module=iso_c_merge,
    ),
    MergeMethod(
        name="iso_cts",
        description="Iso-CTS (Marczak et al., ICML 2025): k directions split between the sum's leading (common) "
        "directions and each input's own leading directions outside them, decorrelated by orthogonal Procrustes "
        "and given one mean singular value. Weights default to 1 (a sum). Formulas: adapterhub/merge/spectral.py.",
        reference_url="https://arxiv.org/abs/2502.04959",
        params=IsoCtsParams,
        default_weights="ones",
        merge_module=iso_cts_merge,
    ),
    MergeMethod(
        name="knots",
        description="KnOTS (Stoica et al., ICLR 2025): the SVD of the inputs' deltas stacked side by side puts "
        "every input in one basis; the per-input coefficient blocks are merged with TIES (or DARE-TIES) and the "
        "result reconstructed and truncated to rank k; in factor space. Weights default to 1 (TIES averages).",
        reference_url="https://arxiv.org/abs/2410.19735",
        params=KnotsParams,
        default_weights="ones",
        merge_module=knots_merge,
        seeded="always",
        seeded_when={"combine": "dare_ties"},
    ),
    MergeMethod(
        name="regmean",
        description="RegMean (Jin et al., ICLR 2023), data-aware: per module the least-squares merge "
        "(sum_i w_i dW_i G_i)(mean_i G_i)^-1, with G_i the Gram matrix of the module's inputs on adapter i's "
        "stored examples (off-diagonals shrunk by alpha), truncated to rank k in factor space. Needs the "
        "adapters' examples. Weights default to 1/n (the paper's formula).",
        reference_url="https://arxiv.org/abs/2212.09849",
        params=RegMeanParams,
        default_weights="uniform",
        merge_module=regmean_merge,
    ),
)

REGISTRY = MethodRegistry(MERGE_METHODS)
assert {m.name: m.params for m in MERGE_METHODS} == METHOD_PARAMS, "params.METHOD_PARAMS is out of date"
