"""``merge_quality``: the merge-quality table over the shipped task library, as data and files.

The engine is ``adapterhub.eval.quality``; this is the workflow around it that ``adapterhub
quality`` and ``bench/merge_quality.py`` share: find the library, build the plan from the options,
run under a thread count, write Markdown, JSON and a PNG. It reads no catalog, so it is a plain
function rather than an ``AdapterHub`` method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from adapterhub.errors import InvalidParameterError
from adapterhub.tasks import load_task
from adapterhub.threads import torch_threads

ProgressFn = Callable[[str], None]

REPORTED_SPLITS = ("test", "validation")


def title_for(split: str) -> str:
    """The report's heading: the test table, or a tuning study on the validation split."""
    return "Merge quality" if split == "test" else f"Merge quality on the {split} split (tuning study)"


def merge_quality(
    *,
    quick: bool = False,
    out: str | Path | None = None,
    library: str | Path | None = None,
    seeds: Sequence[int] | None = None,
    ks: Sequence[int] | None = None,
    max_examples: int | None = None,
    split: str = "test",
    threads: int | None = None,
    progress: ProgressFn | None = None,
    stem: str = "merge_quality",
    base: str = "minilm",
    all_only: bool = False,
    select: bool = True,
) -> dict[str, Any]:
    """The merge-quality table over the shipped task library (``adapterhub.eval.quality``).

    Args:
        quick: a few-minute version (all-task merge, k = 8, one seed, core methods).
        out: folder for ``<stem>.md``/``.json``/``.png`` (nothing written if ``None``).
        library: folder of task adapters (default: the repository's ``examples/``).
        seeds, ks, max_examples: override the plan's seeds, ranks and examples per task.
        split: the reported split (``"test"``; ``"validation"`` for tuning studies).
        threads: torch threads while evaluating (merges use one).
        progress: called with one line per finished step.
        stem: file name stem of the written files.
        all_only: only the all-task merge (no pairs or fours): a variant library's short table.
        select: pick conventions and ``auto``'s rule on the validation split first (without it the
            table has no ``auto`` rows and no validation-picked rows).
        base: ``"minilm"`` (the encoder library in ``examples/``) or ``"smollm2"`` (the causal-LM
            library in ``examples/smollm2/``, scored with instruction prompts; ``generative_plan``).

    Returns:
        The report as a dict (``rows``, ``references``, ``lego_vs_best_baseline``, ...) plus
        ``"files"`` (the paths written, empty without ``out``).

    Raises:
        LibraryNotFoundError, InvalidParameterError, TaskNotFoundError.
    """
    if split not in REPORTED_SPLITS:
        raise InvalidParameterError(f"report the 'test' or 'validation' split, not {split!r}")
    # torch-backed engines are imported on use, so importing the facade stays cheap
    from adapterhub.eval.bed import load_bed_model
    from adapterhub.eval.library import find_library, library_dir, load_library
    from adapterhub.eval.quality import default_plan, quick_plan, run_merge_quality
    from adapterhub.eval.quality.plan import generative_plan
    from adapterhub.models.bases import get_base

    causal = get_base(base).kind == "causal_lm"
    if library is None and causal:
        library = library_dir() / get_base(base).name
    adapters = {task: adapter for task, (adapter, _meta) in load_library(library).items()}
    tasks = {task: load_task(task) for task in adapters}
    changes: dict[str, Any] = {"split": split}
    if seeds:
        changes["seeds"] = tuple(seeds)
    if ks:
        changes["ks"] = tuple(ks)
    if max_examples is not None:
        changes["max_examples"] = max_examples
    if all_only:
        changes["subset_sizes"] = ()
    if not select:
        changes["select_on_validation"] = False
    full = generative_plan() if causal else default_plan()
    plan = dataclasses.replace(quick_plan() if quick else full, **changes)
    with torch_threads(threads):
        model = load_bed_model(base)
        grams, example_tasks = library_examples(find_library(library), adapters, tasks, model)
        report = run_merge_quality(
            adapters, tasks, model=model, plan=plan, progress=progress, grams=grams, example_tasks=example_tasks
        )
    data = report.to_dict()
    written = report.write(out, stem, title=title_for(split)) if out is not None else {}
    data["files"] = {kind: str(path) for kind, path in written.items()}
    return data


def library_examples(
    folder: Path, adapters: Mapping[str, Any], tasks: Mapping[str, Any], model: Any
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What the library's stored examples (``<task>/adapterhub_examples.jsonl``) give the table:
    each adapter's input Grams on the first half of its examples (``regmean``) and, when every
    example is labelled, the second half as a task (``auto`` scores candidates on it;
    ``merge_select.split_examples``). ``(None, None)`` parts when some adapter has no examples."""
    from adapterhub.eval.merge_select import bed_grams, examples_task, split_examples
    from adapterhub.route.base import EXAMPLES_FILE, parse_example_labels, parse_examples

    grams: dict[str, Any] = {}
    labelled: dict[str, Any] = {}
    for task, adapter in adapters.items():
        path = folder / task / EXAMPLES_FILE
        if not path.is_file():
            return None, None
        data = path.read_bytes()
        gram_texts, score_texts, score_labels = split_examples(parse_examples(data), parse_example_labels(data))
        grams[task] = bed_grams(model, adapter, gram_texts)
        as_task = examples_task(tasks[task], score_texts, score_labels)
        if as_task is not None:
            labelled[task] = as_task
    return grams, (labelled if len(labelled) == len(adapters) else None)
