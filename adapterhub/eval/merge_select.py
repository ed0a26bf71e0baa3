"""Data the merges can use, and ``auto``: which merge to run for the user's adapters.

* **Input statistics** for RegMean: ``bed_grams`` runs one adapter over its stored example texts
  on its own base (encoder: the text; causal LM: the text as a user turn) and returns each adapted
  module's Gram matrix.
* **Labelled examples as a task**: ``examples_task`` turns an adapter's stored examples (text and
  label name) into a ``Task`` with the parent task's label descriptions, so any merge can be scored
  on them with the bed's protocol.
* **Held out for auto**: ``split_examples`` gives the first half of an adapter's examples to the
  Grams and the second half to scoring, so ``regmean`` is never scored on the examples it was fitted
  to (scored on its own Gram examples, it won every selection: it is a least-squares fit to them).
  ``auto`` returns exactly the candidate it scored (a ``regmean`` pick keeps the half-set Grams).
* **auto**: with labelled examples for every parent, each candidate merge (``AUTO_CANDIDATES``: every
  strong method at the weight convention picked for it on the validation split) is built and
  scored on the parents' examples (mean over parents of merged accuracy / the parent's own accuracy
  on its examples); the best wins. Without them, ``DATA_FREE_RULE`` decides. Both were chosen on
  the validation split of the shipped MiniLM library (``docs/merge_quality.md``); the test split
  was not read. ``AutoChoice.reason`` says which path was taken and why, in one sentence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.eval.bed import BedModel, score_on_task
from adapterhub.lora import LoraAdapter
from adapterhub.merge import merge_adapters
from adapterhub.merge.registry import WEIGHT_CONVENTIONS, convention_weights
from adapterhub.models.base import BaseModel
from adapterhub.models.grams import input_grams
from adapterhub.tasks import Example, Task

AUTO_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("svd", "sqrt"),
    ("ties", "sum"),
    ("lego", "avg"),
    ("tsv", "sum"),
    ("iso_c", "sum"),
    ("iso_cts", "sum"),
    ("knots", "sum"),
    ("regmean", "avg"),
)
"""``(method, weight convention)`` pairs ``auto`` scores; the conventions are the ones picked on the
validation split (all-task merge, k = 8)."""

DATA_FREE_RULE: tuple[tuple[int, str, str], ...] = ((4, "lego", "avg"), (2, "tsv", "sum"))
"""``(min inputs, method, convention)``, first match wins: the best data-free candidate on the
validation split for the all-task merge (n = 7: lego 0.877 mean normalised accuracy, then iso_c
0.869, knots 0.868, tsv 0.867) and for pairs (n = 2, three pairs: tsv 0.989, svd 0.987,
iso_cts 0.987). Every candidate is within 0.02 of the best at n = 7: the rule matters less than
the convention (``docs/merge_quality.md``)."""

ScoreFn = Callable[[str], None]


@dataclass(frozen=True)
class AutoChoice:
    """What ``auto`` picked and why.

    Attributes:
        method, convention: the chosen method and weight convention (``WEIGHT_CONVENTIONS`` key).
        reason: one sentence for the user.
        basis: ``"examples"`` (scored on labelled examples) or ``"rule"`` (data-free).
        scores: candidate ``"method/convention"`` -> its score on the examples (empty for the rule).
    """

    method: str
    convention: str
    reason: str
    basis: str
    scores: dict[str, float] = field(default_factory=dict)

    def weights(self, n: int) -> list[float]:
        return convention_weights(self.convention, n)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def data_free_choice(n: int) -> AutoChoice:
    """The validation-picked rule for ``n`` inputs."""
    for min_inputs, method, convention in DATA_FREE_RULE:
        if n >= min_inputs:
            return AutoChoice(
                method, convention, basis="rule",
                reason=f"no labelled examples for every input, so the data-free rule for {n} adapters: {method} with "
                f"weights {WEIGHT_CONVENTIONS[convention]} (best on the validation split for "
                f"{'4 or more' if min_inputs >= 4 else 'fewer than 4'} adapters, docs/merge_quality.md)",
            )
    raise InvalidParameterError("auto needs at least two adapters")


def split_examples(texts: Sequence[str], labels: Sequence[str | None]) -> tuple[list[str], list[str], list[str | None]]:
    """``(gram_texts, score_texts, score_labels)``: the first half of the examples for Grams, the
    rest (at least one) for scoring."""
    half = max(1, len(texts) // 2) if len(texts) > 1 else 0
    return list(texts[:half]) or list(texts), list(texts[half:]), list(labels[half:])


def examples_task(task: Task, texts: Sequence[str], labels: Sequence[str | None]) -> Task | None:
    """``task`` whose only split (``validation``) is the labelled examples; ``None`` if any example
    lacks a label or names a label the task does not have."""
    index = {label.name: i for i, label in enumerate(task.labels)}
    if not texts or any(label not in index for label in labels):
        return None
    examples = tuple(
        Example(id=f"example-{i}", text=t, label=index[label], split="validation")  # type: ignore[index]
        for i, (t, label) in enumerate(zip(texts, labels))
    )
    return dataclasses.replace(task, examples=examples)


def bed_grams(model: BedModel, adapter: LoraAdapter, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Each adapted module's input Gram matrix with ``adapter`` on ``model``, over ``texts``."""
    if isinstance(model, BaseModel):
        batches = [model.tokenize([t]) for t in texts]
    else:
        batches = [
            {"input_ids": torch.tensor([model.prompt_ids([{"role": "user", "content": t}])])} for t in texts
        ]
    return input_grams(model.model, adapter, batches)


def score_on_examples(
    adapter: LoraAdapter, tasks: Sequence[Task], own: Sequence[float], model: BedModel
) -> float:
    """Mean over parents of the merge's accuracy on a parent's examples / the parent's own."""
    ratios = []
    for task, own_accuracy in zip(tasks, own):
        accuracy = score_on_task(adapter, task, model, split="validation").accuracy
        ratios.append(accuracy / own_accuracy if own_accuracy > 0 else accuracy)
    return sum(ratios) / len(ratios)


def choose_by_examples(
    adapters: Sequence[LoraAdapter],
    tasks: Sequence[Task],
    model: BedModel,
    *,
    k: int,
    grams: Sequence[Mapping[str, torch.Tensor]] | None = None,
    seed: int = 0,
    candidates: Sequence[tuple[str, str]] = AUTO_CANDIDATES,
    progress: ScoreFn | None = None,
) -> AutoChoice:
    """Build every candidate merge at rank ``k`` and keep the best on the parents' labelled examples
    (``tasks``: one ``examples_task`` per input). Ties go to the earlier candidate, so the choice is
    deterministic. ``regmean`` is skipped without ``grams``."""
    own = [score_on_task(a, t, model, split="validation").accuracy for a, t in zip(adapters, tasks)]
    scores: dict[str, float] = {}
    for method, convention in candidates:
        if method == "regmean" and grams is None:
            continue
        result = merge_adapters(
            adapters, method, weights=convention_weights(convention, len(adapters)), params={"k": k}, seed=seed,
            threads=1, grams=grams,
        )
        key = f"{method}/{convention}"
        scores[key] = score_on_examples(result.adapter, tasks, own, model)
        if progress:
            progress(f"auto: {key} scores {scores[key]:.3f} on the examples")
    best = max(scores, key=lambda key: scores[key])  # first maximum: candidate order breaks ties
    method, convention = best.split("/")
    n_examples = sum(len(t.examples) for t in tasks)
    return AutoChoice(
        method, convention, basis="examples", scores=scores,
        reason=f"best of {len(scores)} candidate merges on the inputs' {n_examples} labelled examples: {method} with "
        f"weights {WEIGHT_CONVENTIONS[convention]} kept {scores[best]:.3f} of the inputs' own accuracy",
    )
