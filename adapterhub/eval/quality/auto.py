"""The table's two ``auto`` rows, built from cells the table already ran.

``auto`` (``adapterhub.eval.merge_select``) picks one of its candidate merges (``AUTO_METHODS``,
each at its validation-picked convention). In the table every candidate is already a row, so the
``auto`` rows re-use those cells instead of merging again:

* ``auto/examples``: for each merge (group, subset, k, seed), the candidate cell with the best
  score on the parents' labelled examples (``Cell.example_score``; ties to the earlier candidate),
  its test scores copied and its key kept in ``Cell.chosen``;
* ``auto/rule``: the candidate the data-free rule names (the best on the validation split for the
  all-task merge, used for 4 or more inputs, and for pairs, used below 4).

A seeded candidate has cells for each seed of the all-task merge; a deterministic one has only
the first seed's, which stands for every seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from adapterhub.eval.quality.report import Cell
from adapterhub.merge import REGISTRY


def candidate_key(method: str, convention: str) -> str:
    """The table row that holds ``method`` at ``convention``."""
    if method == "svd":
        return f"svd/{convention}"
    if method == "lego":
        return "lego"
    return method if convention == REGISTRY.get(method).default_convention else f"{method}/{convention}"


def candidate_rows(selection: Mapping[str, Any]) -> dict[str, str]:
    """``"method/convention"`` candidate -> its row key, in candidate order."""
    return {key: candidate_key(*key.split("/")) for key in selection["candidates"]}


def add_auto_cells(cells: Sequence[Cell], selection: Mapping[str, Any], seeds: Sequence[int]) -> list[Cell]:
    """The ``auto/examples`` and ``auto/rule`` cells for every merge the candidates ran."""
    rows = candidate_rows(selection)
    order = list(rows.values())
    by_merge: dict[tuple[str, tuple[str, ...], int | None], dict[tuple[str, int], Cell]] = {}
    for cell in cells:
        if cell.spec in order:
            by_merge.setdefault((cell.group, cell.subset, cell.k), {})[(cell.spec, cell.seed)] = cell
    out: list[Cell] = []
    for (group, subset, k), found in by_merge.items():
        if {key for key, _ in found} != set(order):
            continue  # a candidate did not run here (e.g. regmean without examples)
        run_seeds = sorted({seed for _, seed in found}, key=list(seeds).index)
        for seed in run_seeds:
            pick = {key: found.get((key, seed)) or found[(key, run_seeds[0])] for key in order}
            scored = [key for key in order if pick[key].example_score is not None]
            if scored:
                best = max(scored, key=lambda key: (pick[key].example_score, -order.index(key)))
                out.append(dataclasses.replace(pick[best], spec="auto/examples", seed=seed, chosen=best))
            rule = selection["rule"]["large" if len(subset) >= 4 else "small"]
            out.append(dataclasses.replace(pick[rows[rule]], spec="auto/rule", seed=seed, chosen=rows[rule]))
    return out
