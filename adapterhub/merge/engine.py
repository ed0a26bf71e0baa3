"""``merge_adapters``: validate, stream module by module, run a method, report the error.

Streaming: the union of module paths is merged one path at a time; for each path only that
module of every input (read lazily from its safetensors file) and the method's working set are
alive, plus the merged modules kept so far (the output). Dense methods (``ties``, ``dare_*``,
``magnitude``) additionally hold one dense ``d_out x d_in`` delta per input for that module.

Report: for every module the relative Frobenius error of the merged delta ``M`` against the
weighted sum ``S = sum_i w_i s_i B_i A_i`` (``rel_error = ||M - S|| / ||S||``) and the scale-free
``shape_error = min_c ||c M - S|| / ||S|| = sqrt(1 - cos^2(M, S))``, both from ``r x r`` Gram
matrices in float64 (never a dense delta), measured on the factors as stored (after the cast to
the output dtype). ``shape_error`` is the number to compare across methods that deliberately
rescale (``lego``'s output reweighting makes ``rel_error`` large by design; ``ties`` and ``dare``
are not meant to equal ``S``).

Passthrough tensors (PEFT ``modules_to_save``, e.g. a classifier head) are full weights, not
deltas, so they cannot be merged like LoRA factors. A tensor that every input carries with the
same shape is averaged with the normalised weights ``w_i / sum_j w_j`` (``averaged`` in the
report); any other is dropped and the report says so in ``warnings``, in plain words and naming
the inputs by the ``names`` the caller passed (catalog names), else as "input 1", "input 2", ...
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.lora.config import targets_module
from adapterhub.merge.base import ModuleContext, Term
from adapterhub.merge.factors import FactorGram, fro_norm, stack_terms
from adapterhub.merge.methods import REGISTRY
from adapterhub.merge.params import MAX_SEED
from adapterhub.merge.registry import MergeMethod, MethodInfo
from adapterhub.merge.report import MergeReport, ModuleReport, module_report, summarise
from adapterhub.threads import torch_threads

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class MergeResult:
    """The merged adapter (in memory) and how it was made.

    Attributes:
        adapter: the new adapter (``LoraAdapter.from_modules``); ``adapter.save(folder)`` writes it.
        method: the method name.
        params: the resolved parameters, defaults filled in.
        weights: the resolved weights, one per input.
        seed: the seed used.
        report: errors, ranks, mixing, passthrough decisions.
    """

    adapter: LoraAdapter
    method: str
    params: dict[str, Any]
    weights: tuple[float, ...]
    seed: int
    report: MergeReport


def list_methods() -> list[MethodInfo]:
    """Every merge method with its description, reference and parameters (name, type, default, help)."""
    return REGISTRY.describe()


def resolve_params(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``params`` for ``method`` without merging anything (for the CLI and HTTP parsing).

    Raises:
        InvalidParameterError: unknown method or parameter (valid choices listed) or a bad value.
    """
    return REGISTRY.parse_params(method, params).model_dump()


def merge_adapters(
    adapters: Sequence[LoraAdapter],
    method: str = "lego",
    *,
    weights: Sequence[float] | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    force: bool = False,
    dtype: torch.dtype | None = None,
    threads: int | None = None,
    names: Sequence[str] | None = None,
    grams: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
) -> MergeResult:
    """Merge LoRA adapters into one with a registered method, module by module.

    Args:
        adapters: the inputs (lazy adapters are read one module at a time). Different ranks and
            different target-module sets are fine: a module missing from an input contributes zero.
        method: a registered method name (see ``list_methods``); default ``"lego"``.
        weights: one weight per input; defaults to the method's convention (``1/n`` for ``lego``,
            1 for the others).
        params: the method's parameters, validated against its declared model.
        seed: seeds every random choice (module ``m`` uses ``seed + m``), so merges are reproducible.
        progress: called as ``progress(done, total, path)`` after each module.
        force: merge adapters whose base models (or ``fan_in_fan_out``) differ anyway (a warning
            goes into the report). Shapes must still match.
        dtype: dtype of the output factors; default the inputs' common dtype (float32 if they differ).
        threads: torch intra-op threads while merging, restored afterwards (``None``: leave
            torch's setting). The factor-space methods (``lego``, ``svd``, ``cat``) work on small
            matrices, where extra threads only add synchronisation: on a busy 2-core machine
            ``threads=1`` made a 224-module ``lego`` merge 7x faster. The setting is process-wide.
        names: what to call each input in warnings and errors (e.g. catalog names); default
            "input 1", "input 2", ...
        grams: per input, module path -> the Gram matrix ``X^T X`` of that module's inputs on the
            adapter's own examples (``adapterhub.models.grams``); data-aware methods (``regmean``)
            need them, the others ignore them.

    Returns:
        A ``MergeResult`` with the new in-memory adapter, resolved params and weights, and a report.

    Raises:
        InvalidParameterError: unknown method/parameter, bad value, wrong number of weights.
        IncompatibleAdaptersError: different base models (unless ``force``) or different shapes
            for the same module.

    Example:
        >>> result = merge_adapters([a, b], "svd", params={"k": 16})  # doctest: +SKIP
        >>> result.adapter.save("merged/")  # doctest: +SKIP
    """
    started = time.perf_counter()
    spec = REGISTRY.get(method)
    resolved = REGISTRY.parse_params(method, params)
    if not adapters:
        raise InvalidParameterError("merge needs at least one adapter")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidParameterError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:  # torch seeds are 64-bit; a larger one was a 500
        raise InvalidParameterError(f"seed must be between 0 and {MAX_SEED} (2**63 - 1), got {seed}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidParameterError(f"threads must be a positive integer, got {threads!r}")
    labels = _input_labels(names, len(adapters))
    if grams is not None and len(grams) != len(adapters):
        raise InvalidParameterError(f"got {len(grams)} Gram sets for {len(adapters)} adapters; pass one per adapter")
    resolved_weights = _resolve_weights(spec.default_weight_values(len(adapters)), weights, len(adapters))
    warnings = _check_compatible(adapters, force)
    paths = _check_shapes(adapters, labels)
    out_dtype = dtype or _common_dtype(adapters)

    with torch_threads(threads):
        merged, reports = _merge_modules(
            adapters, paths, resolved_weights, spec, resolved, seed, out_dtype, progress, grams
        )

    extras, passthrough, extra_warnings = _merge_passthrough(adapters, resolved_weights, labels)
    warnings.extend(extra_warnings)
    adapter = LoraAdapter.from_modules(
        merged,
        base_model=next((a.base_model for a in adapters if a.base_model), None),
        extra_tensors=extras or None,
        config_overrides=_config_overrides(adapters, bool(extras), paths),
    )
    report = summarise(reports, passthrough, warnings, time.perf_counter() - started)
    return MergeResult(
        adapter=adapter,
        method=method,
        params=resolved.model_dump(),
        weights=tuple(resolved_weights),
        seed=seed,
        report=report,
    )


def _merge_modules(
    adapters: Sequence[LoraAdapter],
    paths: list[str],
    weights: list[float],
    spec: MergeMethod,
    params: BaseModel,
    seed: int,
    dtype: torch.dtype,
    progress: ProgressFn | None,
    grams: Sequence[Mapping[str, torch.Tensor] | None] | None,
) -> tuple[dict[str, LoraModule], list[ModuleReport]]:
    """The streaming loop: one module path at a time, every input's module read lazily."""
    present = [set(adapter.module_paths) for adapter in adapters]
    gram_sets = list(grams) if grams is not None else [None] * len(adapters)
    merged: dict[str, LoraModule] = {}
    reports: list[ModuleReport] = []
    for index, path in enumerate(paths):
        terms = [
            Term(i, w, adapter.module(path), (gram_sets[i] or {}).get(path))
            for i, (adapter, w, have) in enumerate(zip(adapters, weights, present))
            if path in have
        ]
        input_norm = sum(abs(t.coeff) * fro_norm(t.module.B.float(), t.module.A.float()) for t in terms)
        reference = FactorGram(*stack_terms(terms))
        ctx = ModuleContext(path=path, index=index, weights=tuple(weights), seed=seed, sum_norm=reference.norm)
        out = spec.merge_module(terms, params, ctx)
        B, A = _checked_factors(out.B, out.A, terms, path, spec.name, dtype)
        merged[path] = LoraModule(A=A, B=B, scale=1.0)
        reports.append(module_report(path, len(terms), reference, B, A, out.stats, input_norm))
        del reference, terms
        if progress is not None:
            progress(index + 1, len(paths), path)
    return merged, reports


# ---------------------------------------------------------------------------- validation
def _input_labels(names: Sequence[str] | None, n: int) -> list[str]:
    """How messages name each input: the caller's names, else "input 1", "input 2", ..."""
    if names is None:
        return [f"input {i}" for i in range(1, n + 1)]
    labels = [str(name) for name in names]
    if len(labels) != n:
        raise InvalidParameterError(f"got {len(labels)} names for {n} adapters; pass one name per adapter")
    return labels


def _join(labels: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _resolve_weights(default: list[float], weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return default
    values = list(weights)
    if len(values) != n:
        raise InvalidParameterError(f"got {len(values)} weights for {n} adapters; pass one weight per adapter")
    try:
        values = [float(w) for w in values]
    except (TypeError, ValueError):
        raise InvalidParameterError(f"weights must be numbers, got {list(weights)!r}") from None
    if not all(math.isfinite(w) for w in values):
        raise InvalidParameterError(f"weights must be finite, got {values}")
    if all(w == 0 for w in values):
        raise InvalidParameterError("all weights are zero; the merge would be empty")
    return values


def _check_compatible(adapters: Sequence[LoraAdapter], force: bool) -> list[str]:
    warnings: list[str] = []
    bases = sorted({a.base_model for a in adapters if a.base_model})
    if len(bases) > 1:
        message = f"the adapters were trained on different base models ({', '.join(bases)})"
        if not force:
            raise IncompatibleAdaptersError(
                f"{message}; their deltas do not add up on one model. Merge adapters of one base model, "
                "or merge them anyway with --force (force=True in Python) if the bases share weights"
            )
        warnings.append(message + "; merged anyway (force)")
    if any(a.base_model is None for a in adapters) and bases:
        warnings.append("some inputs do not record a base model; assumed to be " + bases[0])
    layouts = {a.config.fan_in_fan_out for a in adapters}
    if len(layouts) > 1:
        message = "some adapters set fan_in_fan_out and some do not (Conv1D vs Linear base layers)"
        if not force:
            raise IncompatibleAdaptersError(
                message + "; they cannot target the same base model. Merge them anyway with --force "
                "(force=True in Python)"
            )
        warnings.append(message + "; merged anyway (force), output uses fan_in_fan_out=False")
    return warnings


def _check_shapes(adapters: Sequence[LoraAdapter], labels: Sequence[str]) -> list[str]:
    """The sorted union of module paths, after checking every shared module has one shape."""
    shapes: dict[str, tuple[int, int, int]] = {}
    for i, adapter in enumerate(adapters):
        for path in adapter.module_paths:
            d_out, d_in, _ = adapter.module_shape(path)
            seen = shapes.setdefault(path, (d_out, d_in, i))
            if seen[:2] != (d_out, d_in):
                raise IncompatibleAdaptersError(
                    f"module '{path}' is {seen[0]}x{seen[1]} in {labels[seen[2]]} but {d_out}x{d_in} in "
                    f"{labels[i]}; the adapters target different architectures"
                )
    return sorted(shapes)


def _common_dtype(adapters: Sequence[LoraAdapter]) -> torch.dtype:
    dtypes = {adapter.module(adapter.module_paths[0]).A.dtype for adapter in adapters}
    (only,) = dtypes if len(dtypes) == 1 else (torch.float32,)
    return only if only.is_floating_point else torch.float32


def _checked_factors(
    B: torch.Tensor, A: torch.Tensor, terms: list[Term], path: str, method: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    d_out, d_in = terms[0].module.d_out, terms[0].module.d_in
    if B.ndim != 2 or A.ndim != 2 or B.shape[0] != d_out or A.shape[1] != d_in or B.shape[1] != A.shape[0]:
        raise RuntimeError(
            f"merge method '{method}' returned B{tuple(B.shape)} A{tuple(A.shape)} for '{path}' ({d_out}x{d_in})"
        )
    if B.shape[1] == 0:  # PEFT cannot load rank 0: a zero rank-1 module is the same delta
        B, A = torch.zeros(d_out, 1), torch.zeros(1, d_in)
    return B.to(dtype).contiguous(), A.to(dtype).contiguous()


# ---------------------------------------------------------------------------- passthrough and config
_EXTRA_WHAT = "a full weight saved beside the LoRA factors, such as a task head"


def _merge_passthrough(
    adapters: Sequence[LoraAdapter], weights: Sequence[float], labels: Sequence[str]
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Average the passthrough tensors every input carries alike; say in plain words why any other
    was left out, naming the inputs by ``labels``."""
    names = sorted({name for a in adapters for name in a.extra_tensor_names})
    if not names:
        return {}, {}, []
    total = sum(weights)
    norm = [w / total for w in weights] if total != 0 else [1.0 / len(weights)] * len(weights)
    status: dict[str, str] = {}
    sums: dict[str, torch.Tensor] = {}
    first: dict[str, int] = {}  # the input whose tensor fixed the shape
    dtypes: dict[str, torch.dtype] = {}
    reasons: dict[str, str] = {}
    for name in names:
        missing = [labels[i] for i, a in enumerate(adapters) if name not in a.extra_tensor_names]
        if missing:
            reasons[name] = f"{_join(missing)} {'does' if len(missing) == 1 else 'do'} not have it"
    for i, adapter in enumerate(adapters):  # one adapter's passthrough tensors in memory at a time
        for name, tensor in adapter.extra_tensors().items():
            if name in reasons:
                continue
            if not tensor.is_floating_point():
                reasons[name] = f"it holds {str(tensor.dtype).removeprefix('torch.')} values, which cannot be averaged"
                continue
            if name in sums and sums[name].shape != tensor.shape:
                reasons[name] = (
                    f"its shape is {tuple(sums[name].shape)} in {labels[first[name]]} but {tuple(tensor.shape)} "
                    f"in {labels[i]}"
                )
                continue
            dtypes.setdefault(name, tensor.dtype)
            first.setdefault(name, i)
            term = tensor.double() * norm[i]
            sums[name] = sums[name] + term if name in sums else term
    kept: dict[str, torch.Tensor] = {}
    warnings: list[str] = []
    for name in names:
        if name in reasons:
            status[name] = "dropped"
            warnings.append(f"'{name}' ({_EXTRA_WHAT}) was left out of the merge because {reasons[name]}")
        else:
            kept[name] = sums[name].to(dtypes[name])
            status[name] = "averaged"
    if kept:
        one = len(kept) == 1
        what = (
            f"{len(kept)} full weight{'' if one else 's'} saved beside the LoRA factors (such as task heads) "
            f"{'was' if one else 'were'}"
        )
        if total == 0:
            how = "averaged with equal shares, because the merge weights sum to zero and cannot be normalised"
        elif any(w < 0 for w in norm):
            shares = ", ".join(f"{w:+.3g}" for w in norm)
            how = (
                f"combined with shares {shares} (the merge weights divided by their sum): a negative share "
                "extrapolates away from that adapter's tensor, so the result is not an average of the inputs"
            )
        else:
            how = "averaged, each adapter counting in proportion to its merge weight"
        warnings.append(f"{what} {how}")
    return kept, status, warnings


def _carried_excludes(adapters: Sequence[LoraAdapter], paths: Sequence[str]) -> list[str] | str | None:
    """The inputs' ``exclude_modules`` that still hold for the merge.

    The merge names its targets by the last component of its module paths (``dense`` on MiniLM),
    which also selects layers no input adapted (MiniLM's ``pooler.dense``): without the inputs'
    excludes, PEFT would wrap those too and warn about missing keys. An exclude is carried when it
    selects none of the merged paths; a regex (PEFT's string form) only when every input has it.
    """
    values = [a.config.exclude_modules for a in adapters]
    regexes = {v for v in values if isinstance(v, str)}
    if regexes:
        regex = regexes.pop()
        shared = not regexes and all(v == regex for v in values)
        return regex if shared and not any(targets_module(regex, p) for p in paths) else None
    names = sorted({e for v in values if v for e in v})
    return [e for e in names if not any(targets_module([e], p) for p in paths)] or None


def _config_overrides(adapters: Sequence[LoraAdapter], has_extras: bool, paths: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    excludes = _carried_excludes(adapters, paths)
    if excludes:
        overrides["exclude_modules"] = excludes
    task_types = {a.config.raw.get("task_type") for a in adapters}
    if len(task_types) == 1:
        overrides["task_type"] = task_types.pop()
    if all(a.config.fan_in_fan_out for a in adapters):
        overrides["fan_in_fan_out"] = True
    if has_extras:
        overrides["modules_to_save"] = sorted({m for a in adapters for m in a.config.modules_to_save}) or None
    return overrides
