"""Merging catalog adapters: resolve names, run a merge method, store the result with lineage."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapterhub.app.access import private_result
from adapterhub.app.core import HubCore
from adapterhub.app.ingest import add_adapter, load
from adapterhub.errors import AdapterExistsError, InvalidParameterError
from adapterhub.names import validate_name
from adapterhub.store import AdapterRecord, LineageRecord

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class MergeOutcome:
    """What ``AdapterHub.merge`` made: the stored record and how it was made."""

    record: AdapterRecord
    method: str
    params: dict[str, Any]
    weights: list[float]
    seed: int
    report: dict[str, Any]
    auto: dict[str, Any] | None = None  # --method auto: what it chose, why, and the candidates' scores

    def to_dict(self) -> dict[str, Any]:
        summary = {k: v for k, v in self.report.items() if k != "modules"}
        return {
            "adapter": self.record.to_dict(),
            "method": self.method,
            "params": self.params,
            "weights": self.weights,
            "seed": self.seed,
            "report": summary,
            "auto": self.auto,
        }


def merge_parameters() -> dict[str, list[dict[str, Any]]]:
    """Method -> its parameters (name, default, help, choices); cheap, no torch import."""
    from adapterhub.merge.params import parameter_table

    return parameter_table()


def methods() -> list[dict[str, Any]]:
    """Every merge method with its description, reference and typed parameters (no catalog needed)."""
    from adapterhub.merge import list_methods

    return [m.to_dict() for m in list_methods()]


def _check_inputs(names: Sequence[str]) -> None:
    if len(names) < 2:
        raise InvalidParameterError(
            "merge needs at least two adapters; to store a copy of one adapter, export it and add it "
            "under a new name"
        )
    if len(set(names)) != len(names):
        raise InvalidParameterError("each adapter may be named only once; use --weights to weigh one more")


def merge(
    core: HubCore,
    names: Sequence[str],
    *,
    method: str = "lego",
    k: int | None = None,
    weights: Sequence[float] | None = None,
    params: Mapping[str, Any] | None = None,
    name: str | None = None,
    namespace: str = "merged",
    seed: int = 0,
    force: bool = False,
    task: str | None = None,
    tags: Sequence[str] = (),
    description: str | None = None,
    progress: ProgressFn | None = None,
) -> MergeOutcome:
    """Merge catalog adapters with a registered method and store the result with lineage.

    Args:
        names: the inputs, by catalog name (at least two; each at most once).
        method: a merge method (``methods()`` lists them); ``lego`` by default; ``"auto"`` picks
            the method and weights (``app/merge_data.choose_auto``): it takes only ``k`` and
            ``seed``, and the outcome's ``auto`` says what it chose and why.
        k: output rank, for methods that take one (same as ``params={"k": k}``).
        weights: one per input; default 1/n for averaging methods, 1 for sums.
        params: the method's other parameters (validated; unknown keys list the valid ones).
        name: catalog name of the result; default ``<namespace>/<method>-<digest prefix>``.
        namespace: the namespace of a default name (``merged``).
        seed: seeds every random choice, so a merge is reproducible.
        force: merge adapters whose base models differ.
        progress: called as ``progress(done, total, module_path)`` after each module.

    Raises:
        AdapterNotFoundError, AdapterExistsError, InvalidParameterError,
        IncompatibleAdaptersError.
    """
    from adapterhub.merge import merge_adapters, resolve_params

    from adapterhub.app.merge_data import choose_auto, parent_grams

    _check_inputs(names)
    merged_params = dict(params or {})
    if k is not None:
        merged_params["k"] = k
    if method == AUTO:
        _check_auto(merged_params, weights)
        resolve_params("svd", merged_params)
    else:
        resolve_params(method, merged_params)  # fail on bad parameters before reading anything
    if name is not None:
        validate_name(name)
        if core.catalog.exists(name):
            raise AdapterExistsError(name)
    records = [core.catalog.get(n) for n in names]
    adapters = [load(core, n) for n in names]
    auto, grams = None, None
    if method == AUTO:
        choice, grams = choose_auto(core, records, adapters, k=merged_params.get("k", 8), seed=seed)
        method, weights, auto = choice.method, choice.weights(len(names)), choice.to_dict()
    elif method == "regmean":
        grams = parent_grams(core, records, adapters)
    result = merge_adapters(
        adapters, method, weights=weights, params=merged_params, seed=seed, progress=progress, force=force,
        names=list(names), grams=grams,
    )
    lineage = [
        LineageRecord(
            parent_name=record.name,
            parent_digest=record.digest,
            operation=f"merge:{method}",
            params={**result.params, "seed": seed, **({"auto": auto} if auto else {})},
            weight=weight,
        )
        for record, weight in zip(records, result.weights)
    ]
    parent_tasks = [r.task for r in records if r.task]
    default_description = f"{method} merge of " + ", ".join(names)
    if parent_tasks:
        default_description += f" (tasks: {', '.join(parent_tasks)})"
    result_name = name or f"{namespace}/{method}-{result.adapter.digest[:12]}"
    with private_result(core, names, result_name):  # private parents: a private result, never public
        record = add_adapter(
            core,
            result.adapter,
            result_name,
            task=task,
            tags=list(tags) or ["merged"],
            description=description or default_description,
            lineage=lineage,
            operation=f"merge:{method}",
        )
    return MergeOutcome(record=record, method=method, params=result.params, weights=list(result.weights),
                        seed=seed, report=result.report.to_dict(), auto=auto)


AUTO = "auto"


def _check_auto(params: Mapping[str, Any], weights: Sequence[float] | None) -> None:
    """``auto`` chooses the method, its parameters and the weights; it takes only ``k``."""
    extra = sorted(set(params) - {"k"})
    if extra:
        raise InvalidParameterError(
            f"auto chooses the method and its parameters itself; it takes only k, not {', '.join(extra)}"
        )
    if weights is not None:
        raise InvalidParameterError("auto chooses the weights itself; drop --weights, or name a method")
