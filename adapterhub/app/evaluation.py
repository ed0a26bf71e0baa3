"""Train task adapters and score catalog adapters on the shipped tasks (the evaluation bed).

Models, tasks and engines are imported inside each function, so catalog commands never load
torch or transformers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.app.core import HubCore
from adapterhub.app.ingest import add_adapter, load
from adapterhub.errors import AdapterExistsError, InvalidParameterError
from adapterhub.names import validate_name
from adapterhub.route.base import EXAMPLES_FILE, draw_examples, render_examples
from adapterhub.store import LineageRecord, MetricRecord
from adapterhub.tasks import SPLITS, Task, list_tasks, load_task
from adapterhub.threads import torch_threads

if TYPE_CHECKING:
    from adapterhub.models.base import BaseModel

_EVAL_METRICS = ("accuracy", "macro_f1", "accuracy_stderr", "zero_shot_accuracy", "own_accuracy",
                 "normalised_accuracy", "retained_gain")


def _check_protocol(protocol: str) -> str:
    from adapterhub.eval.evaluate import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise InvalidParameterError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    return "" if protocol == "similarity" else f"{protocol}_"  # metric names: accuracy, head_accuracy, ...


def train(
    core: HubCore,
    task: str,
    *,
    name: str,
    rank: int = 8,
    alpha: float = 16,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    protocol: str = "similarity",
    base_model: str | None = None,
    tags: Sequence[str] = (),
    description: str | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train one LoRA for a shipped task on the default base model and store it with its metrics.

    The adapter is scored on the task's held-out test split (and the zero-shot baseline beside
    it); the catalog entry records the task, the label descriptions (in its description and in
    the ``accuracy`` metric's ``extra``) and the metrics (validation and test), all in one write.

    Args:
        task: a shipped task name (``adapterhub.tasks.list_tasks()``).
        name: catalog name of the new adapter.
        rank, alpha, epochs, lr, batch_size, seed: training hyperparameters.
        protocol: ``"similarity"`` (no head, the adapter carries the task) or ``"head"``.
        base_model: a local ``transformers`` checkpoint folder (default: the packaged MiniLM).
        threads: torch threads while training (``None``: leave torch's setting).
        progress: called with a line once the inputs are valid and training starts.

    Returns:
        ``{"adapter": record, "task", "protocol", "metrics": {...}, "params": {...}}``.

    Raises:
        InvalidNameError, AdapterExistsError, TaskNotFoundError, InvalidParameterError,
        BaseModelNotFoundError.
    """
    from adapterhub.eval.evaluate import evaluate, split_scorer
    from adapterhub.models.base import load_base_model
    from adapterhub.models.train import train_adapter

    prefix = _check_protocol(protocol)
    validate_name(name)
    if core.catalog.exists(name):
        raise AdapterExistsError(name)
    spec = load_task(task)
    if progress is not None:
        progress(f"training a rank-{rank} adapter for {spec.name} ({epochs} epochs)…")
    with torch_threads(threads):
        base = load_base_model(base_model)  # fresh: training changes the model (and restores it)
        result = train_adapter(
            base, spec, rank=rank, alpha=alpha, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
            protocol=protocol, validate=split_scorer(spec, protocol=protocol),  # type: ignore[arg-type]
        )
        test = evaluate(result.adapter, spec, protocol=protocol, split="test", model=base)  # type: ignore[arg-type]
        zero = evaluate(None, spec, protocol=protocol, split="test", model=base)  # type: ignore[arg-type]
    labels = {label.name: label.description for label in spec.labels}
    extra = {"protocol": protocol, "n": test.n, "source": "adapterhub train", "params": result.params}
    test_metrics = {
        "accuracy": test.accuracy,
        "macro_f1": test.macro_f1,
        "accuracy_stderr": test.accuracy_stderr,
        "zero_shot_accuracy": zero.accuracy,
    }
    val = {k.removeprefix("validation_"): v for k, v in result.metrics.items() if k.startswith("validation_")}
    records = [
        MetricRecord(task=spec.name, split="test", metric=prefix + metric, value=value,
                     extra={**extra, "labels": labels} if metric == "accuracy" else extra)
        for metric, value in test_metrics.items()
    ] + [
        MetricRecord(task=spec.name, split="validation", metric=prefix + metric, value=value, extra=extra)
        for metric, value in val.items()
    ]
    with tempfile.TemporaryDirectory(prefix=".train-", dir=core.settings.home) as tmp:
        examples = Path(tmp) / EXAMPLES_FILE  # 32 of the train texts: the routers' view of this adapter
        examples.write_bytes(render_examples(draw_examples(spec.name)))
        record = add_adapter(
            core,
            result.adapter,
            name,
            task=spec.name,
            tags=list(tags) or ["trained"],
            description=description
            or f"{spec.description} Labels: " + "; ".join(f"{k}: {v}" for k, v in labels.items()),
            metrics=records,
            operation="train",
            examples=examples,
        )
    metrics = {
        "test": test_metrics,
        "validation": val,
        "train": {k: v for k, v in result.metrics.items() if not k.startswith("validation_")},
    }
    return {"adapter": record.to_dict(), "task": spec.name, "protocol": protocol, "metrics": metrics,
            "params": result.params}


def _plan(core: HubCore, name: str, task: str | None, parents: list[LineageRecord]) -> list[tuple[str, str | None]]:
    """Which (task, parent) pairs to score: every merge parent's task, or the adapter's own."""
    entry_task = core.catalog.get(name).task
    if not parents:
        chosen = task or entry_task
        if not chosen:
            raise InvalidParameterError(f"'{name}' records no task; pass --task (one of: {', '.join(list_tasks())})")
        return [(chosen, None)]
    removed = [p.parent_name for p in parents if not core.catalog.exists(p.parent_name)]
    if removed and task is None:
        raise InvalidParameterError(
            f"'{name}' was merged from {', '.join(removed)}, which "
            f"{'was' if len(removed) == 1 else 'were'} removed, so not every parent's task is known; "
            "score one task with --task"
        )
    plan: list[tuple[str, str | None]] = []
    for p in parents:
        parent_task = core.catalog.get(p.parent_name).task if core.catalog.exists(p.parent_name) else None
        if parent_task and (task is None or parent_task == task):
            plan.append((parent_task, p.parent_name))
    if task is not None and not plan:
        plan.append((task, None))
    if not plan:
        raise InvalidParameterError(
            f"no parent of '{name}' records a task; pass --task (one of: {', '.join(list_tasks())})"
        )
    return plan


def evaluate_adapter(
    core: HubCore,
    name: str,
    *,
    task: str | None = None,
    protocol: str = "similarity",
    split: str = "test",
    record: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Accuracy and macro-F1 of a catalog adapter on held-out examples of its task(s).

    A merged adapter (lineage rows with operation ``merge:*``) is scored on each parent's
    task, with that task's label descriptions, beside the zero-shot baseline and the parent's
    own accuracy: ``normalised_accuracy = merged / own`` and ``retained_gain = (merged -
    zero-shot) / (own - zero-shot)``. The parent's own accuracy is its recorded metric when it
    has one for this task, split and protocol, else it is measured (and recorded on the parent).
    In the head protocol a merged adapter, which carries no head (heads are per task and are
    not merged), is read through the parent's head. A merge whose parent was removed is refused
    unless ``task`` says which task to score: the removed parent's task is unknown.

    Args:
        name: the adapter.
        task: score on this task only (default: the adapter's task, or every parent's task).
        protocol: ``"similarity"`` (primary) or ``"head"``.
        split: ``"test"`` (default) or ``"validation"``.
        record: store the results as metrics on the adapter (one transaction).
        threads: torch threads while evaluating.

    Returns:
        ``{"name", "merged", "protocol", "split", "base_model", "tasks": [per-task dict],
        "mean": {...}}``.

    Raises:
        AdapterNotFoundError, TaskNotFoundError, InvalidParameterError,
        IncompatibleAdaptersError, BaseModelNotFoundError.
    """
    from adapterhub.eval.evaluate import evaluate, relative_scores
    from adapterhub.eval.heads import head_from_tensors
    from adapterhub.models.base import DEFAULT_BASE_MODEL, cached_base_model

    prefix = _check_protocol(protocol)
    if split not in SPLITS or split == "train":
        raise InvalidParameterError(f"evaluate on 'test' or 'validation', not {split!r}")
    entry = core.catalog.get(name)
    parents = [p for p in core.catalog.lineage(name) if p.operation.startswith("merge:")]
    plan = _plan(core, name, task, parents)
    specs = {task_name: load_task(task_name) for task_name, _ in plan}  # unknown tasks fail before any model
    adapter = load(core, name)
    model_key = None if entry.base_model in (None, DEFAULT_BASE_MODEL) else entry.base_model
    rows: list[dict[str, Any]] = []
    with torch_threads(threads):
        model = cached_base_model(model_key)
        for task_name, parent in plan:
            spec = specs[task_name]
            head = None
            if protocol == "head" and parent and head_from_tensors(adapter.extra_tensors(), spec.name) is None:
                head = head_from_tensors(load(core, parent).extra_tensors(), spec.name)
            result = evaluate(adapter, spec, protocol=protocol, split=split, model=model, head=head)  # type: ignore[arg-type]
            zero = _zero_shot(core, model, spec, protocol, split)
            row: dict[str, Any] = {
                "task": spec.name, "parent": parent, "n": result.n, "accuracy": result.accuracy,
                "accuracy_stderr": result.accuracy_stderr, "macro_f1": result.macro_f1, "zero_shot_accuracy": zero,
            }
            if parent is not None:
                own = _own_accuracy(core, parent, spec, protocol, split, model, record=record)
                row["own_accuracy"] = own
                row.update(relative_scores(result.accuracy, own=own, baseline=zero))
            else:
                row["gain_over_zero_shot"] = result.accuracy - zero
            rows.append(row)
    if record:
        _record_rows(core, name, rows, prefix=prefix, protocol=protocol, split=split)

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
        return sum(values) / len(values) if values else None

    return {
        "name": name, "merged": bool(parents), "protocol": protocol, "split": split,
        "base_model": entry.base_model, "tasks": rows,
        "mean": {k: mean(k) for k in ("accuracy", "macro_f1", "zero_shot_accuracy", "normalised_accuracy",
                                      "retained_gain") if mean(k) is not None},
    }


def _record_rows(core: HubCore, name: str, rows: list[dict[str, Any]], *, prefix: str, protocol: str,
                 split: str) -> None:
    with core.catalog.transaction() as tx:
        for row in rows:
            extra = {"protocol": protocol, "n": row["n"], "source": "adapterhub eval", "parent": row["parent"]}
            for metric in _EVAL_METRICS:
                value = row.get(metric)
                if value is not None and value == value:  # NaN (undefined ratio) is not stored
                    tx.add_metric(name, task=row["task"], split=split, metric=prefix + metric, value=value,
                                  extra=extra)


def _zero_shot(core: HubCore, model: BaseModel, spec: Task, protocol: str, split: str) -> float:
    """The base model's accuracy on a task split (cached per hub: it never changes)."""
    from adapterhub.eval.evaluate import evaluate

    key = (model.base_model_id, spec.name, protocol, split)
    if key not in core.zero_shot_cache:
        result = evaluate(None, spec, protocol=protocol, split=split, model=model)  # type: ignore[arg-type]
        core.zero_shot_cache[key] = float(result.accuracy)
    return core.zero_shot_cache[key]


def _own_accuracy(core: HubCore, parent: str, spec: Task, protocol: str, split: str, model: BaseModel, *,
                  record: bool) -> float:
    """A parent adapter's accuracy on its task: its newest matching metric, else measured now."""
    from adapterhub.eval.evaluate import evaluate

    metric = "accuracy" if protocol == "similarity" else f"{protocol}_accuracy"
    for m in reversed(core.catalog.metrics(parent)):
        if m.task == spec.name and m.split == split and m.metric == metric:
            return float(m.value)
    result = evaluate(load(core, parent), spec, protocol=protocol, split=split, model=model)  # type: ignore[arg-type]
    if record:
        core.catalog.add_metric(parent, task=spec.name, split=split, metric=metric, value=result.accuracy,
                                extra={"protocol": protocol, "n": result.n, "source": "adapterhub eval"})
    return float(result.accuracy)
