"""The source side of Trans-LoRA in the catalog: an adapter's transfer kit (seeds + discriminator).

The kit is built while the adapter's data is at hand (``transfer prepare NAME --data FILE``, or
``train``, which has the task's train split) and kept as one artifact of the adapter's content:
kind ``transfer-kit``, key = the adapter's digest, so it follows the exact weights it was made
for (a new revision has no kit until it is prepared again, and ``gc`` drops a kit whose adapter
is gone). Its blob is a safetensors file — never a pickle — holding the discriminator's LoRA and
head tensors, with its PEFT config, the seeds, the task, the discriminator's base and its
training statistics in the metadata.

Torch, the models and the engine are imported inside the functions that need them, so the facade
stays light.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.app.core import HubCore
from adapterhub.errors import InvalidAdapterError, InvalidParameterError
from adapterhub.store import AdapterRecord, artifacts
from adapterhub.tasks import Task, TaskNotFoundError, load_task
from adapterhub.threads import torch_threads

if TYPE_CHECKING:
    from adapterhub.transfer import SourceKit

KIT_KIND = "transfer-kit"
KIT_META_KEY = "adapterhub.transfer_kit"
MAX_DATA_BYTES = 32 << 20
MAX_DATA_LINES = 100_000
MAX_SEEDS = 32
_MAX_HEADER = 1 << 20


def read_texts_file(path: str | Path, *, what: str, max_lines: int = MAX_DATA_LINES) -> list[str]:
    """Texts from a JSON-lines file of ``{"text": ...}`` objects (blank lines skipped), bounded.

    Raises:
        InvalidParameterError: unreadable, too large, not JSON lines with a string ``text``, or empty.
    """
    from adapterhub.route.base import parse_text_lines

    source = Path(path)
    try:
        if source.stat().st_size > MAX_DATA_BYTES:
            raise InvalidParameterError(f"the {what} file {source} is larger than {MAX_DATA_BYTES >> 20} MiB")
        data = source.read_bytes()
    except OSError as e:
        raise InvalidParameterError(f"cannot read the {what} file {source}: {e.strerror or e}") from None
    return parse_text_lines(data, what=f"{what} file {source.name}", max_texts=max_lines)


def read_seeds(path: str | Path) -> list[str]:
    """Seed inputs from a ``{"text": ...}`` JSON-lines file: at least 1, at most 32."""
    return read_texts_file(path, what="seeds", max_lines=MAX_SEEDS)


def task_of(record: AdapterRecord) -> Task:
    """The shipped task an adapter carries (its label descriptions are the teacher's classes).

    Raises:
        InvalidParameterError: the entry names no task, or one that is not shipped.
    """
    if not record.task:
        raise InvalidParameterError(f"'{record.name}' records no task; transfer needs the task's labels")
    try:
        task = load_task(record.task)
    except TaskNotFoundError:
        raise InvalidParameterError(
            f"'{record.name}' is for task '{record.task}', which is not a shipped task; transfer needs its labels"
        ) from None
    if task.is_generation:
        raise InvalidParameterError(f"'{record.task}' is a generation task; transfer distils classification tasks")
    return task


def kit_to_bytes(kit: SourceKit, task: str) -> bytes:
    """The kit as safetensors bytes (deterministic for the same kit)."""
    from safetensors.torch import load, save

    adapter = kit.discriminator.adapter
    tensors = load(b"".join(adapter.iter_weights_bytes()))
    meta = {"task": task, "seeds": kit.seeds, "discriminator_base": kit.discriminator_base,
            "config": adapter.config.raw, "stats": kit.stats, "params": kit.discriminator.params}
    return save(tensors, metadata={KIT_META_KEY: json.dumps(meta, sort_keys=True)})


def kit_from_bytes(data: bytes) -> tuple[SourceKit, dict[str, Any]]:
    """Rebuild a kit (and its metadata) from ``kit_to_bytes`` output; the discriminator is checked.

    Raises:
        InvalidAdapterError: not a transfer kit, or its discriminator is not a valid adapter.
    """
    from safetensors.torch import load

    from adapterhub.app.shard_pools import safetensors_header
    from adapterhub.lora import AdapterConfig, LoraAdapter
    from adapterhub.lora.tensorfile import DictSource
    from adapterhub.transfer import Discriminator, SourceKit

    header = safetensors_header(io.BytesIO(data), max_bytes=_MAX_HEADER)
    try:
        meta = json.loads(header["__metadata__"][KIT_META_KEY])
        seeds, config = [str(s) for s in meta["seeds"]], dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidAdapterError(f"not a transfer kit (safetensors with {KIT_META_KEY!r} metadata): {e}") from e
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error types on bad bytes
        raise InvalidAdapterError(f"transfer kit tensors are not valid safetensors: {e}") from e
    adapter = LoraAdapter(AdapterConfig(config), DictSource(tensors), origin="<transfer kit>")
    adapter.validate()
    disc = Discriminator(adapter=adapter, metrics={}, params=meta.get("params", {}))
    return SourceKit(seeds, disc, str(meta.get("discriminator_base", "")), dict(meta.get("stats", {}))), meta


def find_kit(core: HubCore, record: AdapterRecord) -> tuple[SourceKit, dict[str, Any]] | None:
    """The kit prepared for exactly this content of the adapter, or None."""
    found = artifacts.find_artifact(core.catalog, KIT_KIND, record.digest)
    if found is None:
        return None
    with core.blobs.open(found.digest) as f:
        return kit_from_bytes(f.read(found.size + 1))


def store_kit(core: HubCore, record: AdapterRecord, kit: SourceKit) -> artifacts.ArtifactRecord:
    """Blob first, then the artifact row (a crash between leaves only an unreferenced blob for ``gc``)."""
    digest, size = core.blobs.put_bytes(kit_to_bytes(kit, record.task or ""))
    return artifacts.record_artifact(
        core.catalog, artifacts.ArtifactRecord(KIT_KIND, record.digest, record.digest, digest, size))


def discriminator_base_for(base_model: str | None) -> str:
    """The registered base the discriminator adapts: the source's own when it is an encoder, else MiniLM."""
    from adapterhub.models.bases import DEFAULT_BASE, find_base

    spec = find_base(base_model)
    return spec.name if spec is not None and spec.kind == "encoder" else DEFAULT_BASE


def load_generator(name: str) -> Any:
    """The generator LM: a registered causal-LM base (``smollm2``), loaded from its package.

    Raises:
        InvalidParameterError: not a causal LM of the registry.
        BaseModelNotFoundError: its package is not installed.
    """
    from adapterhub.models.bases import get_base

    spec = get_base(name)
    if spec.kind != "causal_lm":
        raise InvalidParameterError(f"generator '{name}' is not a causal LM; use smollm2")
    return spec.load()


def build_kit(
    task: Task,
    real: Sequence[str],
    *,
    base_model: str | None,
    seeds: Sequence[str] | None = None,
    generator: str = "smollm2",
    max_real: int = 128,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> SourceKit:
    """Seeds + discriminator for an adapter of ``base_model`` trained on ``real``."""
    from adapterhub.models.bases import get_base
    from adapterhub.transfer import prepare_source

    lm = load_generator(generator)
    disc_base = get_base(discriminator_base_for(base_model)).load()
    kit = prepare_source(task, real, generator=lm, discriminator_base=disc_base, seeds=seeds,  # type: ignore[arg-type]
                         max_real=max_real, seed=seed, progress=progress or (lambda *_: None))
    kit.stats["generator"] = get_base(generator).model_id  # type: ignore[index]
    return kit


def prepare(
    core: HubCore,
    name: str,
    *,
    data: str | Path,
    seeds: str | Path | None = None,
    generator: str = "smollm2",
    max_real: int = 128,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Build and store the transfer kit of ``name``'s head revision from its training inputs.

    Raises:
        AdapterNotFoundError, InvalidParameterError (no task, bad data or seeds file, fewer than 5
        inputs), BaseModelNotFoundError (generator or discriminator base not installed).
    """
    record = core.catalog.get(name)
    task = task_of(record)
    real = read_texts_file(data, what="data")
    if len(real) < 5:
        raise InvalidParameterError(f"the data file has {len(real)} texts; the discriminator needs at least 5")
    seed_texts = read_seeds(seeds) if seeds is not None else None
    with torch_threads(threads):
        kit = build_kit(task, real, base_model=record.base_model, seeds=seed_texts, generator=generator,
                        max_real=max_real, seed=seed, progress=progress)
    stored = store_kit(core, record, kit)
    return {"adapter": name, "digest": record.digest, "kit": stored.digest, "seeds": len(kit.seeds),
            "discriminator_base": kit.discriminator_base, "stats": kit.stats}
