"""What a merge reports: per-module errors against the exact weighted sum, and their summary.

For every module the relative Frobenius error of the merged delta ``M`` against the weighted sum
``S = sum_i w_i s_i B_i A_i`` (``rel_error = ||M - S|| / ||S||``) and the scale-free
``shape_error = min_c ||c M - S|| / ||S|| = sqrt(1 - cos^2(M, S))``, both from ``r x r`` Gram
matrices in float64 (never a dense delta).

A module whose inputs cancel (``S = 0``, e.g. ``a`` and a copy of ``a`` with weights 0.5 and -0.5)
has no relative error: the report keeps its absolute error (``||M||``) and counts it in
``cancelled``; the summary never drops it silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from adapterhub.merge.factors import FactorGram, fro_inner


@dataclass(frozen=True)
class ModuleReport:
    """How well one merged module matches the weighted sum.

    Attributes:
        path: module path.
        rank: rank of the merged module.
        inputs: how many inputs had this module.
        ref_norm: ``||sum_i w_i s_i B_i A_i||_F``.
        rel_error: ``||M - S||_F / ||S||_F`` (0 for exact methods, up to float rounding).
        shape_error: ``min_c ||c M - S||_F / ||S||_F``.
        stats: method-specific numbers (``mixing_share``, ``refit_error``, ...).
        abs_error: ``||M - S||_F``.
        cancelled: the inputs cancel here: ``||S||`` is below ``CANCEL_RTOL`` times the sum of the
            inputs' norms; ``rel_error`` is then ``inf`` when the merge is not also (near) zero.
    """

    path: str
    rank: int
    inputs: int
    ref_norm: float
    rel_error: float
    shape_error: float
    stats: dict[str, float] = field(default_factory=dict)
    abs_error: float = 0.0
    cancelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rank": self.rank,
            "inputs": self.inputs,
            "ref_norm": self.ref_norm,
            "rel_error": _finite(self.rel_error),
            "shape_error": _finite(self.shape_error),
            "abs_error": self.abs_error,
            "cancelled": self.cancelled,
            "stats": dict(self.stats),
        }


@dataclass(frozen=True)
class MergeReport:
    """Summary of a merge.

    Attributes:
        modules: one ``ModuleReport`` per merged module, in path order.
        rel_error: ``sqrt(sum ||M - S||^2 / sum ||S||^2)`` over all modules, cancelled ones
            included (``inf`` when every module cancels and the merge is not zero).
        shape_error: the same with each module's ``M`` optimally rescaled.
        output_rank: the largest merged rank (ranks differ per module only in edge cases).
        mixing_share: ``lego`` only: share of all clusters (over all modules) holding units of more
            than one input; ``None`` for other methods.
        passthrough: passthrough tensor name -> ``"averaged"`` or ``"dropped"``.
        warnings: things the caller should know (forced base-model mismatch, dropped tensors,
            cancelled modules).
        elapsed_s: wall time of the merge.
        cancelled_modules: how many modules' inputs cancel (see ``ModuleReport.cancelled``).
    """

    modules: tuple[ModuleReport, ...]
    rel_error: float
    shape_error: float
    output_rank: int
    mixing_share: float | None
    passthrough: dict[str, str]
    warnings: tuple[str, ...]
    elapsed_s: float
    cancelled_modules: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cancelled_modules": self.cancelled_modules,
            "rel_error": _finite(self.rel_error),
            "shape_error": _finite(self.shape_error),
            "output_rank": self.output_rank,
            "mixing_share": self.mixing_share,
            "passthrough": dict(self.passthrough),
            "warnings": list(self.warnings),
            "elapsed_s": self.elapsed_s,
            "modules": [m.to_dict() for m in self.modules],
        }


def _finite(x: float) -> float | None:
    """JSON has no infinity (a strict encoder refuses it): an undefined error is ``None``."""
    return x if math.isfinite(x) else None


CANCEL_RTOL = 1e-6
"""A module's inputs cancel when ``||S||`` is below this share of ``sum_i ||w_i s_i B_i A_i||``
(float64 Grams leave about 1e-8 of an exact cancellation)."""


def module_report(
    path: str,
    inputs: int,
    reference: FactorGram,
    B: torch.Tensor,
    A: torch.Tensor,
    stats: dict[str, float],
    input_norm: float,
) -> ModuleReport:
    """Errors of one merged module ``B A`` against the weighted sum ``reference``; ``input_norm`` is
    ``sum_i ||w_i s_i B_i A_i||`` (what "cancel" is measured against)."""
    ref_sq, out_sq, cross = reference.norm_sq, max(fro_inner(B, A, B, A), 0.0), reference.inner(B, A)
    err_sq = max(ref_sq + out_sq - 2 * cross, 0.0)
    floor = CANCEL_RTOL * input_norm
    cancelled = math.sqrt(max(ref_sq, 0.0)) <= floor
    if not cancelled:
        rel = math.sqrt(err_sq / ref_sq)
        cos_sq = cross * cross / (ref_sq * out_sq) if out_sq > 0 else 0.0
        shape = math.sqrt(max(1.0 - cos_sq, 0.0))
    else:
        rel = shape = 0.0 if math.sqrt(out_sq) <= floor else math.inf
    return ModuleReport(
        path=path,
        rank=int(A.shape[0]),
        inputs=inputs,
        ref_norm=math.sqrt(max(ref_sq, 0.0)),
        rel_error=rel,
        shape_error=shape,
        stats=dict(stats),
        abs_error=math.sqrt(err_sq),
        cancelled=cancelled and input_norm > 0,
    )


def summarise(
    reports: list[ModuleReport], passthrough: dict[str, str], warnings: list[str], elapsed: float
) -> MergeReport:
    """The merge's summary; cancelled modules count with their absolute error and get a warning."""
    ref_sq = sum(r.ref_norm**2 for r in reports)
    err_sq = sum(r.abs_error**2 for r in reports)
    shape_sq = sum((r.shape_error * r.ref_norm) ** 2 for r in reports if math.isfinite(r.shape_error))
    clusters = sum(r.stats.get("clusters", 0) for r in reports)
    mixed = sum(r.stats.get("mixed_clusters", 0) for r in reports)
    has_clusters = any("clusters" in r.stats for r in reports)
    cancelled = [r for r in reports if r.cancelled]
    warnings = list(warnings)
    if cancelled:
        nonzero = [r for r in cancelled if not math.isfinite(r.rel_error)]
        message = (
            f"the inputs cancel in {len(cancelled)} of {len(reports)} modules (their weighted sum is zero there)"
        )
        if nonzero:
            size = math.sqrt(sum(r.abs_error**2 for r in nonzero))
            message += f"; the merge is not zero in {len(nonzero)} of them (norm {size:.3g}), so it is not their sum"
        warnings.append(message)
    if ref_sq > 0:
        rel = math.sqrt(err_sq / ref_sq)
    else:
        rel = 0.0 if all(math.isfinite(r.rel_error) for r in reports) else math.inf
    return MergeReport(
        modules=tuple(reports),
        rel_error=rel,
        shape_error=math.sqrt(shape_sq / ref_sq) if ref_sq > 0 else 0.0,
        output_rank=max(r.rank for r in reports),
        mixing_share=(mixed / clusters if clusters else 0.0) if has_clusters else None,
        passthrough=passthrough,
        warnings=tuple(warnings),
        elapsed_s=elapsed,
        cancelled_modules=len(cancelled),
    )
