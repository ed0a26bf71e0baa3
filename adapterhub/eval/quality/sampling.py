"""Which tasks are merged together, and on which examples they are scored.

Subsets are fixed, not drawn: with the tasks sorted by name, subsets of size ``s`` are consecutive
windows ``tasks[i*s : i*s + s]`` (wrapping around), so with 7 tasks the pairs are (0,1), (2,3),
(4,5) and the groups of four (0..3), (4,5,6,0). Every task appears in at least one subset.

A split can be capped to a fixed, label-stratified sample (``cap_split``) so a quick table reads
the same examples on every run and machine.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Sequence

from adapterhub.eval.quality.plan import QualityPlan
from adapterhub.tasks import Task


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
