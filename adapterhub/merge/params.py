"""Typed parameters of every merge method (pydantic, frozen, unknown keys refused).

Kept apart from the methods and free of torch, so the CLI can build its ``merge`` flags and the
server its schema from them without importing torch for a catalog listing.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

MajoritySign = Literal["total", "frequency"]
RefitMode = Literal["auto", "exact", "randomized"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

# Upper bounds: every numeric parameter has one (the registry refuses a method whose model lacks
# one), so a request cannot buy unbounded CPU time. Each maximum is far above what a real merge
# uses (defaults in brackets): LoRA ranks are 4-256 [8]; Halko et al. need oversample ~10 [16] and
# 2-7 power iterations [4]; k-means converges in tens of iterations [100] and a few restarts [4].
MAX_RANK = 4096
MAX_OVERSAMPLE = 512
MAX_POWER_ITERS = 32
MAX_RESTARTS = 64
MAX_ITER = 1000
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; module m uses seed + m

K_HELP = "rank of the merged adapter (per module; at most the total input rank for factor-space methods)"


# ---------------------------------------------------------------------------- parameters
class NoParams(BaseModel):
    model_config = _FROZEN


class LinearParams(BaseModel):
    model_config = _FROZEN
    k: int | None = Field(
        None, ge=1, le=MAX_RANK, description="if set, truncate the exact sum to this rank (as svd); else keep it exact"
    )


class SvdParams(BaseModel):
    model_config = _FROZEN
    k: int = Field(8, ge=1, le=MAX_RANK, description=K_HELP)


class DenseParams(BaseModel):
    """What every dense method (``ties``, ``dare_*``, ``magnitude``) shares: the rank-k refit."""

    model_config = _FROZEN
    k: int = Field(8, ge=1, le=MAX_RANK, description=K_HELP)
    refit: RefitMode = Field(
        "auto", description="rank-k refit: exact SVD, seeded randomised SVD, or auto (exact when min(d) <= 1024)"
    )
    oversample: int = Field(16, ge=0, le=MAX_OVERSAMPLE, description="randomised refit: sketch columns beyond k")
    power_iters: int = Field(4, ge=0, le=MAX_POWER_ITERS, description="randomised refit: subspace (power) iterations")


class TiesParams(DenseParams):
    density: float = Field(0.2, gt=0, le=1, description="fraction of each delta's entries kept (largest magnitude)")
    majority_sign: MajoritySign = Field(
        "total", description="elect each entry's sign by the sum of values (total) or by a count of signs (frequency)"
    )


class DareLinearParams(DenseParams):
    density: float = Field(0.5, gt=0, le=1, description="probability of keeping each entry (kept ones scaled by 1/density)")


class DareTiesParams(DareLinearParams):
    majority_sign: MajoritySign = Field(
        "total", description="elect each entry's sign by the sum of values (total) or by a count of signs (frequency)"
    )


class MagnitudeParams(DenseParams):
    density: float = Field(0.2, gt=0, le=1, description="fraction of each delta's entries kept (largest magnitude)")


class LegoParams(BaseModel):
    model_config = _FROZEN
    k: int = Field(
        8, ge=1, le=MAX_RANK,
        description="number of clusters = rank of the merged adapter (all units kept if k >= total rank)",
    )
    cluster: Literal["kmeans", "kmedoids"] = Field(
        "kmeans", description="k-means (k-means++ seeding, weighted) or k-medoids (FasterPAM) on unit directions"
    )
    restarts: int = Field(4, ge=1, le=MAX_RESTARTS, description="seeded clustering restarts; the best objective is kept")
    max_iter: int = Field(100, ge=1, le=MAX_ITER, description="iterations per clustering run")
    param_reweight: bool = Field(True, description="rescale each centroid to the mean norm of its member units")
    output_reweight: Literal["norm", "mean", "sum", "none"] = Field(
        "mean",
        description="scale of the merged delta: the mean of the inputs' norms (mean, picked on validation), "
        "the norm of the exact weighted sum (norm), the sum of the inputs' norms (sum), or none",
    )


class TsvParams(BaseModel):
    model_config = _FROZEN
    k: int = Field(8, ge=1, le=MAX_RANK, description=K_HELP)
    task_rank: int | None = Field(
        None, ge=1, le=MAX_RANK,
        description="singular directions kept per task before decorrelation (default: all of each input's rank)",
    )


class IsoCParams(BaseModel):
    model_config = _FROZEN
    k: int = Field(8, ge=1, le=MAX_RANK, description=K_HELP)
    scale: float = Field(1.0, gt=0, le=100, description="multiplies the flattened spectrum's common singular value")


class IsoCtsParams(IsoCParams):
    common_fraction: float = Field(
        0.8, ge=0, le=1,
        description="share of the k directions for the common subspace; each task gets at least one when k > n",
    )


class KnotsParams(BaseModel):
    model_config = _FROZEN
    k: int = Field(8, ge=1, le=MAX_RANK, description=K_HELP)
    combine: Literal["ties", "dare_ties"] = Field(
        "ties", description="how the aligned per-task coefficients are merged"
    )
    density: float = Field(0.5, gt=0, le=1, description="fraction of each task's coefficients kept (ties) or kept in expectation (dare_ties)")
    majority_sign: MajoritySign = Field(
        "total", description="elect each entry's sign by the sum of values (total) or by a count of signs (frequency)"
    )


class RegMeanParams(BaseModel):
    model_config = _FROZEN
    k: int = Field(8, ge=1, le=MAX_RANK, description=K_HELP)
    alpha: float = Field(
        0.9, ge=0, le=1,
        description="off-diagonal shrinkage of each Gram matrix: alpha * G + (1 - alpha) * diag(G) (1 keeps G)",
    )


# method name -> its parameter model; methods.MERGE_METHODS must agree (checked at import there)
METHOD_PARAMS: dict[str, type[BaseModel]] = {
    "linear": LinearParams,
    "linear_factors": NoParams,
    "cat": NoParams,
    "svd": SvdParams,
    "ties": TiesParams,
    "dare_linear": DareLinearParams,
    "dare_ties": DareTiesParams,
    "magnitude": MagnitudeParams,
    "lego": LegoParams,
    "tsv": TsvParams,
    "iso_c": IsoCParams,
    "iso_cts": IsoCtsParams,
    "knots": KnotsParams,
    "regmean": RegMeanParams,
}


def is_numeric(field: FieldInfo) -> bool:
    """Whether a field takes a number (an int or float, possibly optional; bools are not numbers)."""
    args = get_args(field.annotation) or (field.annotation,)
    return any(a in (int, float) for a in args)


def value_range(field: FieldInfo) -> str | None:
    """A numeric field's bounds in interval notation, e.g. ``"[1, 4096]"`` or ``"(0, 1]"``.

    None when the field lacks a lower or an upper bound.
    """
    lo = hi = None
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            lo = f"[{m.ge}"
        elif isinstance(m, annotated_types.Gt):
            lo = f"({m.gt}"
        elif isinstance(m, annotated_types.Le):
            hi = f"{m.le}]"
        elif isinstance(m, annotated_types.Lt):
            hi = f"{m.lt})"
    return f"{lo}, {hi}" if lo and hi else None


def parameter_table() -> dict[str, list[dict[str, Any]]]:
    """Method -> its parameters (name, default, help, choices, range, and ``kind``: ``"int"`` or
    ``"float"`` for numbers, so an optional number with no default still gets a typed flag)."""
    table: dict[str, list[dict[str, Any]]] = {}
    for method, model in METHOD_PARAMS.items():
        rows = []
        for name, field in model.model_fields.items():
            choices = list(get_args(field.annotation)) if get_origin(field.annotation) is Literal else None
            bounds = value_range(field)
            help_text = (field.description or "") + (f" (range {bounds})" if bounds else "")
            args = get_args(field.annotation) or (field.annotation,)
            kind = "int" if int in args and bool not in args else "float" if float in args else None
            rows.append(
                {"name": name, "default": field.default, "help": help_text, "choices": choices, "range": bounds,
                 "kind": kind}
            )
        table[method] = rows
    return table
