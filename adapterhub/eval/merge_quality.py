"""Merge quality: how much of each task adapter a merged adapter keeps, beside the zero-shot baseline.

For fixed subsets of the task library (a few pairs, a few groups of four, all tasks), every merge
method of a plan is run at every rank ``k`` and the merged adapter is scored on each of its tasks
under the similarity protocol (``adapterhub.eval.evaluate``). Every figure stands beside its
references, measured on the same examples:

* ``zero-shot``: the base model alone (the baseline);
* ``individual``: each task's own adapter (what a merge can at best keep);
* per task: ``normalised accuracy = merged / own`` and
  ``retained gain = (merged - zero-shot) / (own - zero-shot)``; a row reports their means over the
  subset's tasks (then over the group's subsets and the seeds).

Subsets are fixed, not drawn: with the tasks sorted by name, subsets of size ``s`` are consecutive
windows ``tasks[i*s : i*s + s]`` (wrapping around), so with 7 tasks the pairs are (0,1), (2,3),
(4,5) and the groups of four (0..3), (4,5,6,0). Every task appears in at least one subset.

Seeds: the all-task merge is run with every seed of the plan (3 by default); the seed changes only
the merge's random choices (k-means seeding in ``lego``, random drops in ``dare_*``). For methods
where it cannot change anything (``linear``, ``svd``, ``ties``, ``magnitude``, ``lego`` with
``k`` >= all units) the merge runs once and the row says ``deterministic``.

Noise: a row's standard error combines the seed spread (standard error of the mean over seeds)
and the sampling error of the test examples (per-example correctness, binomial per task, carried
through the normalisation). Two rows are compared *paired* on the same examples: the difference of
mean normalised accuracy gets ``SE = sqrt(SE_paired_examples^2 + SE_seed_a^2 + SE_seed_b^2)``; a
difference within ``2 SE`` is reported as a tie.

Weights: each method runs at its documented default (``1`` for the summing methods and
``ties``/``dare_ties``, ``1/n`` for ``lego``) and, where it matters, at the other conventions:
``1/n`` (average), ``1/sqrt(n)`` and ``1`` (sum). ``linear`` and ``svd`` are shown at all three;
for ``ties``, ``dare_ties`` and ``magnitude`` the convention is picked on the *validation* split
(all-task merge, k = 8) and shown beside the default. Model selection never reads the test split.

Entry points: :func:`run_merge_quality` (the table), :func:`default_plan`, :func:`quick_plan`,
:func:`select_conventions`; :class:`QualityReport` renders Markdown, JSON and a PNG plot.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.eval.evaluate import EvalResult, evaluate
from adapterhub.eval.tasks import Task
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import BaseModel

ProgressFn = Callable[[str], None]

CONVENTIONS: dict[str, str] = {"avg": "1/n", "sqrt": "1/√n", "sum": "1"}
"""Weight conventions: every input weighs ``1/n`` (average), ``1/sqrt(n)`` or ``1`` (sum)."""

DEFAULT_KS: tuple[int, ...] = (4, 8, 16)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
SELECTION_METHODS: tuple[str, ...] = ("ties", "dare_ties", "magnitude")
TIE_SIGMAS = 2.0


# ---------------------------------------------------------------------------- what to run
@dataclass(frozen=True)
class MergeSpec:
    """One row family of the table: a method, a weight convention and fixed parameters.

    Attributes:
        key: stable id, e.g. ``"svd/sqrt"`` (JSON key, plot legend).
        label: what the table prints.
        method: registered merge method.
        weights: ``"default"`` (the method's own default) or a key of ``CONVENTIONS``.
        params: the method's parameters except ``k``.
        uses_k: run once per ``k`` of the plan (else once, at the method's own rank).
        role: ``"linear"`` (exact reference at rank n*r), ``"baseline"`` or ``"lego"``.
        ablation: run on the all-task merge only (the lego reweighting/clustering ablations).
    """

    key: str
    label: str
    method: str
    weights: str = "default"
    params: Mapping[str, Any] = field(default_factory=dict)
    uses_k: bool = True
    role: str = "baseline"
    ablation: bool = False

    def weight_values(self, n: int) -> list[float] | None:
        """The explicit weights for ``n`` inputs (``None``: the method's default)."""
        if self.weights == "default":
            return None
        if self.weights == "avg":
            return [1.0 / n] * n
        if self.weights == "sqrt":
            return [1.0 / math.sqrt(n)] * n
        if self.weights == "sum":
            return [1.0] * n
        raise InvalidParameterError(f"unknown weight convention {self.weights!r}; choose default, avg, sqrt or sum")

    def weights_label(self) -> str:
        if self.weights == "default":
            return _default_weights_label(self.method) + " (default)"
        return CONVENTIONS[self.weights]

    def seeded(self, k: int | None, total_units: int) -> bool:
        """Whether the seed can change this merge (random drops, or clustering with k < units)."""
        if self.method.startswith("dare"):
            return True
        if self.method == "lego":
            return k is not None and k < total_units
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "method": self.method,
            "weights": self.weights,
            "weights_label": self.weights_label(),
            "params": dict(self.params),
            "uses_k": self.uses_k,
            "role": self.role,
            "ablation": self.ablation,
        }


def _default_weights_label(method: str) -> str:
    from adapterhub.merge import REGISTRY

    return "1/n" if REGISTRY.get(method).default_weights == "uniform" else "1"


def lego_defaults() -> dict[str, Any]:
    """The default ``lego`` parameters (without ``k``): the registry's, with the output reweighting
    that ``adapterhub.merge.lego`` documents as its validated default (``DEFAULT_OUTPUT_REWEIGHT``),
    so the table's ``lego`` row is what ``lego_module`` does by default even where the registry's
    declared default lags behind."""
    from adapterhub.merge import resolve_params
    from adapterhub.merge.lego import DEFAULT_OUTPUT_REWEIGHT

    params = resolve_params("lego", {})
    params.pop("k", None)
    params["output_reweight"] = DEFAULT_OUTPUT_REWEIGHT
    return params


def _lego_label(params: Mapping[str, Any]) -> str:
    parts = ["k-medoids" if params.get("cluster") == "kmedoids" else "k-means"]
    parts.append("param rw" if params.get("param_reweight") else "no param rw")
    out = params.get("output_reweight")
    parts.append(f"output={out}" if out != "none" else "no output rw")
    return "lego (" + ", ".join(parts) + ")"


def lego_specs(*, ablations: bool = True) -> list[MergeSpec]:
    """``lego`` at its defaults, k-medoids, the other output modes (every group), and each
    reweighting switched off (ablations: the all-task merge only)."""
    base = lego_defaults()
    specs = [MergeSpec("lego", _lego_label(base), "lego", params=base, role="lego")]
    kmedoids = {**base, "cluster": "kmedoids"}
    specs.append(MergeSpec("lego/kmedoids", _lego_label(kmedoids), "lego", params=kmedoids, role="lego"))
    if not ablations:
        return specs
    variants: list[tuple[str, dict[str, Any]]] = [
        ("lego/no-param", {**base, "param_reweight": not base["param_reweight"]}),
        ("lego/no-output", {**base, "output_reweight": "none"}),
        ("lego/no-reweight", {**base, "param_reweight": False, "output_reweight": "none"}),
    ]
    # the best output scale depends on how many adapters are merged, so "norm" and "mean" are shown
    # for every group; "sum" (far too strong for orthogonal task deltas) on the all-task merge only
    outputs = [(f"lego/output-{m}", {**base, "output_reweight": m}, m == "sum") for m in ("norm", "mean", "sum")]
    seen = {json.dumps(base, sort_keys=True), json.dumps(kmedoids, sort_keys=True)}
    for key, params, ablation in outputs + [(k, p, True) for k, p in variants]:
        signature = json.dumps(params, sort_keys=True)
        if signature in seen:
            continue
        seen.add(signature)
        specs.append(MergeSpec(key, _lego_label(params), "lego", params=params, role="lego", ablation=ablation))
    return specs


def baseline_specs(tuned: Mapping[str, str] | None = None) -> list[MergeSpec]:
    """Exact linear merges (rank n*r) at the three conventions, svd at the three conventions, and
    ``ties``/``dare_ties``/``magnitude`` at their defaults plus the validation-picked convention."""
    specs = [
        MergeSpec(f"linear/{c}", f"linear ({'average' if c == 'avg' else 'sum' if c == 'sum' else 'w=1/√n'})",
                  "linear", weights=c, uses_k=False, role="linear")
        for c in ("avg", "sqrt", "sum")
    ]
    specs += [MergeSpec(f"svd/{c}", "svd", "svd", weights=c) for c in ("avg", "sqrt", "sum")]
    for method in SELECTION_METHODS:
        specs.append(MergeSpec(method, method, method))
        picked = (tuned or {}).get(method)
        if picked and picked != "sum":  # "sum" (weights 1) is these methods' default already
            specs.append(MergeSpec(f"{method}/{picked}", f"{method} (val-picked)", method, weights=picked))
    return specs


@dataclass(frozen=True)
class QualityPlan:
    """What ``run_merge_quality`` runs.

    Attributes:
        ks: merge ranks.
        seeds: seeds of the all-task merge (other groups use the first seed).
        subset_sizes: ``(size, how many fixed subsets)``; sizes >= the number of tasks are skipped
            (the all-task merge is always run).
        specs: the merge rows (``baseline_specs() + lego_specs()`` by default).
        split: the split the table reports (``"test"``).
        max_examples: cap per task on that split (stratified by label, fixed), ``None`` for all.
        select_on_validation: pick the ``ties``/``dare_ties``/``magnitude`` weight convention on
            the validation split first (adds rows to ``specs``).
        merge_threads: torch threads while merging (1: the factor-space methods are fastest so).
    """

    ks: tuple[int, ...] = DEFAULT_KS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    subset_sizes: tuple[tuple[int, int], ...] = ((2, 3), (4, 2))
    specs: tuple[MergeSpec, ...] = ()
    split: str = "test"
    max_examples: int | None = None
    select_on_validation: bool = True
    merge_threads: int | None = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ks": list(self.ks),
            "seeds": list(self.seeds),
            "subset_sizes": [list(s) for s in self.subset_sizes],
            "split": self.split,
            "max_examples": self.max_examples,
            "select_on_validation": self.select_on_validation,
            "merge_threads": self.merge_threads,
            "specs": [s.to_dict() for s in self.specs],
        }


def default_plan(*, max_examples: int | None = None) -> QualityPlan:
    """The full table: pairs x3, fours x2, all tasks x3 seeds; k in {4, 8, 16}; every method."""
    return QualityPlan(specs=tuple(baseline_specs() + lego_specs()), max_examples=max_examples)


def quick_plan() -> QualityPlan:
    """A few-minute version: all-task merge only, k = 8, one seed, core methods, 120 examples a task."""
    specs = [s for s in baseline_specs() if s.key in ("linear/avg", "linear/sum", "svd/sqrt", "svd/sum", "ties")]
    return QualityPlan(
        ks=(8,), seeds=(0,), subset_sizes=(), specs=tuple(specs + lego_specs(ablations=False)[:1]),
        max_examples=120, select_on_validation=False,
    )


def fixed_subsets(tasks: Sequence[str], size: int, count: int) -> list[tuple[str, ...]]:
    """``count`` subsets of ``size`` tasks: consecutive windows of the sorted names, wrapping around."""
    names = sorted(tasks)
    if size >= len(names):
        return [tuple(names)]
    out: list[tuple[str, ...]] = []
    for i in range(count):
        subset = tuple(sorted(names[(i * size + j) % len(names)] for j in range(size)))
        if subset not in out:
            out.append(subset)
    return out


def groups_of(tasks: Sequence[str], plan: QualityPlan) -> list[tuple[str, list[tuple[str, ...]]]]:
    """``[(group name, subsets)]``: the fixed subsets of each size, then all tasks."""
    groups = []
    for size, count in plan.subset_sizes:
        if size < len(tasks):
            groups.append((f"{size} tasks", fixed_subsets(tasks, size, count)))
    groups.append(("all tasks", [tuple(sorted(tasks))]))
    return groups


def cap_split(task: Task, split: str, max_examples: int | None) -> Task:
    """``task`` with ``split`` cut to at most ``max_examples`` examples, stratified by label.

    Each label keeps its share (largest remainders), examples drawn by a shuffle seeded with the
    task's name, so the subset is fixed across runs and machines. Other splits are untouched.
    """
    items = task.split(split)
    if max_examples is None or len(items) <= max_examples:
        return task
    by_label: dict[int, list[str]] = defaultdict(list)
    for e in items:
        by_label[e.label].append(e.id)
    quotas = {c: max_examples * len(ids) / len(items) for c, ids in by_label.items()}
    take = {c: int(q) for c, q in quotas.items()}
    for c in sorted(quotas, key=lambda c: (-(quotas[c] - take[c]), c))[: max_examples - sum(take.values())]:
        take[c] += 1
    rng = random.Random(f"{task.name}/{split}")
    keep: set[str] = set()
    for c in sorted(by_label):
        ids = sorted(by_label[c])
        rng.shuffle(ids)
        keep.update(ids[: take[c]])
    examples = tuple(e for e in task.examples if e.split != split or e.id in keep)
    return dataclasses.replace(task, examples=examples)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for a block and restore them (``None``: leave as is)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise InvalidParameterError(f"threads must be at least 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------- measuring
@dataclass
class Scored:
    """One configuration scored on one task: accuracy and per-example correctness."""

    accuracy: float
    macro_f1: float
    correct: list[bool]

    @classmethod
    def of(cls, result: EvalResult, task: Task, split: str) -> "Scored":
        labels = task.label_ids(split)
        return cls(result.accuracy, result.macro_f1, [p == y for p, y in zip(result.predictions, labels)])


@dataclass
class Cell:
    """One merged adapter (group, subset, spec, k, seed) scored on each task of its subset."""

    group: str
    subset: tuple[str, ...]
    spec: str
    k: int | None
    seed: int
    rank: int
    scores: dict[str, Scored]
    merge_seconds: float
    eval_seconds: float
    mixing_share: float | None = None


@dataclass
class Reference:
    """The zero-shot baseline and the task's own adapter on the reported split."""

    zero_shot: Scored
    own: Scored
    n: int


def relative(accuracy: float, own: float, zero_shot: float) -> tuple[float, float]:
    """``(merged / own, (merged - zero-shot) / (own - zero-shot))``; NaN where undefined."""
    norm = accuracy / own if own else math.nan
    gain = (accuracy - zero_shot) / (own - zero_shot) if own != zero_shot else math.nan
    return norm, gain


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _var(values: Sequence[float]) -> float:
    """Sample variance (ddof 1); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return sum((v - m) ** 2 for v in values) / (len(values) - 1)


def _paired_var(diffs: Sequence[float]) -> float:
    """Variance of the mean of per-example values."""
    return _var(diffs) / len(diffs) if diffs else 0.0


def select_conventions(
    adapters: Mapping[str, LoraAdapter],
    tasks: Mapping[str, Task],
    *,
    model: BaseModel,
    methods: Sequence[str] = SELECTION_METHODS,
    k: int = 8,
    seed: int = 0,
    max_examples: int | None = None,
    merge_threads: int | None = 1,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Pick each method's weight convention (``avg``/``sqrt``/``sum``) on the validation split.

    The all-task merge at rank ``k`` is scored on every task's validation split; the convention
    with the best mean normalised accuracy (own adapter and zero-shot measured on the same
    validation examples) wins. The test split is never read.

    Returns:
        ``{"split": "validation", "k", "seed", "picked": {method: convention},
        "scores": {method: {convention: mean normalised accuracy}}, "references": {...}}``.
    """
    from adapterhub.merge import merge_adapters

    names = sorted(adapters)
    val = {t: cap_split(tasks[t], "validation", max_examples) for t in names}
    refs = _references(adapters, val, names, "validation", model)
    scores: dict[str, dict[str, float]] = {}
    picked: dict[str, str] = {}
    inputs = [adapters[t] for t in names]
    for method in methods:
        scores[method] = {}
        for convention in CONVENTIONS:
            spec = MergeSpec(f"{method}/{convention}", method, method, weights=convention)
            result = merge_adapters(
                inputs, method, weights=spec.weight_values(len(inputs)), params={"k": k}, seed=seed,
                threads=merge_threads,
            )
            norms = []
            for t in names:
                r = evaluate(result.adapter, val[t], split="validation", model=model)
                norms.append(relative(r.accuracy, refs[t].own.accuracy, refs[t].zero_shot.accuracy)[0])
            scores[method][convention] = _mean(norms)
            if progress:
                progress(f"validation: {method} w={CONVENTIONS[convention]} -> {scores[method][convention]:.4f}")
        picked[method] = max(scores[method], key=lambda c: (scores[method][c], c == "sum"))
    return {
        "split": "validation",
        "k": k,
        "seed": seed,
        "picked": picked,
        "scores": scores,
        "references": {
            t: {"zero_shot": refs[t].zero_shot.accuracy, "own": refs[t].own.accuracy, "n": refs[t].n} for t in names
        },
    }


def _references(
    adapters: Mapping[str, LoraAdapter], tasks: Mapping[str, Task], names: Sequence[str], split: str, model: BaseModel
) -> dict[str, Reference]:
    refs = {}
    for t in names:
        zero = evaluate(None, tasks[t], split=split, model=model)
        own = evaluate(adapters[t], tasks[t], split=split, model=model)
        refs[t] = Reference(Scored.of(zero, tasks[t], split), Scored.of(own, tasks[t], split), own.n)
    return refs


def run_merge_quality(
    adapters: Mapping[str, LoraAdapter],
    tasks: Mapping[str, Task],
    *,
    model: BaseModel,
    plan: QualityPlan | None = None,
    progress: ProgressFn | None = None,
) -> "QualityReport":
    """Build the merge-quality table.

    Args:
        adapters: task name -> that task's adapter (e.g. from ``load_library``).
        tasks: task name -> ``Task`` (label descriptions and splits); must cover ``adapters``.
        model: the base model the adapters were trained on.
        plan: what to run (default ``default_plan()``).
        progress: called with one line per finished step.

    Returns:
        A ``QualityReport`` (``to_markdown``, ``to_dict``, ``plot``, ``write``).

    Raises:
        InvalidParameterError: fewer than two adapters, or a task missing.
    """
    from adapterhub.merge import merge_adapters

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
    specs = list(plan.specs)
    if plan.select_on_validation:
        selection = select_conventions(
            adapters, tasks, model=model, k=8 if 8 in plan.ks else plan.ks[0], seed=plan.seeds[0],
            max_examples=plan.max_examples, merge_threads=plan.merge_threads, progress=say,
        )
        keys = {s.key for s in specs}
        for spec in baseline_specs(selection["picked"]):
            present = [i for i, s in enumerate(specs) if s.method == spec.method]
            if spec.key not in keys and spec.method in SELECTION_METHODS and present:
                specs.insert(max(present) + 1, spec)
    split = plan.split
    eval_tasks = {t: cap_split(tasks[t], split, plan.max_examples) for t in names}
    refs = _references(adapters, eval_tasks, names, split, model)
    say(f"references (zero-shot, individual) on {split}: {time.perf_counter() - started:.0f} s")
    groups = groups_of(names, plan)
    cells: list[Cell] = []
    todo = [
        (group, subset, spec, k, seed)
        for group, subsets in groups
        for spec in specs
        if not (spec.ablation and group != "all tasks")
        for k in (plan.ks if spec.uses_k else (None,))
        for subset in subsets
        for seed in (
            plan.seeds if group == "all tasks" and spec.seeded(k, _total_units(adapters, subset)) else plan.seeds[:1]
        )
    ]
    for i, (group, subset, spec, k, seed) in enumerate(todo, 1):
        inputs = [adapters[t] for t in subset]
        t0 = time.perf_counter()
        params = dict(spec.params)
        if k is not None:
            params["k"] = k
        result = merge_adapters(
            inputs, spec.method, weights=spec.weight_values(len(inputs)), params=params, seed=seed,
            threads=plan.merge_threads,
        )
        t1 = time.perf_counter()
        scores = {
            t: Scored.of(evaluate(result.adapter, eval_tasks[t], split=split, model=model), eval_tasks[t], split)
            for t in subset
        }
        t2 = time.perf_counter()
        cells.append(Cell(group, subset, spec.key, k, seed, result.report.output_rank, scores, t1 - t0, t2 - t1,
                          result.report.mixing_share))
        elapsed = t2 - started
        say(f"[{i}/{len(todo)}] {group} {'+'.join(subset) if len(subset) < len(names) else 'all'} {spec.key} "
            f"k={k} seed={seed}: {t1 - t0:.1f}+{t2 - t1:.1f} s (elapsed {elapsed / 60:.1f} min, "
            f"eta {elapsed / i * (len(todo) - i) / 60:.1f} min)")
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


def _total_units(adapters: Mapping[str, LoraAdapter], subset: Sequence[str]) -> int:
    """The smallest per-module total rank of a subset (lego clusters iff k is below it)."""
    paths = sorted({p for t in subset for p in adapters[t].module_paths})
    return min(sum(adapters[t].ranks().get(p, 0) for t in subset) for p in paths)


# ---------------------------------------------------------------------------- the report
@dataclass
class Row:
    """One line of the table: a spec at one k in one group, aggregated over subsets and seeds."""

    group: str
    key: str
    label: str
    weights: str
    role: str
    k: int | None
    rank: int | None
    accuracy: dict[str, float]
    normalised: float
    retained_gain: float
    se: float
    se_seed: float
    se_sample: float
    gain_se: float
    seeds: list[int]
    deterministic: bool
    per_seed_normalised: list[float]
    mixing_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class QualityReport:
    """The measured table with everything needed to re-derive it (per-example correctness kept)."""

    plan: QualityPlan
    tasks: list[str]
    groups: list[tuple[str, list[tuple[str, ...]]]]
    references: dict[str, Reference]
    cells: list[Cell]
    selection: dict[str, Any] | None
    seconds: float
    threads: int

    # -- aggregation
    def _spec(self, key: str) -> MergeSpec:
        return next(s for s in self.plan.specs if s.key == key)

    def _cells(self, group: str, key: str, k: int | None) -> list[Cell]:
        return [c for c in self.cells if c.group == group and c.spec == key and c.k == k]

    def _subset_stats(self, cells: list[Cell], subset: tuple[str, ...]) -> dict[str, Any]:
        """Per subset: normalised and gain per seed, per-example correctness averaged over seeds."""
        mine = [c for c in cells if c.subset == subset]
        norms, gains = [], []
        for c in mine:
            pairs = [relative(c.scores[t].accuracy, self.references[t].own.accuracy,
                              self.references[t].zero_shot.accuracy) for t in subset]
            norms.append(_mean([p[0] for p in pairs]))
            gains.append(_mean([p[1] for p in pairs]))
        mean_correct = {
            t: [sum(c.scores[t].correct[i] for c in mine) / len(mine) for i in range(self.references[t].n)]
            for t in subset
        }
        return {"norms": norms, "gains": gains, "correct": mean_correct, "seeds": [c.seed for c in mine]}

    def _sample_var(self, subset: tuple[str, ...], values: Mapping[str, Sequence[float]], gain: bool = False) -> float:
        """Variance of a subset's mean normalised accuracy (or gain) from per-example values."""
        total = 0.0
        for t in subset:
            ref = self.references[t]
            denom = (ref.own.accuracy - ref.zero_shot.accuracy) if gain else ref.own.accuracy
            if denom:
                total += _paired_var(values[t]) / denom**2
        return total / len(subset) ** 2

    def row(self, group: str, key: str, k: int | None) -> Row | None:
        """The aggregated row, or ``None`` if that configuration was not run."""
        cells = self._cells(group, key, k)
        if not cells:
            return None
        spec = self._spec(key)
        subsets = [s for g, subsets in self.groups if g == group for s in subsets]
        stats = [self._subset_stats(cells, s) for s in subsets if any(c.subset == s for c in cells)]
        used = [s for s in subsets if any(c.subset == s for c in cells)]
        S = len(stats)
        normalised = _mean([_mean(st["norms"]) for st in stats])
        gain = _mean([_mean(st["gains"]) for st in stats])
        seed_var = sum(_var(st["norms"]) / len(st["norms"]) for st in stats) / S**2
        gain_seed_var = sum(_var(st["gains"]) / len(st["gains"]) for st in stats) / S**2
        sample_var = sum(self._sample_var(s, st["correct"]) for s, st in zip(used, stats)) / S**2
        gain_sample_var = sum(self._sample_var(s, st["correct"], gain=True) for s, st in zip(used, stats)) / S**2
        accuracy = {}
        for t in self.tasks:
            values = [c.scores[t].accuracy for c in cells if t in c.scores]
            if values:
                accuracy[t] = _mean(values)
        mixing = [c.mixing_share for c in cells if c.mixing_share is not None]
        return Row(
            group=group, key=key, label=spec.label, weights=spec.weights_label(), role=spec.role, k=k,
            rank=max(c.rank for c in cells), accuracy=accuracy, normalised=normalised, retained_gain=gain,
            se=math.sqrt(seed_var + sample_var), se_seed=math.sqrt(seed_var), se_sample=math.sqrt(sample_var),
            gain_se=math.sqrt(gain_seed_var + gain_sample_var), seeds=sorted({c.seed for c in cells}),
            deterministic=len({c.seed for c in cells}) == 1 and len(self.plan.seeds) > 1 and group == "all tasks",
            per_seed_normalised=stats[0]["norms"] if S == 1 else [], mixing_share=_mean(mixing) if mixing else None,
        )

    def rows(self, group: str) -> list[Row]:
        out = []
        for spec in self.plan.specs:
            for k in (self.plan.ks if spec.uses_k else (None,)):
                r = self.row(group, spec.key, k)
                if r is not None:
                    out.append(r)
        order = {None: -1, **{k: i for i, k in enumerate(self.plan.ks)}}
        return sorted(out, key=lambda r: (order[r.k], r.role == "lego"))

    def reference_rows(self, group: str) -> dict[str, dict[str, Any]]:
        """Zero-shot and individual adapters over the group's tasks (normalised like the rows)."""
        tasks = sorted({t for g, subsets in self.groups if g == group for s in subsets for t in s})
        out = {}
        for name, pick in (("zero-shot", lambda r: r.zero_shot), ("individual", lambda r: r.own)):
            accs = {t: pick(self.references[t]).accuracy for t in tasks}
            rel = [relative(accs[t], self.references[t].own.accuracy, self.references[t].zero_shot.accuracy)
                   for t in tasks]
            out[name] = {"accuracy": accs, "normalised": _mean([r[0] for r in rel]),
                         "retained_gain": _mean([r[1] for r in rel])}
        return out

    def compare(self, group: str, a: str, b: str, k: int | None, kb: int | None = None) -> dict[str, Any]:
        """Paired difference of mean normalised accuracy, ``a - b``, with its SE and verdict."""
        kb = k if kb is None else kb
        ca, cb = self._cells(group, a, k), self._cells(group, b, kb)
        subsets = [s for g, subsets in self.groups if g == group for s in subsets]
        diffs, var = [], 0.0
        for s in subsets:
            if not any(c.subset == s for c in ca) or not any(c.subset == s for c in cb):
                continue
            sa, sb = self._subset_stats(ca, s), self._subset_stats(cb, s)
            diffs.append(_mean(sa["norms"]) - _mean(sb["norms"]))
            paired = {t: [x - y for x, y in zip(sa["correct"][t], sb["correct"][t])] for t in s}
            var += self._sample_var(s, paired)
            var += _var(sa["norms"]) / len(sa["norms"]) + _var(sb["norms"]) / len(sb["norms"])
        S = len(diffs)
        delta = _mean(diffs)
        se = math.sqrt(var) / S if S else math.nan
        verdict = "tie" if abs(delta) <= TIE_SIGMAS * se else ("win" if delta > 0 else "loss")
        return {"a": a, "b": b, "k": k, "delta": delta, "se": se, "verdict": verdict}

    def lego_vs_best_baseline(self) -> list[dict[str, Any]]:
        """For every group and k: ``lego`` (defaults) against the best equal-rank baseline (best on
        the reported split, which favours the baselines) and against the val-picked svd."""
        out = []
        for group, _ in self.groups:
            for k in self.plan.ks:
                lego = self.row(group, "lego", k)
                if lego is None:
                    continue
                baselines = [r for r in self.rows(group) if r.k == k and r.role == "baseline"]
                if not baselines:
                    continue
                best = max(baselines, key=lambda r: r.normalised)
                cmp = self.compare(group, "lego", best.key, k)
                out.append({
                    "group": group, "k": k, "lego": lego.normalised, "lego_se": lego.se,
                    "best_baseline": best.key, "best_label": f"{best.label} w={best.weights}",
                    "baseline": best.normalised, "baseline_se": best.se,
                    **{x: cmp[x] for x in ("delta", "se", "verdict")},
                })
        return out

    # -- output
    def to_dict(self) -> dict[str, Any]:
        """Everything in JSON-ready form (per-example correctness left out: it is large)."""
        return {
            "plan": self.plan.to_dict(),
            "tasks": self.tasks,
            "groups": [{"name": g, "subsets": [list(s) for s in subsets]} for g, subsets in self.groups],
            "references": {
                t: {"n": r.n, "zero_shot": r.zero_shot.accuracy, "own": r.own.accuracy,
                    "zero_shot_macro_f1": r.zero_shot.macro_f1, "own_macro_f1": r.own.macro_f1}
                for t, r in self.references.items()
            },
            "selection": self.selection,
            "rows": {g: [r.to_dict() for r in self.rows(g)] for g, _ in self.groups},
            "reference_rows": {g: self.reference_rows(g) for g, _ in self.groups},
            "lego_vs_best_baseline": self.lego_vs_best_baseline(),
            "cells": [
                {"group": c.group, "subset": list(c.subset), "spec": c.spec, "k": c.k, "seed": c.seed, "rank": c.rank,
                 "accuracy": {t: s.accuracy for t, s in c.scores.items()},
                 "macro_f1": {t: s.macro_f1 for t, s in c.scores.items()},
                 "merge_seconds": round(c.merge_seconds, 3), "eval_seconds": round(c.eval_seconds, 3),
                 "mixing_share": c.mixing_share}
                for c in self.cells
            ],
            "seconds": round(self.seconds, 1),
            "threads": self.threads,
        }

    def to_markdown(self, *, title: str = "Merge quality") -> str:
        """The table as Markdown: setup, the LEGO-vs-baseline verdicts, then one table per group."""
        return render_markdown(self.to_dict(), title=title)

    def plot(self, path: str | Path) -> Path:
        """Mean normalised accuracy against k, one panel per group (PNG, matplotlib Agg)."""
        return plot_report(self.to_dict(), path)

    def write(
        self, folder: str | Path, stem: str = "merge_quality", *, title: str = "Merge quality"
    ) -> dict[str, Path]:
        """Write ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` into ``folder`` (atomically)."""
        return write_report(self.to_dict(), folder, stem, title=title)


# ---------------------------------------------------------------------------- rendering (from the dict)
def _pct(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render_markdown(data: Mapping[str, Any], *, title: str = "Merge quality") -> str:
    """Markdown from ``QualityReport.to_dict()`` (so a saved JSON can be re-rendered)."""
    plan = data["plan"]
    tasks = data["tasks"]
    lines = [f"# {title}", ""]
    cap = plan["max_examples"]
    lines += [
        f"Split: **{plan['split']}**"
        + (f" (at most {cap} examples per task, stratified by label, fixed)" if cap else " (all examples)")
        + f"; ranks k = {', '.join(map(str, plan['ks']))}; seeds {', '.join(map(str, plan['seeds']))} "
        f"for the all-task merge; {data['seconds'] / 60:.1f} min with {data['threads']} torch thread(s).",
        "",
        "Normalised accuracy = merged / the task's own adapter; retained gain = (merged - zero-shot) / "
        "(own - zero-shot); both averaged over a merge's tasks, then over the group's subsets (and seeds). "
        f"`±` is one standard error (seed spread + test-sample noise); differences within {TIE_SIGMAS:g} SE are ties.",
        "",
        "Subsets: " + "; ".join(
            f"{g['name']}: " + ", ".join("{" + ", ".join(s) + "}" for s in g["subsets"]) for g in data["groups"]
            if g["name"] != "all tasks"
        ) + ("; " if len(data["groups"]) > 1 else "") + f"all tasks: {len(tasks)} adapters.",
        "",
    ]
    verdicts = data["lego_vs_best_baseline"]
    if verdicts:
        lines += ["## LoRA-LEGO against the best baseline at equal rank", "",
                  "| group | k | lego | best baseline (equal k) | its score | lego - best | SE | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for v in verdicts:
            lines.append(
                f"| {v['group']} | {v['k']} | {_num(v['lego'])} | {v['best_label']} | {_num(v['baseline'])} | "
                f"{v['delta']:+.3f} | {_num(v['se'])} | {v['verdict']} |"
            )
        lines += ["", "The best baseline is picked on the reported split itself, which favours the baselines.", ""]
    selection = data.get("selection")
    if selection:
        lines += [f"## Weight conventions picked on the validation split (all-task merge, k = {selection['k']})", "",
                  "| method | " + " | ".join(f"w={CONVENTIONS[c]}" for c in CONVENTIONS) + " | picked |",
                  "|---|" + "---|" * (len(CONVENTIONS) + 1)]
        for method, scores in selection["scores"].items():
            lines.append(f"| {method} | " + " | ".join(_num(scores[c]) for c in CONVENTIONS)
                         + f" | {CONVENTIONS[selection['picked'][method]]} |")
        lines.append("")
    for group in data["groups"]:
        g = group["name"]
        group_tasks = [t for t in tasks if any(t in s for s in group["subsets"])]
        lines += [f"## {g}", "",
                  "| method | weights | k | rank | norm. acc. | ± | retained gain | ± | "
                  + " | ".join(group_tasks) + " |",
                  "|---|---|---|---|---|---|---|---|" + "---|" * len(group_tasks)]
        for name, ref in data["reference_rows"][g].items():
            lines.append(f"| **{name}** | | | | {_num(ref['normalised'])} | | {_num(ref['retained_gain'], 2)} | | "
                         + " | ".join(_pct(ref["accuracy"].get(t)) for t in group_tasks) + " |")
        for r in data["rows"][g]:
            seeds = "" if len(r["seeds"]) > 1 or g != "all tasks" or len(plan["seeds"]) == 1 else " †"
            lines.append(
                f"| {r['label']}{seeds} | {r['weights']} | {r['k'] if r['k'] is not None else 'exact'} | {r['rank']} | "
                f"{_num(r['normalised'])} | {_num(r['se'])} | "
                f"{_num(r['retained_gain'], 2)} | {_num(r['gain_se'], 2)} | "
                + " | ".join(_pct(r["accuracy"].get(t)) for t in group_tasks) + " |"
            )
        lines.append("")
    if len(plan["seeds"]) > 1:
        lines += ["† deterministic: the seed cannot change this merge, so it ran once "
                  "(its ± is test-sample noise only).", ""]
    return "\n".join(lines)


def plot_report(data: Mapping[str, Any], path: str | Path) -> Path:
    """Mean normalised accuracy vs k per group (ablations left out: they are in the table), with the
    exact linear merges and zero-shot as flat reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g["name"] for g in data["groups"]]
    ablations = {s["key"] for s in data["plan"]["specs"] if s["ablation"]}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.4 * len(groups), 5.0), squeeze=False, sharey=True)
    ks = data["plan"]["ks"]
    floor = min(data["reference_rows"][g]["zero-shot"]["normalised"] for g in groups) - 0.03
    colours = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]  # red is lego's
    linear_styles = {"linear/avg": ":", "linear/sqrt": "-.", "linear/sum": (0, (5, 2))}
    for ax, g in zip(axes[0], groups):
        rows = [r for r in data["rows"][g] if r["key"] not in ablations]
        keys: list[str] = []
        for r in rows:
            if r["k"] is not None and r["key"] not in keys:
                keys.append(r["key"])
        for i, key in enumerate(keys):
            pts = sorted((r["k"], r["normalised"], r["se"] or 0.0, r["label"], r["weights"]) for r in rows
                         if r["key"] == key)
            lego = key.startswith("lego")
            label = pts[0][3] if lego else f"{pts[0][3]} w={pts[0][4]}"
            ax.errorbar([p[0] for p in pts], [max(p[1], floor) for p in pts], yerr=[p[2] for p in pts],
                        marker="o" if lego else "s", markersize=6 if key == "lego" else 3.5, capsize=2,
                        linewidth=2.6 if key == "lego" else 1.1, linestyle="-" if lego else "--",
                        color="crimson" if key == "lego" else colours[i % len(colours)], label=label)
        for r in rows:
            if r["k"] is None:
                ax.axhline(r["normalised"], color="grey", linewidth=1.0, linestyle=linear_styles.get(r["key"], ":"),
                           label=f"{r['label']}, exact (rank n·r)")
        zero = data["reference_rows"][g]["zero-shot"]["normalised"]
        ax.axhline(zero, color="black", linewidth=1.2, label="zero-shot (base model)")
        ax.set_ylim(floor, 1.01)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_title(g)
        ax.set_xlabel("k (merged rank)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean normalised accuracy (merged / own adapter)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    ncol = 3
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7.5, frameon=False)
    fig.tight_layout(rect=(0, 0.03 + 0.03 * math.ceil(len(labels) / ncol), 1, 1))
    path = Path(path)
    from adapterhub.files import atomic_write

    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


NOTES_MARKER = "<!-- notes: kept when the table is regenerated -->"
"""Text after this line in an existing ``<stem>.md`` (hand-written reading of the numbers) is kept."""


def write_report(data: Mapping[str, Any], folder: str | Path, stem: str, *, title: str) -> dict[str, Path]:
    """``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` in ``folder``, each written atomically.

    Whatever follows ``NOTES_MARKER`` in an existing ``<stem>.md`` is carried over below the new table.
    """
    from adapterhub.files import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": folder / f"{stem}.md", "json": folder / f"{stem}.json", "png": folder / f"{stem}.png"}
    notes = ""
    if paths["markdown"].is_file():
        old = paths["markdown"].read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = "\n" + old[old.index(NOTES_MARKER):]
    with atomic_write(paths["markdown"], "w") as f:
        f.write(render_markdown(data, title=title) + notes)
    with atomic_write(paths["json"], "w") as f:
        f.write(json.dumps(_finite(data), indent=1) + "\n")
    plot_report(data, paths["png"])
    return paths


def _finite(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by ``None`` (JSON has no NaN), tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
