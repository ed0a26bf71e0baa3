"""Typed parameters of every merge method (pydantic, frozen, unknown keys refused).

Kept apart from the methods and free of torch, so the CLI can build its ``merge`` flags and the
server its schema from them without importing torch for a catalog listing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MajoritySign = Literal["total", "frequency"]
RefitMode = Literal["auto", "exact", "randomized"]

_FROZEN = ConfigDict(extra="forbid", frozen=True)

K_HELP = "rank of the merged adapter (per module; at most the total input rank for factor-space methods)"


# ---------------------------------------------------------------------------- parameters
class NoParams(BaseModel):
    model_config = _FROZEN


class LinearParams(BaseModel):
    model_config = _FROZEN
    k: int | None = Field(None, ge=1, description="if set, truncate the exact sum to this rank (as svd); else keep it exact")


class SvdParams(BaseModel):
    model_config = _FROZEN
    k: int = Field(8, ge=1, description=K_HELP)


class DenseParams(BaseModel):
    """What every dense method (``ties``, ``dare_*``, ``magnitude``) shares: the rank-k refit."""

    model_config = _FROZEN
    k: int = Field(8, ge=1, description=K_HELP)
    refit: RefitMode = Field(
        "auto", description="rank-k refit: exact SVD, seeded randomised SVD, or auto (exact when min(d) <= 1024)"
    )
    oversample: int = Field(16, ge=0, description="randomised refit: sketch columns beyond k")
    power_iters: int = Field(4, ge=0, description="randomised refit: subspace (power) iterations")


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
    k: int = Field(8, ge=1, description="number of clusters = rank of the merged adapter (all units kept if k >= total rank)")
    cluster: Literal["kmeans", "kmedoids"] = Field(
        "kmeans", description="k-means (k-means++ seeding, weighted) or k-medoids (FasterPAM) on unit directions"
    )
    restarts: int = Field(4, ge=1, description="seeded clustering restarts; the best objective is kept")
    max_iter: int = Field(100, ge=1, description="iterations per clustering run")
    param_reweight: bool = Field(True, description="rescale each centroid to the mean norm of its member units")
    output_reweight: Literal["norm", "mean", "sum", "none"] = Field(
        "mean",
        description="scale of the merged delta: the mean of the inputs' norms (mean, picked on validation), "
        "the norm of the exact weighted sum (norm), the sum of the inputs' norms (sum), or none",
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
}


def parameter_table() -> dict[str, list[dict[str, Any]]]:
    """Method -> its parameters (name, type annotation text, default, help, choices)."""
    from typing import get_args, get_origin

    table: dict[str, list[dict[str, Any]]] = {}
    for method, model in METHOD_PARAMS.items():
        rows = []
        for name, field in model.model_fields.items():
            choices = list(get_args(field.annotation)) if get_origin(field.annotation) is Literal else None
            rows.append({"name": name, "default": field.default, "help": field.description or "", "choices": choices})
        table[method] = rows
    return table
