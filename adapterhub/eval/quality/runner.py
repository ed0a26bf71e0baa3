"""Run the merge-quality table: merge every subset with every spec, score each merge on its tasks.

For fixed subsets of the task library (``sampling``), every merge of the plan (``plan``) is run at
every rank ``k`` and the merged adapter is scored on each of its tasks under the similarity
protocol (``adapterhub.eval.evaluate``; on a causal LM, its prompts: ``adapterhub.eval.bed``), beside the references measured on the same examples:
the base model alone (zero-shot) and each task's own adapter.

Seeds: the all-task merge is run with every seed of the plan; the seed changes only the merge's
random choices (k-means seeding in ``lego``, random drops in ``dare_*``). Where the merge registry
says the seed cannot change anything (``linear``, ``svd``, ``ties``, ``magnitude``, ``lego`` with
``k`` >= all units) the merge runs once and the row says ``deterministic``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.eval.bed import BedModel, score_on_task
from adapterhub.eval.merge_select import score_on_examples
from adapterhub.eval.quality.auto import add_auto_cells, candidate_rows
from adapterhub.eval.quality.plan import (
    AUTO_METHODS,
    SELECTION_METHODS,
    MergeSpec,
    QualityPlan,
    default_plan,
)
from adapterhub.eval.quality.report import Cell, QualityReport, Reference, Scored
from adapterhub.eval.quality.sampling import cap_split, groups_of
from adapterhub.eval.quality.stats import mean, relative
from adapterhub.lora import LoraAdapter
from adapterhub.merge import REGISTRY, merge_adapters
from adapterhub.merge.registry import WEIGHT_CONVENTIONS, convention_weights
from adapterhub.tasks import Task

ProgressFn = Callable[[str], None]


def references(
    adapters: Mapping[str, LoraAdapter], tasks: Mapping[str, Task], names: Sequence[str], split: str, model: BedModel
) -> dict[str, Reference]:
    """Zero-shot and own-adapter scores of each task on ``split``."""
    refs = {}
    for t in names:
        zero = score_on_task(None, tasks[t], model, split=split)
        own = score_on_task(adapters[t], tasks[t], model, split=split)
        refs[t] = Reference(Scored.of(zero, tasks[t], split), Scored.of(own, tasks[t], split), own.n)
    return refs


def _validation_score(
    inputs: list[LoraAdapter], subset: Sequence[str], method: str, convention: str, *, k: int, seed: int,
    val: Mapping[str, Task], refs: Mapping[str, Reference], model: BedModel, merge_threads: int | None,
    grams: Mapping[str, Mapping[str, torch.Tensor]] | None,
) -> float:
    """Mean normalised accuracy of one merge on its tasks' validation examples."""
    result = merge_adapters(
        inputs, method, weights=convention_weights(convention, len(inputs)), params={"k": k}, seed=seed,
        threads=merge_threads, names=list(subset), grams=_grams_for(grams, subset),
    )
    norms = []
    for t in subset:
        r = score_on_task(result.adapter, val[t], model, split="validation")
        norms.append(relative(r.accuracy, refs[t].own.accuracy, refs[t].zero_shot.accuracy)[0])
    return mean(norms)


def select_conventions(
    adapters: Mapping[str, LoraAdapter],
    tasks: Mapping[str, Task],
    *,
    model: BedModel,
    methods: Sequence[str] = SELECTION_METHODS,
    k: int = 8,
    seed: int = 0,
    max_examples: int | None = None,
    merge_threads: int | None = 1,
    progress: ProgressFn | None = None,
    grams: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    pairs: Sequence[tuple[str, ...]] = (),
) -> dict[str, Any]:
    """Pick each method's weight convention (``avg``/``sqrt``/``sum``) and ``auto``'s data-free rule
    on the validation split.

    The all-task merge at rank ``k`` is scored on every task's validation split; the convention
    with the best mean normalised accuracy (own adapter and zero-shot measured on the same
    validation examples) wins. ``auto``'s candidates are ``AUTO_METHODS`` at their picked
    conventions; the data-free rule takes the best data-free candidate (not ``regmean``) on the
    all-task merge (4 or more inputs) and, scored again on ``pairs``, the best for pairs. The test
    split is never read.

    Returns:
        ``{"split": "validation", "k", "seed", "picked": {method: convention},
        "scores": {method: {convention: mean normalised accuracy}}, "candidates": [key, ...],
        "rule": {"large": key, "small": key}, "pair_scores": {key: score}, "references": {...}}``.
    """
    names = sorted(adapters)
    val = {t: cap_split(tasks[t], "validation", max_examples) for t in names}
    refs = references(adapters, val, names, "validation", model)
    scores: dict[str, dict[str, float]] = {}
    picked: dict[str, str] = {}
    inputs = [adapters[t] for t in names]
    common = dict(k=k, seed=seed, val=val, refs=refs, model=model, merge_threads=merge_threads, grams=grams)
    for method in [*methods, *(m for m in AUTO_METHODS if m not in methods)]:
        if method == "regmean" and grams is None:
            continue
        conventions = [REGISTRY.get(method).default_convention] if method == "lego" else list(WEIGHT_CONVENTIONS)
        scores[method] = {}
        for convention in conventions:
            scores[method][convention] = _validation_score(inputs, names, method, convention, **common)
            if progress:
                progress(f"validation: {method} w={WEIGHT_CONVENTIONS[convention]} -> {scores[method][convention]:.4f}")
        picked[method] = max(scores[method], key=lambda c: (scores[method][c], c == "sum"))
    candidates = [f"{m}/{picked[m]}" for m in AUTO_METHODS if m in picked]
    data_free = [key for key in candidates if not key.startswith("regmean/")]  # the rule needs no data
    large = max(data_free, key=lambda key: scores[key.split("/")[0]][key.split("/")[1]])
    pair_scores: dict[str, float] = {}
    for key in candidates if pairs else []:
        method, convention = key.split("/")
        pair_scores[key] = mean([
            _validation_score([adapters[t] for t in pair], pair, method, convention, **common) for pair in pairs
        ])
        if progress:
            progress(f"validation pairs: {key} -> {pair_scores[key]:.4f}")
    small = max(data_free, key=lambda key: pair_scores[key]) if pair_scores else large
    return {
        "split": "validation",
        "k": k,
        "seed": seed,
        "picked": picked,
        "scores": scores,
        "candidates": candidates,
        "rule": {"large": large, "small": small},
        "pair_scores": pair_scores,
        "references": {
            t: {"zero_shot": refs[t].zero_shot.accuracy, "own": refs[t].own.accuracy, "n": refs[t].n} for t in names
        },
    }


def _grams_for(
    grams: Mapping[str, Mapping[str, torch.Tensor]] | None, subset: Sequence[str]
) -> list[Mapping[str, torch.Tensor]] | None:
    return [grams[t] for t in subset] if grams is not None else None


def _with_selected(specs: list[MergeSpec], picked: Mapping[str, str]) -> list[MergeSpec]:
    """``specs`` with each validation-picked row inserted after its method's last row."""
    specs = list(specs)
    keys = {s.key for s in specs}
    for method, convention in picked.items():
        if method not in SELECTION_METHODS or convention == REGISTRY.get(method).default_convention:
            continue  # the default row shows it
        spec = MergeSpec(f"{method}/{convention}", f"{method} (val-picked)", method, weights=convention)
        present = [i for i, s in enumerate(specs) if s.method == method]
        if spec.key not in keys and present:
            specs.insert(max(present) + 1, spec)
    return specs


def total_units(adapters: Mapping[str, LoraAdapter], subset: Sequence[str]) -> int:
    """The smallest per-module total rank of a subset (lego clusters iff k is below it)."""
    paths = sorted({p for t in subset for p in adapters[t].module_paths})
    return min(sum(adapters[t].ranks().get(p, 0) for t in subset) for p in paths)


def run_merge_quality(
    adapters: Mapping[str, LoraAdapter],
    tasks: Mapping[str, Task],
    *,
    model: BedModel,
    plan: QualityPlan | None = None,
    progress: ProgressFn | None = None,
    grams: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    example_tasks: Mapping[str, Task] | None = None,
) -> QualityReport:
    """Build the merge-quality table.

    Args:
        adapters: task name -> that task's adapter (e.g. from ``load_library``).
        tasks: task name -> ``Task`` (label descriptions and splits); must cover ``adapters``.
        model: the base model the adapters were trained on.
        plan: what to run (default ``default_plan()``).
        progress: called with one line per finished step.
        grams: task -> module path -> input Gram matrix on that adapter's examples (``regmean``
            rows run only with them).
        example_tasks: task -> its adapter's labelled examples as a task (``merge_select.
            examples_task``); with them the ``auto/examples`` row is built.

    Returns:
        A ``QualityReport`` (``to_markdown``, ``to_dict``, ``plot``, ``write``).

    Raises:
        InvalidParameterError: fewer than two adapters, or a task missing.
    """
    plan = plan or default_plan()
    names = sorted(adapters)
    if len(names) < 2:
        raise InvalidParameterError("the merge-quality table needs at least two task adapters")
    missing = [t for t in names if t not in tasks]
    if missing:
        raise InvalidParameterError(f"no task definition for {', '.join(missing)}")
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    selection = None
    specs = [s for s in plan.specs if grams is not None or s.method != "regmean"]
    groups = groups_of(names, plan)
    if plan.select_on_validation:
        pairs = [subset for group, subsets in groups if group == "2 tasks" for subset in subsets]
        selection = select_conventions(
            adapters, tasks, model=model, k=8 if 8 in plan.ks else plan.ks[0], seed=plan.seeds[0],
            max_examples=plan.max_examples, merge_threads=plan.merge_threads, progress=say, grams=grams,
            pairs=pairs,
        )
        specs = _with_selected(specs, selection["picked"])
    else:
        specs = [s for s in specs if s.role != "auto"]
    candidates = set(candidate_rows(selection).values()) if selection else set()
    example_own = {
        t: score_on_task(adapters[t], example_tasks[t], model, split="validation").accuracy
        for t in (example_tasks or {}) if t in adapters
    }
    split = plan.split
    eval_tasks = {t: cap_split(tasks[t], split, plan.max_examples) for t in names}
    refs = references(adapters, eval_tasks, names, split, model)
    say(f"references (zero-shot, individual) on {split}: {time.perf_counter() - started:.0f} s")
    todo = [
        (group, subset, spec, k, seed)
        for group, subsets in groups
        for spec in specs
        if spec.role != "auto" and not (spec.ablation and group != "all tasks")
        for k in (plan.ks if spec.uses_k else (None,))
        for subset in subsets
        for seed in (
            plan.seeds if group == "all tasks" and spec.uses_seed(k, total_units(adapters, subset)) else plan.seeds[:1]
        )
    ]
    cells: list[Cell] = []
    for i, (group, subset, spec, k, seed) in enumerate(todo, 1):
        inputs = [adapters[t] for t in subset]
        t0 = time.perf_counter()
        params = dict(spec.params)
        if k is not None:
            params["k"] = k
        result = merge_adapters(
            inputs, spec.method, weights=spec.weight_values(len(inputs)), params=params, seed=seed,
            threads=plan.merge_threads, names=list(subset), grams=_grams_for(grams, subset),
        )
        t1 = time.perf_counter()
        scores = {
            t: Scored.of(score_on_task(result.adapter, eval_tasks[t], model, split=split), eval_tasks[t], split)
            for t in subset
        }
        example_score = None
        if spec.key in candidates and all(t in example_own for t in subset):
            example_score = score_on_examples(
                result.adapter, [example_tasks[t] for t in subset], [example_own[t] for t in subset], model  # type: ignore[index]
            )
        t2 = time.perf_counter()
        cells.append(Cell(group, subset, spec.key, k, seed, result.report.output_rank, scores, t1 - t0, t2 - t1,
                          result.report.mixing_share, example_score))
        elapsed = t2 - started
        say(f"[{i}/{len(todo)}] {group} {'+'.join(subset) if len(subset) < len(names) else 'all'} {spec.key} "
            f"k={k} seed={seed}: {t1 - t0:.1f}+{t2 - t1:.1f} s (elapsed {elapsed / 60:.1f} min, "
            f"eta {elapsed / i * (len(todo) - i) / 60:.1f} min)")
    if selection is not None:
        cells += add_auto_cells(cells, selection, plan.seeds)
    return QualityReport(
        plan=dataclasses.replace(plan, specs=tuple(specs)),
        tasks=names,
        groups=groups,
        references=refs,
        cells=cells,
        selection=selection,
        seconds=time.perf_counter() - started,
        threads=torch.get_num_threads(),
    )
