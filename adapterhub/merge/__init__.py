"""merge/: turn several LoRA adapters into one, module by module. No SQL, no HTTP.

Public API::

    merge_adapters(adapters, method="lego", *, weights=None, params=None, seed=0,
                   progress=None, force=False, dtype=None) -> MergeResult
    list_methods() -> list[MethodInfo]          # name, description, reference_url, parameters
    resolve_params(method, params) -> dict      # validate without merging (CLI/HTTP parsing)

Methods (``methods.MERGE_METHODS``): ``linear``, ``linear_factors``, ``cat``, ``svd``, ``ties``,
``dare_linear``, ``dare_ties``, ``magnitude``, ``lego`` (default).
"""

from adapterhub.merge.engine import (
    MergeReport,
    MergeResult,
    ModuleReport,
    list_methods,
    merge_adapters,
    resolve_params,
)
from adapterhub.merge.methods import MERGE_METHODS, REGISTRY
from adapterhub.merge.registry import MergeMethod, MethodInfo, MethodRegistry, ParamInfo

__all__ = [
    "MERGE_METHODS",
    "REGISTRY",
    "MergeMethod",
    "MergeReport",
    "MergeResult",
    "MethodInfo",
    "MethodRegistry",
    "ModuleReport",
    "ParamInfo",
    "list_methods",
    "merge_adapters",
    "resolve_params",
]
