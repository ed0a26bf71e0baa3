"""``train --method mos``: a MoS adapter for a shipped task, stored in two forms.

The engine is ``adapterhub.shard`` (``mos`` and ``mos_train``: Wang et al., ICLR 2025, "MoS:
Unleashing Parameter Efficiency of Low-Rank Adaptation with Mixture of Shards", as the official
``Forence1999/MoS`` code does it). Its "router" is not learned: each layer's shards are picked from
the shared pools by a fixed random index drawn once from the seed; only the shards are trained.
This service trains on a registered base, scores like a LoRA (``evaluation.train`` does the rest)
and keeps both forms, because each serves a different reader:

* the **catalog entry** is the exported plain per-layer PEFT LoRA of rank ``r`` (the official
  ``save_tied_lora``), so PEFT, vLLM and every engine here load it with no MoS code;
* the **pool form** (pools + indices + private shards, the trained parameters, ``R_eq/r`` of the
  export's size) is a blob of safetensors bytes (metadata: the ``MosPools`` JSON under
  ``POOLS_META_KEY``) recorded as the artifact ``(kind "mos-pools", key = the export's digest,
  source = the export's digest)``. ``gc`` keeps it while a revision holds that digest and prunes
  it after the adapter is removed; a new revision of the entry (other weights) has no pool form,
  so a stale one is never served.

Imports of torch and the engines are inside the functions: importing the facade stays cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO

from adapterhub.errors import (
    AdapterExistsError,
    BlobCorruptError,
    CommitConflictError,
    InvalidAdapterError,
    InvalidParameterError,
)
from adapterhub.store import artifacts

if TYPE_CHECKING:
    from adapterhub.app.core import HubCore
    from adapterhub.shard.mos import MosConfig, MosPools
    from adapterhub.shard.mos_train import MosTrainResult
    from adapterhub.store import AdapterRecord
    from adapterhub.tasks import Task

__all__ = ["METHODS", "MOS_POOLS_KIND", "describe", "mos_config", "mos_form", "pool_form", "pools_from_bytes",
           "pools_to_bytes", "stored_with_pools", "train_and_score"]

METHODS = ("lora", "mos")
MOS_POOLS_KIND = "mos-pools"
"""Artifact kind of a MoS adapter's pool form (key and source: the exported LoRA's weights digest)."""
POOLS_META_KEY = "adapterhub.mos"
"""safetensors metadata key holding ``MosPools.to_tensors()``'s JSON metadata."""
ROUTER = "fixed random index"
_MAX_HEADER = 16 * 1024 * 1024  # a pool form's header is a few KB; refuse to read a corrupt length


def mos_config(
    method: str,
    *,
    rank: int,
    alpha: float,
    seed: int,
    budget_rank: int | None = None,
    shards_per_vector: int | None = None,
    private_rank: int | None = None,
) -> MosConfig | None:
    """Check the training method and its options; the ``MosConfig`` for ``"mos"``, ``None`` for ``"lora"``.

    Checked before any model loads, so bad input fails in a second and stores nothing. Whether
    ``shards_per_vector`` divides every adapted layer is known only with the model
    (``train_and_score`` checks it before training starts). Defaults of MoS options: budget rank 2,
    2 shards per vector, 1 private rank vector (the engine's ``MosConfig`` defaults).

    Raises:
        InvalidParameterError: an unknown method, MoS options with ``"lora"``, or MoS sizes out of range.
    """
    if method not in METHODS:
        raise InvalidParameterError(f"unknown training method {method!r}; choose one of {', '.join(METHODS)}")
    given = {"--budget-rank": budget_rank, "--shards-per-vector": shards_per_vector, "--private-rank": private_rank}
    if method == "lora":
        extra = [flag for flag, value in given.items() if value is not None]
        if extra:
            one = len(extra) == 1
            raise InvalidParameterError(f"{', '.join(extra)} {'applies' if one else 'apply'} to --method mos only; "
                                        f"add --method mos or drop {'it' if one else 'them'}")
        return None
    from adapterhub.shard.mos import MosConfig

    defaults = MosConfig()
    try:
        return MosConfig(
            budget_rank=defaults.budget_rank if budget_rank is None else budget_rank, rank=rank, alpha=alpha, seed=seed,
            shards_per_vector=defaults.shards_per_vector if shards_per_vector is None else shards_per_vector,
            private_rank=defaults.private_rank if private_rank is None else private_rank,
        )
    except InvalidParameterError as e:
        raise InvalidParameterError(f"bad MoS options: {e}") from e


def train_and_score(
    spec: Task,
    config: MosConfig,
    *,
    base: str,
    causal: bool,
    base_model: str | None,
    schedule: dict[str, Any],
    limit: int | None,
    progress: Callable[[str], None] | None,
) -> tuple[MosTrainResult, Any, Any]:
    """Train a MoS adapter on the base and score its export on the test split beside zero-shot.

    As ``evaluation._train_encoder``/``_train_causal`` do for a LoRA (validation on the task's
    validation split, 100 examples on a causal LM; test on ``limit`` examples there). The layer
    shapes are checked against ``shards_per_vector`` on the loaded model before ``progress`` says
    training starts, so that mistake costs a model load, not a training run.

    Args:
        schedule: ``epochs``, ``lr``, ``batch_size``, ``max_steps`` of ``train_mos_adapter``.

    Returns:
        ``(MosTrainResult, test EvalResult, zero-shot EvalResult)``; the result's ``params`` also
        hold the parameter counts (MoS, LoRA of the budget rank, LoRA of rank ``r``).
    """
    from adapterhub.shard.mos import init_pools
    from adapterhub.shard.mos_train import train_mos_adapter

    if causal:
        from adapterhub.eval.bed import load_bed_model
        from adapterhub.eval.generative import evaluate_lm, lm_split_scorer
        from adapterhub.models.causal import LLAMA_TARGET_MODULES

        model: Any = load_bed_model(base)  # shared; training restores it
        config = dataclasses.replace(config, target_modules=config.target_modules or LLAMA_TARGET_MODULES)
        validate: Any = lm_split_scorer(spec, limit=100)
    else:
        from adapterhub.eval.evaluate import evaluate, split_scorer
        from adapterhub.models.base import load_base_model

        model = load_base_model(base_model)  # fresh, as for a LoRA
        validate = split_scorer(spec)
    init_pools(model.model, config)  # raises on a layer that does not cut into shards_per_vector shards
    if progress is not None:
        steps = schedule.get("max_steps")
        progress(f"training a MoS adapter (budget rank {config.budget_rank}, rank {config.rank}, "
                 f"{config.shards_per_vector} shards a vector, {config.private_rank} private) for {spec.name} "
                 f"on {base} ({schedule['epochs']} epochs" + (f", at most {steps} steps" if steps else "") + ")…")
    result = train_mos_adapter(model, spec, config, validate=validate, **schedule)
    result.params.update({k: int(result.metrics[k]) for k in
                          ("mos_parameters", "lora_budget_parameters", "lora_rank_parameters")})
    result.params["router"] = f"{ROUTER} (seed {config.seed}), not learned"
    if causal:
        test = evaluate_lm(result.adapter, spec, model, split="test", limit=limit)
        zero = evaluate_lm(None, spec, model, split="test", limit=limit)
    else:
        test = evaluate(result.adapter, spec, split="test", model=model)
        zero = evaluate(None, spec, split="test", model=model)
    return result, test, zero


def describe(pools: MosPools) -> str:
    """The first sentences of a MoS entry's description (and so of its model card): what it is,
    how it was made, and that its "router" is a fixed random index, not a learned one."""
    c = pools.config
    from adapterhub.shard.mos import lora_parameter_count

    shapes = pools.shapes()
    return (
        f"MoS adapter (Mixture of Shards, Wang et al., ICLR 2025) exported as a plain rank-{c.rank} PEFT LoRA. "
        f"{pools.parameter_count()} trained parameters, as many as a rank-{c.budget_rank} LoRA "
        f"(rank {c.rank}: {lora_parameter_count(shapes, c.rank)}): each layer's rank vectors are "
        f"{c.shards_per_vector} shards taken from pools shared across layers by a {ROUTER} (seed {c.seed}), "
        f"not a learned router; {c.private_rank} private rank vector(s) per layer."
    )


# ----------------------------------------------------------------------------- the pool form


def pools_to_bytes(pools: MosPools) -> bytes:
    """The pool form as safetensors bytes (no pickle); deterministic for the same pools."""
    from safetensors.torch import save

    tensors, meta = pools.to_tensors()
    return save(tensors, metadata={POOLS_META_KEY: json.dumps(meta, sort_keys=True)})


def _header(f: BinaryIO) -> dict[str, Any]:
    """The safetensors header of an open blob (tensor shapes and metadata), read without the data."""
    from adapterhub.app.shard_pools import safetensors_header

    header = safetensors_header(f, max_bytes=_MAX_HEADER)
    try:
        meta = json.loads(header["__metadata__"][POOLS_META_KEY])
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidAdapterError(f"not a MoS pool form (safetensors with {POOLS_META_KEY!r} metadata): {e}") from e
    return {"tensors": {k: v for k, v in header.items() if k != "__metadata__"}, "meta": meta}


def pools_from_bytes(data: bytes) -> MosPools:
    """Rebuild ``MosPools`` from ``pools_to_bytes`` output (every tensor checked by ``from_tensors``)."""
    from safetensors.torch import load

    from adapterhub.shard.mos import MosPools

    meta = _header(io.BytesIO(data))["meta"]
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error types on bad bytes
        raise InvalidAdapterError(f"MoS pool form is not valid safetensors: {e}") from e
    return MosPools.from_tensors(tensors, meta)


@contextmanager
def stored_with_pools(core: HubCore, pools: MosPools) -> Iterator[Callable[[AdapterRecord], None]]:
    """Store the pool form's blob, run the block (which adds the entry), then record the artifact.

    Yields ``attach(record)``: the block calls it with the new entry to record the artifact
    ``(MOS_POOLS_KIND, record.digest)``. Blob first, row last, as in ``ingest``: a crash in between
    leaves an unreferenced blob for ``gc``; if the block raises, the blob is deleted again unless
    something else references it (not after a lost race for the name, as in ``ingest``: a
    concurrent writer of the same bytes may be about to record it; ``gc`` takes what nobody did).
    """
    digest, size = core.blobs.put_bytes(pools_to_bytes(pools))

    def attach(record: AdapterRecord) -> None:
        artifacts.record_artifact(
            core.catalog, artifacts.ArtifactRecord(MOS_POOLS_KIND, record.digest, record.digest, digest, size))

    try:
        yield attach
    except (CommitConflictError, AdapterExistsError):
        raise
    except BaseException:
        referenced = artifacts.referenced_artifact_digests(core.catalog) | core.catalog.referenced_digests()
        if digest not in referenced:
            core.blobs.delete(digest)
        raise


def _artifact(core: HubCore, record: AdapterRecord) -> artifacts.ArtifactRecord | None:
    return artifacts.find_artifact(core.catalog, MOS_POOLS_KIND, record.digest)


def pool_form(core: HubCore, record: AdapterRecord | str) -> MosPools | None:
    """The pool form of an entry's head revision (a record or a name), or ``None`` if it has none.

    The blob's bytes are hashed as they are read and must match the artifact's digest.

    Raises:
        AdapterNotFoundError: no entry of that name.
        BlobCorruptError: the pool blob is missing or does not hash to its digest.
        InvalidAdapterError: the bytes are not a valid pool form.
    """
    if isinstance(record, str):
        record = core.catalog.get(record)
    found = _artifact(core, record)
    if found is None:
        return None
    if not core.blobs.has(found.digest):
        raise BlobCorruptError(f"the MoS pool form of '{record.name}' (blob {found.digest}) is missing; run verify")
    with core.blobs.open(found.digest) as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != found.digest:
        raise BlobCorruptError(f"the MoS pool form of '{record.name}' does not hash to {found.digest}; the blob store "
                               "is corrupt")
    return pools_from_bytes(data)


def mos_form(core: HubCore, record: AdapterRecord) -> dict[str, Any] | None:
    """Which is which, for ``show``: the entry's pool form beside the exported LoRA it stores, or ``None``.

    Read from the pool blob's safetensors header only (no torch, no tensor data), so ``show``
    stays a catalog read. Keys: ``form`` (``"mos-pools"``), ``digest``, ``bytes`` (of the pool
    blob), ``exported`` (``{"form": "peft-lora", "digest", "rank"}``: the catalog entry),
    ``parameters`` (trained: pools + private shards), ``lora_budget_parameters`` and
    ``lora_rank_parameters`` (plain LoRA of the budget rank and of rank ``r`` on the same layers),
    ``budget_rank``, ``rank``, ``shards_per_vector``, ``private_rank``, ``alpha``, ``seed``,
    ``layers``, ``groups`` (projection types, each with its shared pools) and ``router``.

    A pool blob that is missing or unreadable does not make ``show`` fail: the dict then has
    ``form``, ``digest``, ``bytes``, ``exported`` and ``error`` (what is wrong; ``verify`` reports
    a missing blob too).
    """
    found = _artifact(core, record)
    if found is None:
        return None
    known = {"form": MOS_POOLS_KIND, "digest": found.digest, "bytes": found.size,
             "exported": {"form": "peft-lora", "digest": record.digest, "rank": record.rank}}
    if not core.blobs.has(found.digest):
        return {**known, "error": "the pool form's blob is missing from the blob store"}
    try:
        with core.blobs.open(found.digest) as f:
            header = _header(f)
        meta, tensors = header["meta"], header["tensors"]
        config = {k: meta["config"][k] for k in ("budget_rank", "rank", "shards_per_vector", "private_rank", "alpha",
                                                 "seed")}
        kinds = ("pool_A", "pool_B", "private_A", "private_B")
        parameters = sum(_numel(spec["shape"]) for key, spec in tensors.items() if key.rsplit(".", 1)[-1] in kinds)
        groups = meta["groups"]
        shapes = [(int(g["d_in"]), int(g["d_out"])) for g in groups for _ in g["paths"]]
        budget, rank = int(config["budget_rank"]), int(config["rank"])
        names = [str(g["name"]) for g in groups]
    except (InvalidAdapterError, KeyError, TypeError, ValueError) as e:
        return {**known, "error": f"the pool form's blob is unreadable: {e}"}
    return {
        **known,
        "parameters": parameters,
        "lora_budget_parameters": sum(budget * (i + o) for i, o in shapes),
        "lora_rank_parameters": sum(rank * (i + o) for i, o in shapes),
        **config,
        "layers": len(shapes),
        "groups": names,
        "router": f"{ROUTER} (seed {config['seed']}), not learned",
    }


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
