"""What the merge-quality table runs: its rows (``MergeSpec``) and the plan around them.

Weights: each method runs at its documented default (``1`` for the summing methods and
``ties``/``dare_ties``, ``1/n`` for ``lego``; the merge registry says which) and, where it
matters, at the other conventions of ``adapterhub.merge.WEIGHT_CONVENTIONS``: ``1/n`` (average),
``1/sqrt(n)`` and ``1`` (sum). ``linear`` and ``svd`` are shown at all three; for ``ties``,
``dare_ties`` and ``magnitude`` the convention is picked on the *validation* split (all-task merge,
k = 8, see ``runner.select_conventions``) and shown beside the default. Model selection never reads
the test split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapterhub.merge import REGISTRY, resolve_params
from adapterhub.merge.lego import DEFAULT_OUTPUT_REWEIGHT
from adapterhub.merge.registry import WEIGHT_CONVENTIONS, convention_weights

DEFAULT_KS: tuple[int, ...] = (4, 8, 16)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
SELECTION_METHODS: tuple[str, ...] = ("ties", "dare_ties", "magnitude", "tsv", "iso_c", "iso_cts", "knots", "regmean")
"""Methods whose weight convention is picked on the validation split (no convention is theirs by
design: their disjoint means and pruning sit between an average and a sum; the spectral methods'
papers sum task vectors and then tune one scaling coefficient, which the convention plays here)."""

AUTO_METHODS: tuple[str, ...] = ("svd", "ties", "lego", "tsv", "iso_c", "iso_cts", "knots", "regmean")
"""The methods ``auto`` chooses among, each at its validation-picked convention (``svd`` too is
picked there; ``lego`` scales its own output, so its default)."""

AUTO_SPECS_KEYS = ("auto/examples", "auto/rule")


@dataclass(frozen=True)
class MergeSpec:
    """One row family of the table: a method, a weight convention and fixed parameters.

    Attributes:
        key: stable id, e.g. ``"svd/sqrt"`` (JSON key, plot legend).
        label: what the table prints.
        method: registered merge method.
        weights: ``"default"`` (the method's own default) or a key of ``WEIGHT_CONVENTIONS``.
        params: the method's fixed parameters; ``k`` is added per rank of the plan when ``uses_k``.
        uses_k: run once per ``k`` of the plan (else once, at the rank ``params`` or the method
            itself sets).
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
        """The explicit weights for ``n`` inputs (``None``: the method's default).

        Raises:
            InvalidParameterError: ``weights`` is neither ``"default"`` nor a known convention.
        """
        return None if self.weights == "default" else convention_weights(self.weights, n)

    def weights_label(self) -> str:
        """``1/n``, ``1/√n`` or ``1``, with ``(default)`` when it is the method's own default."""
        if self.method == "auto":
            return "chosen"
        if self.weights == "default":
            return WEIGHT_CONVENTIONS[REGISTRY.get(self.method).default_convention] + " (default)"
        return WEIGHT_CONVENTIONS[self.weights]

    def uses_seed(self, k: int | None, total_units: int) -> bool:
        """Whether the seed can change this merge (the registry knows: random drops, or
        clustering with ``k`` below the inputs' total rank)."""
        return REGISTRY.get(self.method).uses_seed(k, total_units, self.params)

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


def lego_defaults() -> dict[str, Any]:
    """The default ``lego`` parameters (without ``k``): the registry's, with the output reweighting
    that ``adapterhub.merge.lego`` documents as its validated default (``DEFAULT_OUTPUT_REWEIGHT``),
    so the table's ``lego`` row is what ``lego_module`` does by default even where the registry's
    declared default lags behind."""
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


def _linear_label(convention: str) -> str:
    return "linear (" + {"avg": "average", "sum": "sum"}.get(convention, "w=" + WEIGHT_CONVENTIONS[convention]) + ")"


def baseline_specs(tuned: Mapping[str, str] | None = None) -> list[MergeSpec]:
    """Exact linear merges (rank n*r) at the three conventions, svd at the three conventions, and
    ``ties``/``dare_ties``/``magnitude`` at their defaults plus the validation-picked convention."""
    conventions = list(WEIGHT_CONVENTIONS)
    specs = [
        MergeSpec(f"linear/{c}", _linear_label(c), "linear", weights=c, uses_k=False, role="linear")
        for c in conventions
    ]
    specs += [MergeSpec(f"svd/{c}", "svd", "svd", weights=c) for c in conventions]
    for method in ("ties", "dare_ties", "magnitude"):
        specs.append(MergeSpec(method, method, method))
        picked = (tuned or {}).get(method)
        if picked and picked != REGISTRY.get(method).default_convention:  # else the default row shows it
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


def auto_specs() -> list[MergeSpec]:
    """The two ``auto`` rows: the candidate that scored best on the parents' labelled examples, and
    the data-free rule's choice (both picked from rows the table already ran; see ``runner``)."""
    return [
        MergeSpec("auto/examples", "**auto** (labelled examples)", "auto", role="auto"),
        MergeSpec("auto/rule", "**auto** (data-free rule)", "auto", role="auto"),
    ]


def new_method_specs() -> list[MergeSpec]:
    """TSV-M, Iso-C, Iso-CTS, KnOTS and RegMean at their defaults (picked conventions are added by
    the runner after the validation step)."""
    return [MergeSpec(m, m, m) for m in ("tsv", "iso_c", "iso_cts", "knots", "regmean")]


def default_plan(*, max_examples: int | None = None) -> QualityPlan:
    """The full table: pairs x3, fours x2, all tasks x3 seeds; k in {4, 8, 16}; every method."""
    return QualityPlan(
        specs=tuple(baseline_specs() + new_method_specs() + lego_specs() + auto_specs()), max_examples=max_examples
    )


def generative_plan(*, max_examples: int | None = 60) -> QualityPlan:
    """The causal-LM table: the all-task merge only, k in {8, 16}, three seeds where seeded, every method.

    Why smaller than ``default_plan``: a causal LM scores ~17 examples/s on two cores (MiniLM
    ~1,000), so subsets, ablations and the validation pick of weight conventions are left out and
    each task is scored on a fixed stratified sample of ``max_examples`` test examples.
    """
    return QualityPlan(
        ks=(8, 16), subset_sizes=(), specs=tuple(baseline_specs() + lego_specs(ablations=False)),
        max_examples=max_examples, select_on_validation=False,
    )


def quick_plan() -> QualityPlan:
    """A few-minute version: all-task merge only, k = 8, one seed, core methods, 120 examples a task."""
    specs = [s for s in baseline_specs() if s.key in ("linear/avg", "linear/sum", "svd/sqrt", "svd/sum", "ties")]
    return QualityPlan(
        ks=(8,), seeds=(0,), subset_sizes=(), specs=tuple(specs + lego_specs(ablations=False)[:1]),
        max_examples=120, select_on_validation=False,
    )
