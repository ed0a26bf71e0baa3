"""``adapterhub transfer``: move a catalog adapter to another base model without its data (Trans-LoRA).

Reads the source adapter and its transfer kit (``app/transfer_kit``), checks every input before
any model loads (names, bases, seeds), runs the engine (``adapterhub.transfer``), scores the new
adapter on the task's test split beside the target base's zero-shot, and stores it in one write
with its lineage: the source (name and exact digest), the target base, the seeds' and the
synthetic set's digests, the discriminator's acceptance rate and blob, the generator and every
setting. The new adapter keeps the seeds as its example inputs (real texts: routers may use them).

Without a kit, ``--seeds`` still transfers, unfiltered (every sampled candidate is distilled on);
the lineage says so. That is the paper's "no discriminator" ablation, offered because a team may
hold old adapters whose data is gone before any kit was built.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapterhub.app.access import private_result
from adapterhub.app.core import HubCore
from adapterhub.app.ingest import add_adapter, load
from adapterhub.app.transfer_kit import KIT_KIND, MAX_SEEDS, find_kit, load_generator, read_seeds, task_of
from adapterhub.errors import AdapterExistsError, IncompatibleAdaptersError, InvalidParameterError
from adapterhub.names import validate_name
from adapterhub.route.base import EXAMPLES_FILE, render_examples
from adapterhub.store import AdapterRecord, LineageRecord, MetricRecord, artifacts
from adapterhub.threads import torch_threads

Progress = Callable[[str, int, int], None]
MAX_SAMPLES = 5000
CAUSAL_TEST_LIMIT = 200
"""A causal-LM target is scored on a fixed seeded subset of this many test examples (as ``train --limit``)."""


def default_name(source: str, to_base: str, namespace: str | None = None) -> str:
    """``ns/name`` → ``ns/name-<base>`` (in ``namespace`` instead of the source's, when given)."""
    return f"{namespace or source.split('/', 1)[0]}/{source.split('/', 1)[-1]}-{to_base}"


def _seed_list(seeds: str | Path | Sequence[str] | None) -> list[str] | None:
    """Seeds from a file (CLI) or a list (HTTP), whitespace-normalised as the engine hashes them:
    at least 1, at most 32."""
    from adapterhub.transfer import check_seeds

    if seeds is None:
        return None
    if isinstance(seeds, (str, Path)):
        return check_seeds(read_seeds(seeds))
    if len(seeds) > MAX_SEEDS:
        raise InvalidParameterError(f"give at most {MAX_SEEDS} seeds")
    return check_seeds(seeds)


@dataclass
class Plan:
    """A checked transfer: what ``run`` needs, found without loading a model."""

    record: AdapterRecord
    task: Any
    target: Any
    name: str
    seeds: list[str] | None
    kit_digest: str | None


def plan(
    core: HubCore,
    name: str,
    *,
    to_base: str,
    new_name: str | None = None,
    namespace: str | None = None,
    samples: int = 250,
    seeds: str | Path | Sequence[str] | None = None,
    generator: str = "smollm2",
) -> Plan:
    """Every check of a transfer that needs no model, so bad input fails before any work starts.

    Raises:
        as ``run``, except what only the models can find out.
    """
    from adapterhub.models.bases import find_base, get_base

    if not 1 <= samples <= MAX_SAMPLES:
        raise InvalidParameterError(f"--samples must be between 1 and {MAX_SAMPLES}")
    record = core.catalog.get(name)
    target = get_base(to_base)
    if get_base(generator).kind != "causal_lm":
        raise InvalidParameterError(f"generator '{generator}' is not a causal LM; use smollm2")
    source = find_base(record.base_model)
    if source is None:
        raise IncompatibleAdaptersError(
            f"'{name}' was trained on '{record.base_model}', which is not a registered base; the teacher cannot load it")
    if source.name == target.name:
        raise InvalidParameterError(f"'{name}' is already on {target.name}; choose another --to-base")
    task = task_of(record)
    out = new_name or default_name(name, target.name, namespace)
    validate_name(out)
    if core.catalog.exists(out):
        raise AdapterExistsError(out)
    seed_texts = _seed_list(seeds)
    kit = artifacts.find_artifact(core.catalog, KIT_KIND, record.digest)
    if kit is None and seed_texts is None:
        raise InvalidParameterError(
            f"'{name}' has no transfer kit and no seeds were given: run `adapterhub transfer prepare {name} "
            "--data FILE` with its training inputs, or pass --seeds FILE for an unfiltered transfer")
    return Plan(record, task, target, out, seed_texts, kit.digest if kit is not None else None)


def check(core: HubCore, name: str, **kwargs: Any) -> dict[str, Any]:
    """``plan``'s checks for a face that answers before the work starts (the server's 202):
    ``{"name": the new adapter's name, "filtered": whether a kit exists}``."""
    checked = plan(core, name, **kwargs)
    return {"name": checked.name, "filtered": checked.kit_digest is not None}


def run(
    core: HubCore,
    name: str,
    *,
    to_base: str,
    samples: int = 250,
    max_candidates: int | None = None,
    seeds: str | Path | Sequence[str] | None = None,
    generator: str = "smollm2",
    new_name: str | None = None,
    namespace: str | None = None,
    filter_rule: str = "top",
    rank: int = 8,
    epochs: int = 2,
    seed: int = 0,
    threads: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Transfer ``name`` to the base ``to_base`` and store the result as ``new_name``.

    Returns:
        ``{"adapter": record, "source", "to_base", "stats", "metrics", "filtered"}``.

    Raises:
        AdapterNotFoundError, AdapterExistsError, InvalidNameError, InvalidParameterError (unknown
        base, same base, no task, no kit and no seeds, bad seeds file, nothing accepted),
        IncompatibleAdaptersError (source base not registered), BaseModelNotFoundError (a model
        package — e.g. the generator — is not installed).
    """
    from adapterhub.eval.bed import protocol_of, score_on_task
    from adapterhub.models.bases import get_base
    from adapterhub.transfer import TransferConfig, transfer_adapter

    checked = plan(core, name, to_base=to_base, new_name=new_name, namespace=namespace, samples=samples,
                   seeds=seeds, generator=generator)
    record, task, target, out, seed_texts = checked.record, checked.task, checked.target, checked.name, checked.seeds
    kit_found = find_kit(core, record) if checked.kit_digest is not None else None
    kit = kit_found[0] if kit_found is not None else None
    config = TransferConfig(samples=samples, max_candidates=max_candidates, filter=kit is not None,
                            filter_rule=filter_rule, rank=rank, alpha=2 * rank, epochs=epochs, seed=seed)
    with torch_threads(threads):
        lm = load_generator(generator)
        teacher = get_base(record.base_model).load()
        student = target.load()
        disc_base = get_base(kit.discriminator_base).load() if kit is not None else None
        source_adapter = load(core, name)
        result = transfer_adapter(
            source_adapter, task, teacher=teacher, student=student, generator=lm, kit=kit,  # type: ignore[arg-type]
            target_modules=target.target_modules, config=config, discriminator_base=disc_base,  # type: ignore[arg-type]
            seeds=seed_texts, progress=progress or (lambda *_: None))
        limit = CAUSAL_TEST_LIMIT if target.kind == "causal_lm" else None  # LLM scoring is slow: a fixed subset
        test = score_on_task(result.adapter, task, student, limit=limit)  # type: ignore[arg-type]
        zero = score_on_task(None, task, student, limit=limit)  # type: ignore[arg-type]
    stats = {**result.stats, "generator": get_base(generator).model_id}
    lineage_params = {
        "source": name, "source_base": record.base_model, "to_base": target.model_id, **stats,
        "filtered": config.filter, "transfer_kit": checked.kit_digest,
        "settings": result.params,
    }
    extra = {"protocol": protocol_of(student), "n": test.n, "source": "adapterhub transfer"}  # type: ignore[arg-type]
    metrics = [MetricRecord(task=task.name, split="test", metric=k, value=v, extra=extra) for k, v in
               {"accuracy": test.accuracy, "macro_f1": test.macro_f1, "accuracy_stderr": test.accuracy_stderr,
                "zero_shot_accuracy": zero.accuracy}.items()]
    with tempfile.TemporaryDirectory(prefix=".transfer-", dir=core.settings.home) as tmp:
        examples = Path(tmp) / EXAMPLES_FILE
        seed_list = seed_texts if seed_texts is not None else (kit.seeds if kit else [])
        examples.write_bytes(render_examples(seed_list[:32]))
        with private_result(core, [name], out):  # a private source gives a private result, never public
            stored = add_adapter(
                core, result.adapter, out, task=task.name, tags=["transferred"],
                description=f"{name} transferred to {target.name} by Trans-LoRA "
                            f"({stats['accepted']} synthetic inputs, acceptance {stats['acceptance_rate']:.0%}).",
                lineage=[LineageRecord(parent_name=name, operation="transfer:trans-lora", parent_digest=record.digest,
                                       params=lineage_params)],
                metrics=metrics, operation="transfer", source=name, examples=examples)
    return {"adapter": stored.to_dict(), "source": name, "to_base": target.model_id, "stats": stats,
            "filtered": config.filter,
            "metrics": {"test": {"accuracy": test.accuracy, "zero_shot_accuracy": zero.accuracy, "n": test.n}}}
