"""Train task adapters and score catalog adapters on the shipped tasks (the evaluation bed).

Models, tasks and engines are imported inside each function, so catalog commands never load
torch or transformers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.app import mos_training
from adapterhub.app.core import HubCore
from adapterhub.app.ingest import add_adapter, load
from adapterhub.errors import AdapterExistsError, InvalidParameterError
from adapterhub.names import validate_name
from adapterhub.route.base import EXAMPLES_FILE, draw_examples, draw_labeled_examples, render_examples
from adapterhub.store import AdapterRecord, LineageRecord, MetricRecord
from adapterhub.tasks import SPLITS, Task, list_tasks, load_task
from adapterhub.threads import torch_threads

if TYPE_CHECKING:
    from adapterhub.eval.bed import BedModel

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
    epochs: int | None = None,
    lr: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
    protocol: str = "similarity",
    base_model: str | None = None,
    base: str | None = None,
    max_steps: int | None = None,
    limit: int | None = None,
    tags: Sequence[str] = (),
    description: str | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    method: str = "lora",
    budget_rank: int | None = None,
    shards_per_vector: int | None = None,
    private_rank: int | None = None,
    transfer_kit: bool = False,
) -> dict[str, Any]:
    """Train one LoRA (or MoS adapter) for a shipped task on a registered base and store it with its metrics.

    The adapter is scored on the task's held-out test split (and the zero-shot baseline beside
    it); the catalog entry records the task, the label descriptions (in its description and in
    the ``accuracy`` metric's ``extra``) and the metrics (validation and test), all in one write.

    Args:
        task: a shipped task name (``adapterhub.tasks.list_tasks()``).
        name: catalog name of the new adapter.
        rank, alpha, epochs, lr, batch_size, seed, max_steps: training hyperparameters (``None``:
            the base's defaults, ``TRAIN_DEFAULTS``).
        protocol: ``"similarity"`` (no head, the adapter carries the task) or ``"head"``; the
            causal LM has one protocol, ``generative`` (instruction prompts).
        base_model: a local ``transformers`` encoder checkpoint folder (MiniLM bed only).
        base: ``"minilm"`` (default) or ``"smollm2"`` (``adapterhub.models.bases``).
        limit: score the causal LM on a fixed seeded subset of this many test examples.
        threads: torch threads while training (``None``: leave torch's setting).
        progress: called with a line once the inputs are valid and training starts.
        method: ``"lora"``, or ``"mos"`` (``app.mos_training``: Mixture of Shards; shards picked by
            a fixed random index, not a learned router). A MoS entry is its exported plain rank-``rank``
            LoRA; its pool form is kept as an artifact (``mos_training.pool_form``/``mos_form``).
        budget_rank, shards_per_vector, private_rank: MoS only (``None``: 2, 2, 1); refused with ``"lora"``.
        transfer_kit: also build the adapter's Trans-LoRA kit (seeds + discriminator,
            ``app/transfer_kit``) from the train split while it is at hand (encoder bases; loads the
            SmolLM2 generator, ~30 s more).

    Returns:
        ``{"adapter": record, "task", "protocol", "metrics": {...}, "params": {...}}``; with
        ``"mos"`` also ``"method": "mos"`` and ``"mos"`` (``mos_training.mos_form``).

    Raises:
        InvalidNameError, AdapterExistsError, TaskNotFoundError, InvalidParameterError,
        BaseModelNotFoundError.
    """
    from adapterhub.models.bases import get_base

    mos = mos_training.mos_config(method, rank=rank, alpha=alpha, seed=seed, budget_rank=budget_rank,
                                  shards_per_vector=shards_per_vector, private_rank=private_rank)
    spec_base = get_base(base)
    causal = spec_base.kind == "causal_lm"
    if causal and (base_model is not None or protocol not in ("similarity", "generative")):
        raise InvalidParameterError(
            f"--base {spec_base.name} trains its packaged model with instruction prompts: drop --base-model and --protocol"
        )
    if mos is not None and protocol == "head":
        raise InvalidParameterError("--method mos trains in the similarity protocol (no head): drop --protocol head")
    prefix = "" if causal else _check_protocol(protocol)
    protocol = "generative" if causal else protocol
    validate_name(name)
    if core.catalog.exists(name):
        raise AdapterExistsError(name)
    spec = load_task(task)
    if spec.is_generation and not causal:
        raise InvalidParameterError(f"'{spec.name}' is a generation task: train it on a causal LM (--base smollm2)")
    defaults = TRAIN_DEFAULTS[spec_base.kind]
    epochs, batch_size = epochs or defaults["epochs"], batch_size or defaults["batch_size"]
    max_steps = max_steps if max_steps is not None else defaults["max_steps"]
    if progress is not None and mos is None:  # MoS reports once the model's shapes fit its shards
        progress(f"training a rank-{rank} adapter for {spec.name} on {spec_base.name} ({epochs} epochs"
                 + (f", at most {max_steps} steps" if max_steps else "") + ")…")
    hyper = {"rank": rank, "alpha": alpha, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
             "max_steps": max_steps}
    with torch_threads(threads):
        if mos is not None:
            schedule = {k: hyper[k] for k in ("epochs", "lr", "batch_size", "max_steps")}
            result, test, zero = mos_training.train_and_score(
                spec, mos, base=spec_base.name, causal=causal, base_model=base_model, schedule=schedule, limit=limit,
                progress=progress)
        elif causal:
            result, test, zero = _train_causal(spec, spec_base.name, hyper, limit)
        else:
            result, test, zero = _train_encoder(spec, base_model, protocol, hyper)
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
    if mos is not None:  # says what it is, and that its "router" is a fixed random index
        description = description or f"{mos_training.describe(result.pools)} {_describe(spec, labels)}"
    with tempfile.TemporaryDirectory(prefix=".train-", dir=core.settings.home) as tmp:
        examples = Path(tmp) / EXAMPLES_FILE  # 32 of the train texts: the routers' view of this adapter
        rows = draw_labeled_examples(spec.name)
        examples.write_bytes(render_examples([text for text, _ in rows], [label for _, label in rows]))

        def store() -> AdapterRecord:
            return add_adapter(core, result.adapter, name, task=spec.name, tags=list(tags) or ["trained"],
                               description=description or _describe(spec, labels), metrics=records,
                               operation="train", source="mos" if mos is not None else None, examples=examples)

        if mos is None:
            record = store()
            if transfer_kit and not causal:
                _store_transfer_kit(core, record, spec, progress)
        else:  # the pool form's blob first, the entry, then the artifact row that keeps the blob
            with mos_training.stored_with_pools(core, result.pools) as attach:
                record = store()
                attach(record)
    metrics = {
        "test": test_metrics,
        "validation": val,
        "train": {k: v for k, v in result.metrics.items() if not k.startswith("validation_")},
    }
    out = {"adapter": record.to_dict(), "task": spec.name, "protocol": protocol, "metrics": metrics,
           "params": result.params}
    return out if mos is None else {**out, "method": "mos", "mos": mos_training.mos_form(core, record)}


def _store_transfer_kit(core: HubCore, record: AdapterRecord, spec: Task,
                        progress: Callable[[str], None] | None) -> None:
    """Seeds (the adapter's first 5 example inputs) + a discriminator on 128 real train inputs."""
    from adapterhub.app.transfer_kit import build_kit, store_kit

    if progress is not None:
        progress("preparing the transfer kit (seeds + discriminator) for a later `adapterhub transfer`…")
    kit = build_kit(spec, draw_examples(spec.name, n=128), base_model=record.base_model,
                    seeds=draw_examples(spec.name)[:5], max_real=128)
    store_kit(core, record, kit)


def _describe(spec: Task, labels: dict[str, str]) -> str:
    if not labels:  # a generation task
        return f"{spec.description} Instruction: {spec.instruction}"
    return f"{spec.description} Labels: " + "; ".join(f"{k}: {v}" for k, v in labels.items())


TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "encoder": {"epochs": 3, "batch_size": 32, "max_steps": None},
    # the SmolLM2 library's recipe (scripts/train_smollm2_library.py): ~3 minutes on two cores
    "causal_lm": {"epochs": 2, "batch_size": 8, "max_steps": 100},
}
"""Per kind of base: what ``train`` uses where the caller gave no value."""


def _train_encoder(spec: Task, base_model: str | None, protocol: str, hyper: dict[str, Any]) -> tuple[Any, Any, Any]:
    from adapterhub.eval.evaluate import evaluate, split_scorer
    from adapterhub.models.base import load_base_model
    from adapterhub.models.train import train_adapter

    base = load_base_model(base_model)  # fresh: training changes the model (and restores it)
    result = train_adapter(base, spec, protocol=protocol, validate=split_scorer(spec, protocol=protocol),  # type: ignore[arg-type]
                           **hyper)
    test = evaluate(result.adapter, spec, protocol=protocol, split="test", model=base)  # type: ignore[arg-type]
    zero = evaluate(None, spec, protocol=protocol, split="test", model=base)  # type: ignore[arg-type]
    return result, test, zero


def _train_causal(spec: Task, base: str, hyper: dict[str, Any], limit: int | None) -> tuple[Any, Any, Any]:
    """Train on the shared causal LM (training restores it); validation on 100 examples, test on ``limit``."""
    from adapterhub.eval.bed import load_bed_model
    from adapterhub.eval.generative import evaluate_lm, lm_split_scorer
    from adapterhub.models.train_causal import train_causal_adapter

    lm = load_bed_model(base)
    result = train_causal_adapter(lm, spec, validate=lm_split_scorer(spec, limit=100), **hyper)  # type: ignore[arg-type]
    test = evaluate_lm(result.adapter, spec, lm, split="test", limit=limit)  # type: ignore[arg-type]
    zero = evaluate_lm(None, spec, lm, split="test", limit=limit)  # type: ignore[arg-type]
    return result, test, zero


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
    limit: int | None = None,
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
        limit: on a causal-LM base, score a fixed seeded subset of this many examples per task
            (the base is scored with its instruction prompts, protocol ``generative``).

    Returns:
        ``{"name", "merged", "protocol", "split", "base_model", "tasks": [per-task dict],
        "mean": {...}}``.

    Raises:
        AdapterNotFoundError, TaskNotFoundError, InvalidParameterError,
        IncompatibleAdaptersError, BaseModelNotFoundError.
    """
    from adapterhub.eval.bed import load_bed_model, score_on_task
    from adapterhub.eval.evaluate import relative_scores
    from adapterhub.eval.heads import head_from_tensors
    from adapterhub.models.base import DEFAULT_BASE_MODEL, cached_base_model
    from adapterhub.models.bases import find_base

    if split not in SPLITS or split == "train":
        raise InvalidParameterError(f"evaluate on 'test' or 'validation', not {split!r}")
    entry = core.catalog.get(name)
    registered = find_base(entry.base_model)
    causal = registered is not None and registered.kind == "causal_lm"
    prefix = "" if causal else _check_protocol(protocol)
    protocol = "generative" if causal else protocol
    parents = [p for p in core.catalog.lineage(name) if p.operation.startswith("merge:")]
    plan = _plan(core, name, task, parents)
    specs = {task_name: load_task(task_name) for task_name, _ in plan}  # unknown tasks fail before any model
    adapter = load(core, name)
    model_key = None if entry.base_model in (None, DEFAULT_BASE_MODEL) else entry.base_model
    rows: list[dict[str, Any]] = []
    with torch_threads(threads):
        model = load_bed_model(registered.name) if causal else cached_base_model(model_key)
        for task_name, parent in plan:
            spec = specs[task_name]
            head = None
            if protocol == "head" and parent and head_from_tensors(adapter.extra_tensors(), spec.name) is None:
                head = head_from_tensors(load(core, parent).extra_tensors(), spec.name)
            result = score_on_task(adapter, spec, model, split=split, protocol=protocol, head=head, limit=limit)
            zero = _zero_shot(core, model, spec, protocol, split, limit)
            row: dict[str, Any] = {
                "task": spec.name, "parent": parent, "n": result.n, "accuracy": result.accuracy,
                "accuracy_stderr": result.accuracy_stderr, "macro_f1": result.macro_f1, "zero_shot_accuracy": zero,
            }
            if parent is not None:
                own = _own_accuracy(core, parent, spec, protocol, split, model, record=record, n=result.n, limit=limit)
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


def _zero_shot(core: HubCore, model: BedModel, spec: Task, protocol: str, split: str, limit: int | None) -> float:
    """The base model's accuracy on a task split (cached per hub: it never changes)."""
    from adapterhub.eval.bed import score_on_task

    key = (model.base_model_id, spec.name, protocol, split, limit)
    if key not in core.zero_shot_cache:
        result = score_on_task(None, spec, model, split=split, protocol=protocol, limit=limit)
        core.zero_shot_cache[key] = float(result.accuracy)
    return core.zero_shot_cache[key]


def _own_accuracy(core: HubCore, parent: str, spec: Task, protocol: str, split: str, model: BedModel, *,
                  record: bool, n: int, limit: int | None) -> float:
    """A parent adapter's accuracy on its task: its newest matching metric on as many examples
    (``n``: a subset is not compared with a whole split), else measured now."""
    from adapterhub.eval.bed import score_on_task

    metric = "accuracy" if protocol in ("similarity", "generative") else f"{protocol}_accuracy"
    for m in reversed(core.catalog.metrics(parent)):
        if m.task == spec.name and m.split == split and m.metric == metric and (m.extra or {}).get("n", n) == n:
            return float(m.value)
    result = score_on_task(load(core, parent), spec, model, split=split, protocol=protocol, limit=limit)
    if record:
        core.catalog.add_metric(parent, task=spec.name, split=split, metric=metric, value=result.accuracy,
                                extra={"protocol": protocol, "n": result.n, "source": "adapterhub eval"})
    return float(result.accuracy)
