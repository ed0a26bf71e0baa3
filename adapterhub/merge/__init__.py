"""merge/: turn several LoRA adapters into one, module by module. No SQL, no HTTP.

Public API::

    merge_adapters(adapters, method="lego", *, weights=None, params=None, seed=0,
                   progress=None, force=False, dtype=None, threads=None, names=None) -> MergeResult
    list_methods() -> list[MethodInfo]          # name, description, reference_url, parameters,
                                                # default_weights, seeded
    resolve_params(method, params) -> dict      # validate without merging (CLI/HTTP parsing)
    convention_weights(convention, n)           # "avg" (1/n), "sqrt" (1/sqrt(n)), "sum" (1)

Methods (``methods.MERGE_METHODS``): ``linear``, ``linear_factors``, ``cat``, ``svd``, ``ties``,
``dare_linear``, ``dare_ties``, ``magnitude``, ``lego`` (default).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from adapterhub.merge.params import METHOD_PARAMS, parameter_table

if TYPE_CHECKING:
    from adapterhub.merge.engine import (
        MergeReport,
        MergeResult,
        ModuleReport,
        list_methods,
        merge_adapters,
        resolve_params,
    )
    from adapterhub.merge.methods import MERGE_METHODS, REGISTRY
    from adapterhub.merge.registry import (
        WEIGHT_CONVENTIONS,
        MergeMethod,
        MethodInfo,
        MethodRegistry,
        ParamInfo,
        convention_weights,
    )

# torch-backed names load on first use, so importing the parameter models stays cheap
_LAZY = {
    "MergeReport": "report",
    "MergeResult": "engine",
    "ModuleReport": "report",
    "list_methods": "engine",
    "merge_adapters": "engine",
    "resolve_params": "engine",
    "MERGE_METHODS": "methods",
    "REGISTRY": "methods",
    "MergeMethod": "registry",
    "MethodInfo": "registry",
    "MethodRegistry": "registry",
    "ParamInfo": "registry",
    "WEIGHT_CONVENTIONS": "registry",
    "convention_weights": "registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"adapterhub.merge.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'adapterhub.merge' has no attribute {name!r}")


__all__ = [
    "METHOD_PARAMS",
    "MERGE_METHODS",
    "REGISTRY",
    "MergeMethod",
    "MergeReport",
    "MergeResult",
    "MethodInfo",
    "MethodRegistry",
    "ModuleReport",
    "ParamInfo",
    "WEIGHT_CONVENTIONS",
    "convention_weights",
    "list_methods",
    "parameter_table",
    "merge_adapters",
    "resolve_params",
]
