"""``train_mhr``: a new catalog adapter for a task from a few shots over an inventory of adapters.

The engine is ``adapterhub.route.mhr_train`` (MHR-z learns per-module, per-head routing over the
frozen inventory; MHR-μ averages it and fine-tunes). This service picks the shots from the task's
train split (seeded, class by class), trains on the inventory's base model, and stores the result
through the one write path: the dense LoRA, its lineage (one row per inventory adapter, with the
variant, the shots' digest and the learned routing's blob) and the routing table as an artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapterhub.errors import AdapterExistsError, InvalidParameterError
from adapterhub.names import validate_name
from adapterhub.store import LineageRecord, artifacts

if TYPE_CHECKING:
    from adapterhub.app.core import HubCore
    from adapterhub.store import AdapterRecord

__all__ = ["MAX_SHOTS", "train_mhr"]

MAX_SHOTS = 256  # a few shots is the point; this bounds the work of a request
MAX_STEPS = 1000
DEFAULT_STEPS = {"z": 16, "mu": 8}  # chosen on validation in docs/routing_mhr.md (16 shots, one batch a step)


def train_mhr(
    core: HubCore,
    *,
    task: str,
    inventory: Sequence[str],
    name: str,
    shots: int = 16,
    variant: str = "z",
    seed: int = 0,
    steps: int | None = None,
) -> AdapterRecord:
    """Train MHR-z (``variant="z"``) or MHR-μ (``"mu"``) on ``shots`` examples of ``task``.

    Raises:
        InvalidNameError, AdapterExistsError: ``name``.
        AdapterNotFoundError: an inventory name.
        InvalidParameterError: unknown variant, shots or steps out of range, an empty inventory.
        IncompatibleAdaptersError: inventory adapters on different bases or shapes.
        TaskNotFoundError: ``task`` is not a shipped task.
    """
    from adapterhub.models import DEFAULT_BASE_MODEL, cached_base_model
    from adapterhub.route.mhr_train import sample_shots, train_mhr as fit
    from adapterhub.tasks import load_task

    validate_name(name)
    if core.catalog.exists(name):
        raise AdapterExistsError(name)
    if variant not in ("z", "mu"):
        raise InvalidParameterError(f"unknown MHR variant {variant!r}; choose z or mu")
    if isinstance(shots, bool) or not 1 <= shots <= MAX_SHOTS:
        raise InvalidParameterError(f"shots must be between 1 and {MAX_SHOTS}, got {shots}")
    steps = DEFAULT_STEPS[variant] if steps is None else steps
    if not 0 <= steps <= MAX_STEPS:
        raise InvalidParameterError(f"steps must be between 0 and {MAX_STEPS}, got {steps}")
    names = list(dict.fromkeys(inventory))
    if not names:
        raise InvalidParameterError("MHR needs an inventory of at least one adapter (--inventory NAME)")
    records = [core.catalog.get(n) for n in names]
    adapters = [core.load(n) for n in names]
    spec = load_task(task)
    picked = sample_shots(spec, shots, seed)
    train_texts, train_labels = spec.texts("train"), spec.label_ids("train")
    texts, labels = [train_texts[i] for i in picked], [train_labels[i] for i in picked]
    base = records[0].base_model or DEFAULT_BASE_MODEL
    model = cached_base_model(None if base == DEFAULT_BASE_MODEL else base)
    result = fit(model, adapters, texts, labels, spec.label_descriptions, variant=variant, steps=steps, seed=seed,
                 inventory_names=names)  # fmt: skip
    routing_blob = _routing_blob(core, result.routing) if result.routing else None
    params = {"variant": variant, "task": task, "shots": len(picked), "shots_digest": result.meta.get("shots_digest"),
              "steps": steps, "seed": seed, "routing_artifact": routing_blob[0] if routing_blob else None}  # fmt: skip
    lineage = [LineageRecord(parent_name=r.name, operation=f"mhr-{variant}", parent_digest=r.digest, params=params) for r in records]
    from adapterhub.app.access import private_result
    from adapterhub.app.ingest import add_adapter

    with private_result(core, names, name):  # private inventory: a private result, never public
        record = add_adapter(core, result.adapter, name, task=task, lineage=lineage, operation=f"mhr-{variant}",
                             source=f"{len(picked)} shots of {task} over {len(names)} adapters")  # fmt: skip
    if routing_blob is not None:  # derived from the new adapter: pruned with it
        digest, size = routing_blob
        artifacts.record_artifact(core.catalog, artifacts.ArtifactRecord("mhr.routing", record.digest, record.digest, digest, size))
    return record


def _routing_blob(core: HubCore, routing: dict) -> tuple[str, int]:
    """Store the learned routing logits (safetensors, module path -> (heads, adapters)) as a blob."""
    from safetensors.torch import save

    return core.blobs.put_bytes(save({k: v.contiguous() for k, v in routing.items()}))
