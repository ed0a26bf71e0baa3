"""What data-aware merging reads from the catalog: the parents' stored examples, on their base.

``regmean`` needs each parent's input Gram matrices (one forward pass of the parent over its
stored example texts, on its base model); ``merge --method auto`` needs the examples' labels too,
to score candidate merges. Both come from the examples file kept with each adapter revision
(``app/examples``), so a merge needs nothing the catalog does not already hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from adapterhub.errors import InvalidParameterError
from adapterhub.route.base import parse_example_labels, parse_examples
from adapterhub.store import AdapterRecord
from adapterhub.tasks import TaskNotFoundError, load_task

if TYPE_CHECKING:
    from adapterhub.app.core import HubCore
    from adapterhub.eval.merge_select import AutoChoice
    from adapterhub.lora import LoraAdapter

ProgressFn = Callable[[str], None]


def _examples_bytes(core: HubCore, name: str) -> bytes | None:
    from adapterhub.app.examples import stored_examples

    found = stored_examples(core, name)
    if found is None:
        return None
    with core.blobs.open(found[0]) as f:
        return f.read(found[1] + 1)


def _bed_model(records: Sequence[AdapterRecord]) -> Any:
    """The loaded base model the parents share (a registered base), or None."""
    from adapterhub.eval.bed import load_bed_model
    from adapterhub.models.bases import find_base

    bases = {r.base_model for r in records}
    if len(bases) != 1 or find_base(next(iter(bases))) is None:
        return None
    return load_bed_model(next(iter(bases)))


def parent_grams(
    core: HubCore, records: Sequence[AdapterRecord], adapters: Sequence[LoraAdapter], model: Any = None
) -> list[dict[str, Any]]:
    """Each parent's input Gram matrices on its stored examples (``regmean``).

    Raises:
        InvalidParameterError: a parent has no stored examples, or their base is not one adapterhub
            can load (the Grams need a forward pass).
    """
    from adapterhub.eval.merge_select import bed_grams

    model = model if model is not None else _bed_model(records)
    if model is None:
        raise InvalidParameterError(
            "regmean runs each adapter on its examples, which needs their base model; "
            f"{', '.join(sorted({r.base_model or '?' for r in records}))} is not a base adapterhub can load"
        )
    grams = []
    for record, adapter in zip(records, adapters):
        data = _examples_bytes(core, record.name)
        if data is None:
            raise InvalidParameterError(
                f"regmean needs example inputs for every adapter; '{record.name}' has none "
                "(train records them; `adapterhub add --examples FILE` adds them)"
            )
        grams.append(bed_grams(model, adapter, parse_examples(data)))
    return grams


def choose_auto(
    core: HubCore,
    records: Sequence[AdapterRecord],
    adapters: Sequence[LoraAdapter],
    *,
    k: int,
    seed: int,
    progress: ProgressFn | None = None,
) -> tuple[AutoChoice, list[dict[str, Any]] | None]:
    """``auto``'s choice for these parents, and the Grams it scored ``regmean`` with (used for a
    ``regmean`` pick, so the merge is the candidate that was scored).

    With labelled examples for every parent (labels of its task, a task adapterhub knows) and a
    loadable base, candidates are scored on the examples; otherwise the data-free rule decides,
    and the reason says what was missing.
    """
    from adapterhub.eval.merge_select import (
        bed_grams,
        choose_by_examples,
        data_free_choice,
        examples_task,
        split_examples,
    )

    missing = _why_not_examples(core, records)
    model = _bed_model(records) if missing is None else None
    if missing is None and model is None:
        missing = "their base model is not one adapterhub can load"
    if missing is not None:
        choice = data_free_choice(len(records))
        return _with_reason(choice, f"{missing}; " + choice.reason), None
    tasks, grams = [], []
    for record, adapter in zip(records, adapters):
        data = _examples_bytes(core, record.name)
        gram_texts, texts, labels = split_examples(parse_examples(data), parse_example_labels(data))  # type: ignore[arg-type]
        tasks.append(examples_task(load_task(record.task), texts, labels))
        grams.append(bed_grams(model, adapter, gram_texts))
    choice = choose_by_examples(adapters, tasks, model, k=k, grams=grams, seed=seed, progress=progress)
    return choice, grams


def _why_not_examples(core: HubCore, records: Sequence[AdapterRecord]) -> str | None:
    """Why the parents' examples cannot score candidates (None: they can)."""
    from adapterhub.eval.merge_select import examples_task

    for record in records:
        data = _examples_bytes(core, record.name)
        if data is None:
            return f"'{record.name}' has no stored examples"
        if not record.task:
            return f"'{record.name}' records no task"
        try:
            task = load_task(record.task)
        except TaskNotFoundError:
            return f"'{record.name}' has task '{record.task}', which adapterhub has no label descriptions for"
        if len(parse_examples(data)) < 2:
            return f"'{record.name}' has a single stored example (auto needs two: one to fit, one to score)"
        if examples_task(task, parse_examples(data), parse_example_labels(data)) is None:
            return f"the examples of '{record.name}' are not all labelled with its task's labels"
    return None


def _with_reason(choice: AutoChoice, reason: str) -> AutoChoice:
    import dataclasses

    return dataclasses.replace(choice, reason=reason)
