"""The measured table: cells (one merged adapter scored), rows (cells aggregated) and the report.

``QualityReport`` keeps every cell with its per-example correctness, so rows, standard errors and
paired comparisons (``stats``) are derived on demand and can be re-derived from a saved run;
``to_dict`` is the JSON form every renderer (``markdown``, ``plot``, ``writing``) reads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.eval.quality.markdown import render_markdown
from adapterhub.eval.quality.plan import MergeSpec, QualityPlan
from adapterhub.eval.quality.plot import plot_report
from adapterhub.eval.quality.stats import TIE_SIGMAS, mean, paired_var, reference_rows, relative, var
from adapterhub.eval.quality.writing import write_report
from adapterhub.tasks import Task

if TYPE_CHECKING:
    from adapterhub.eval.evaluate import EvalResult


@dataclass
class Scored:
    """One configuration scored on one task: accuracy and per-example correctness."""

    accuracy: float
    macro_f1: float
    correct: list[bool]

    @classmethod
    def of(cls, result: EvalResult, task: Task, split: str) -> Scored:
        if task.is_generation:  # predictions are already exact-match hits (1/0)
            return cls(result.accuracy, result.macro_f1, [bool(p) for p in result.predictions])
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
    example_score: float | None = None  # auto candidates: score on the parents' labelled examples
    chosen: str | None = None  # auto rows: the candidate row this cell copies


@dataclass
class Reference:
    """The zero-shot baseline and the task's own adapter on the reported split."""

    zero_shot: Scored
    own: Scored
    n: int


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

    def _subsets(self, group: str) -> list[tuple[str, ...]]:
        return [s for g, subsets in self.groups if g == group for s in subsets]

    def _cells(self, group: str, key: str, k: int | None) -> list[Cell]:
        return [c for c in self.cells if c.group == group and c.spec == key and c.k == k]

    def _subset_stats(self, cells: list[Cell], subset: tuple[str, ...]) -> dict[str, Any]:
        """Per subset: normalised and gain per seed, per-example correctness averaged over seeds."""
        mine = [c for c in cells if c.subset == subset]
        norms, gains = [], []
        for c in mine:
            pairs = [relative(c.scores[t].accuracy, self.references[t].own.accuracy,
                              self.references[t].zero_shot.accuracy) for t in subset]
            norms.append(mean([p[0] for p in pairs]))
            gains.append(mean([p[1] for p in pairs]))
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
                total += paired_var(values[t]) / denom**2
        return total / len(subset) ** 2

    def row(self, group: str, key: str, k: int | None) -> Row | None:
        """The aggregated row, or ``None`` if that configuration was not run."""
        cells = self._cells(group, key, k)
        if not cells:
            return None
        spec = self._spec(key)
        used = [s for s in self._subsets(group) if any(c.subset == s for c in cells)]
        stats = [self._subset_stats(cells, s) for s in used]
        S = len(stats)
        seed_var = sum(var(st["norms"]) / len(st["norms"]) for st in stats) / S**2
        gain_seed_var = sum(var(st["gains"]) / len(st["gains"]) for st in stats) / S**2
        sample_var = sum(self._sample_var(s, st["correct"]) for s, st in zip(used, stats)) / S**2
        gain_sample_var = sum(self._sample_var(s, st["correct"], gain=True) for s, st in zip(used, stats)) / S**2
        accuracy = {}
        for t in self.tasks:
            values = [c.scores[t].accuracy for c in cells if t in c.scores]
            if values:
                accuracy[t] = mean(values)
        mixing = [c.mixing_share for c in cells if c.mixing_share is not None]
        return Row(
            group=group, key=key, label=spec.label, weights=spec.weights_label(), role=spec.role, k=k,
            rank=max(c.rank for c in cells), accuracy=accuracy,
            normalised=mean([mean(st["norms"]) for st in stats]), retained_gain=mean([mean(st["gains"]) for st in stats]),
            se=math.sqrt(seed_var + sample_var), se_seed=math.sqrt(seed_var), se_sample=math.sqrt(sample_var),
            gain_se=math.sqrt(gain_seed_var + gain_sample_var), seeds=sorted({c.seed for c in cells}),
            deterministic=len({c.seed for c in cells}) == 1 and len(self.plan.seeds) > 1 and group == "all tasks",
            per_seed_normalised=stats[0]["norms"] if S == 1 else [], mixing_share=mean(mixing) if mixing else None,
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
        tasks = sorted({t for s in self._subsets(group) for t in s})
        return reference_rows(
            tasks,
            {t: self.references[t].zero_shot.accuracy for t in tasks},
            {t: self.references[t].own.accuracy for t in tasks},
        )

    def compare(self, group: str, a: str, b: str, k: int | None, kb: int | None = None) -> dict[str, Any]:
        """Paired difference of mean normalised accuracy, ``a - b``, with its SE and verdict."""
        kb = k if kb is None else kb
        ca, cb = self._cells(group, a, k), self._cells(group, b, kb)
        diffs, variance = [], 0.0
        for s in self._subsets(group):
            if not any(c.subset == s for c in ca) or not any(c.subset == s for c in cb):
                continue
            sa, sb = self._subset_stats(ca, s), self._subset_stats(cb, s)
            diffs.append(mean(sa["norms"]) - mean(sb["norms"]))
            paired = {t: [x - y for x, y in zip(sa["correct"][t], sb["correct"][t])] for t in s}
            variance += self._sample_var(s, paired)
            variance += var(sa["norms"]) / len(sa["norms"]) + var(sb["norms"]) / len(sb["norms"])
        S = len(diffs)
        delta = mean(diffs)
        se = math.sqrt(variance) / S if S else math.nan
        verdict = "tie" if abs(delta) <= TIE_SIGMAS * se else ("win" if delta > 0 else "loss")
        return {"a": a, "b": b, "k": k, "delta": delta, "se": se, "verdict": verdict}

    def lego_vs_best_baseline(self) -> list[dict[str, Any]]:
        """For every group and k: ``lego`` (defaults) against the best equal-rank baseline (best on
        the reported split, which favours the baselines)."""
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
                 "mixing_share": c.mixing_share, "example_score": c.example_score, "chosen": c.chosen}
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
