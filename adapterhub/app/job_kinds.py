"""The kinds of job (``app/jobs``): typed parameters, the checks made before queueing, and the run.

A kind is data, as merge methods are: a pydantic model of its parameters (unknown keys refused,
so a typo is a 4xx before anything is queued), a ``check`` that reads the catalog and returns the
parameters to store (names resolved, so a retried job writes where its first attempt did), and a
``run`` that calls existing facade operations and returns a JSON-ready result.

Kinds: ``merge_batch`` (merges, one stored result each), ``quality`` (the merge-quality table),
``transfer`` (Trans-LoRA), ``train_batch`` (a task library), ``mhr`` (an MHR router),
``shard_pack`` (a base's shard pools).

Retries must not duplicate: a job whose worker died runs again from the start, so each kind skips
what an earlier attempt already stored. Each merge of a batch, and a transfer, commits in one
transaction through ``ingest``; before running one, ``run`` looks for an entry with the same
lineage (same parents, same operation, same seed) and reports it as done instead. A trained
adapter or router whose name is stored with the same task is done; packing is incremental.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapterhub.errors import AdapterExistsError, InvalidParameterError

if TYPE_CHECKING:
    from adapterhub.app.hub import AdapterHub

__all__ = [
    "JOB_KINDS",
    "JobKind",
    "MergeBatchParams",
    "MhrParams",
    "ProgressFn",
    "QualityParams",
    "ShardPackParams",
    "TrainBatchParams",
    "TransferParams",
    "get_kind",
]

ProgressFn = Callable[..., None]  # progress(stage, done, total, message=None)


class MergeSpecParams(BaseModel):
    """One merge of a batch: ``AdapterHub.merge``'s arguments."""

    model_config = ConfigDict(extra="forbid")

    names: list[str] = Field(..., min_length=2, max_length=64, description="Input adapters, 'namespace/name'.")
    method: str = Field("lego", max_length=64, description="A merge method (`adapterhub methods`), or auto.")
    k: int | None = Field(None, ge=1, le=4096, description="Output rank, for methods that take one.")
    weights: list[float] | None = Field(None, max_length=64, description="One weight per input.")
    params: dict[str, Any] = Field(default_factory=dict, description="The method's other parameters.")
    name: str | None = Field(None, max_length=200, description="Name of the result (default: derived).")
    namespace: str = Field("merged", max_length=96, description="Namespace of a derived name.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    force: bool = False
    task: str | None = Field(None, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=32)
    description: str | None = Field(None, max_length=2000)


class MergeBatchParams(BaseModel):
    """A list of merges, run in order; each stores its result with lineage."""

    model_config = ConfigDict(extra="forbid")

    merges: list[MergeSpecParams] = Field(..., min_length=1, max_length=1000)


class QualityParams(BaseModel):
    """The merge-quality table (``merge_quality``) with a small grid by default."""

    model_config = ConfigDict(extra="forbid")

    quick: bool = True
    seeds: list[int] | None = Field(None, min_length=1, max_length=10)
    ks: list[int] | None = Field(None, min_length=1, max_length=10)
    max_examples: int | None = Field(None, ge=1, le=100_000)
    split: str = Field("test", pattern="^(test|validation)$")
    all_only: bool = False
    select: bool = False
    base: str = Field("minilm", max_length=64)
    threads: int | None = Field(None, ge=1, le=256)


class TransferParams(BaseModel):
    """Move a catalog adapter to another base (``AdapterHub.transfer``; the CLI's options)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=200, description="The source adapter, 'namespace/name'.")
    to_base: str = Field(..., max_length=200, description="Target base: mpnet, smollm2, minilm.")
    samples: int = Field(250, ge=1, le=5000, description="Synthetic inputs to distil on.")
    max_candidates: int | None = Field(None, ge=1, le=40_000, description="Generation budget (default 8 x samples).")
    seeds: list[str] | None = Field(None, min_length=1, max_length=32, description="Seed inputs (default: the kit's).")
    generator: str = Field("smollm2", max_length=200, description="The generator LM (a causal base).")
    new_name: str | None = Field(None, max_length=200, description="Name of the new adapter.")
    filter_rule: str = Field("top", pattern="^(top|threshold)$",
                             description="top (the most real-looking candidates) or threshold (p(real) > 0.5).")
    rank: int = Field(8, ge=1, le=64, description="Rank of the new adapter.")
    epochs: int = Field(2, ge=1, le=20, description="Distillation passes over the synthetic set.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds sampling and the student.")


class TrainSpecParams(BaseModel):
    """One adapter of a library to train: ``AdapterHub.train``'s arguments."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(..., max_length=200, description="A shipped task (`adapterhub train --help` lists them).")
    name: str = Field(..., max_length=200, description="Catalog name of the new adapter.")
    base: str = Field("minilm", max_length=64)
    method: str = Field("lora", pattern="^(lora|mos)$")
    rank: int = Field(8, ge=1, le=256)
    alpha: float = Field(16, gt=0, le=4096)
    epochs: int | None = Field(None, ge=1, le=100)
    lr: float = Field(1e-3, gt=0, le=1)
    batch_size: int | None = Field(None, ge=1, le=1024)
    max_steps: int | None = Field(None, ge=1, le=1_000_000)
    limit: int | None = Field(None, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    tags: list[str] = Field(default_factory=list, max_length=32)
    threads: int | None = Field(None, ge=1, le=256)


class TrainBatchParams(BaseModel):
    """A task library to train, one adapter after another."""

    model_config = ConfigDict(extra="forbid")

    trainings: list[TrainSpecParams] = Field(..., min_length=1, max_length=200)


class MhrParams(BaseModel):
    """An MHR router over an inventory (``AdapterHub.train_mhr``)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(..., max_length=200)
    inventory: list[str] = Field(..., min_length=1, max_length=1000)
    name: str = Field(..., max_length=200)
    shots: int = Field(16, ge=1, le=10_000)
    variant: str = Field("z", pattern="^(z|mu)$")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    steps: int | None = Field(None, ge=1, le=1_000_000)


class ShardPackParams(BaseModel):
    """Pack a base's adapters into shared shard pools (``AdapterHub.shard_pack``)."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(..., max_length=255)
    adapters: list[str] | None = Field(None, max_length=100_000)
    pool_size: int | None = Field(None, ge=1, le=1_000_000)
    private_budget: float | None = Field(None, ge=0, le=1)
    shards_per_vector: int | None = Field(None, ge=1, le=64)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    max_error: float | None = Field(None, ge=0)
    keep_originals: bool = False
    repack: bool = False


@dataclass(frozen=True)
class JobKind:
    """One kind of job: its parameters, the checks before queueing, and the run."""

    name: str
    params: type[BaseModel]
    # (hub, params, token or None: a local caller) -> the parameters to store; raises 4xx errors
    check: Callable[[AdapterHub, Any, Any], dict[str, Any]]
    run: Callable[[AdapterHub, Any, ProgressFn], dict[str, Any]]
    description: str

    def parse(self, params: Mapping[str, Any] | None) -> BaseModel:
        """Validated parameters; a bad one is an ``InvalidParameterError`` naming the field."""
        try:
            return self.params.model_validate(dict(params or {}))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "params"
            raise InvalidParameterError(f"{self.name} job: {where}: {first['msg']}") from None


# -- merge_batch --------------------------------------------------------------------------------------


def _same_merge(hub: AdapterHub, name: str, spec: MergeSpecParams) -> bool:
    """Whether ``name`` is the stored result of ``spec`` (same parents and digests, operation, seed)."""
    lineage = hub.catalog.lineage(name)
    if sorted(p.parent_name for p in lineage) != sorted(spec.names):
        return False
    digests = {n: hub.catalog.get(n).digest for n in spec.names if hub.catalog.exists(n)}
    for parent in lineage:
        if digests.get(parent.parent_name) != parent.parent_digest or not parent.operation.startswith("merge:"):
            return False
        if spec.method != "auto" and parent.operation != f"merge:{spec.method}":
            return False
        if (parent.params or {}).get("seed") != spec.seed:
            return False
        if spec.k is not None and (parent.params or {}).get("k", spec.k) != spec.k:
            return False
    return True


def _stored_merge(hub: AdapterHub, spec: MergeSpecParams) -> str | None:
    """The entry an earlier attempt stored for ``spec``, if any."""
    if spec.name is not None:
        return spec.name if hub.catalog.exists(spec.name) and _same_merge(hub, spec.name, spec) else None
    # a derived name: only this job's namespace counts (another owner's equal merge is not ours)
    prefix = f"{spec.namespace}/" if spec.method == "auto" else f"{spec.namespace}/{spec.method}-"
    for child in hub.catalog.descendants(spec.names[0]):
        name = child.child_name
        if name and name.startswith(prefix) and _same_merge(hub, name, spec):
            return name
    return None


def check_merge_batch(hub: AdapterHub, params: MergeBatchParams, token: Any) -> dict[str, Any]:
    from adapterhub.merge import resolve_params

    from adapterhub.app.merging import AUTO, _check_auto, _check_inputs
    from adapterhub.names import validate_name

    seen: set[str] = set()
    for i, spec in enumerate(params.merges):
        _check_inputs(spec.names)
        if token is not None:  # a server caller: may read every parent, write the result's namespace
            spec.namespace = hub.authorize_merge(token, spec.names, spec.name)
        else:
            for n in spec.names:
                hub.catalog.get(n)  # AdapterNotFoundError before anything is queued
        if spec.method == AUTO:
            _check_auto({**spec.params, **({"k": spec.k} if spec.k else {})}, spec.weights)
        else:
            resolve_params(spec.method, {**spec.params, **({"k": spec.k} if spec.k else {})})
        if spec.name is not None:
            validate_name(spec.name)
            if spec.name in seen:
                raise InvalidParameterError(f"merge {i + 1} of the batch: '{spec.name}' is named twice in it")
            if hub.catalog.exists(spec.name):
                raise AdapterExistsError(spec.name)
            seen.add(spec.name)
    return params.model_dump()


def run_merge_batch(hub: AdapterHub, params: MergeBatchParams, progress: ProgressFn) -> dict[str, Any]:
    total = len(params.merges)
    results: list[dict[str, Any]] = []
    progress("merges", 0, total)
    for i, spec in enumerate(params.merges):
        existing = _stored_merge(hub, spec)
        if existing is None:
            def on_module(done: int, modules: int, path: str) -> None:
                progress("modules", done, modules)

            try:
                outcome = hub.merge(
                    spec.names, method=spec.method, k=spec.k, weights=spec.weights, params=spec.params,
                    name=spec.name, namespace=spec.namespace, seed=spec.seed, force=spec.force, task=spec.task,
                    tags=spec.tags, description=spec.description, progress=on_module)
                record, method = outcome.record, outcome.method
            except AdapterExistsError:  # a concurrent attempt stored it first
                existing = _stored_merge(hub, spec)
                if existing is None:
                    raise
        if existing is not None:
            record = hub.catalog.get(existing)
            method = (hub.catalog.lineage(existing)[0].operation or "merge:").removeprefix("merge:")
        results.append({"name": record.name, "digest": record.digest, "method": method,
                        "parents": list(spec.names), "existing": existing is not None})
        progress("merges", i + 1, total, record.name)
    return {"merges": results, "count": len(results)}


# -- quality -------------------------------------------------------------------------------------------


def check_quality(hub: AdapterHub, params: QualityParams, token: Any) -> dict[str, Any]:
    from adapterhub.models.bases import get_base

    get_base(params.base)  # an unknown base is a 4xx now, not a failed job later
    return params.model_dump()


def run_quality(hub: AdapterHub, params: QualityParams, progress: ProgressFn) -> dict[str, Any]:
    from adapterhub.app.quality import merge_quality

    steps = [0]

    def on_step(line: str) -> None:
        steps[0] += 1
        progress("steps", steps[0], 0, line)

    data = merge_quality(quick=params.quick, seeds=params.seeds, ks=params.ks, max_examples=params.max_examples,
                         split=params.split, threads=params.threads, progress=on_step, base=params.base,
                         all_only=params.all_only, select=params.select)
    keep = ("plan", "tasks", "rows", "references", "reference_rows", "lego_vs_best_baseline", "seconds")
    return {k: data[k] for k in keep if k in data}


# -- transfer ------------------------------------------------------------------------------------------


def check_transfer(hub: AdapterHub, params: TransferParams, token: Any) -> dict[str, Any]:
    namespace = hub.authorize_merge(token, [params.name], params.new_name) if token is not None else None
    plan = hub.transfer_check(params.name, to_base=params.to_base, new_name=params.new_name, namespace=namespace,
                              samples=params.samples, seeds=params.seeds, generator=params.generator)
    return {**params.model_dump(), "new_name": plan["name"], "filtered": plan["filtered"]}


def run_transfer(hub: AdapterHub, params: TransferParams, progress: ProgressFn) -> dict[str, Any]:
    new_name = params.new_name
    if new_name is not None and hub.catalog.exists(new_name):
        parents = hub.catalog.lineage(new_name)
        if [p.parent_name for p in parents] == [params.name] and parents[0].operation.startswith("transfer"):
            return {"adapter": hub.get(new_name).to_dict(), "source": params.name, "existing": True}
        raise AdapterExistsError(new_name)
    return hub.transfer(params.name, to_base=params.to_base, samples=params.samples,
                        max_candidates=params.max_candidates, seeds=params.seeds, generator=params.generator,
                        new_name=new_name, filter_rule=params.filter_rule, rank=params.rank, epochs=params.epochs,
                        seed=params.seed, progress=progress)


# -- train_batch, mhr, shard_pack --------------------------------------------------------------------


def _new_name(hub: AdapterHub, name: str, token: Any, seen: set[str] | None = None) -> None:
    from adapterhub.names import validate_name

    validate_name(name)
    if token is not None:
        hub.authorize_write(token, name, must_exist=False)
    if hub.catalog.exists(name):
        raise AdapterExistsError(name)
    if seen is not None:
        if name in seen:
            raise InvalidParameterError(f"'{name}' is named twice in the job")
        seen.add(name)


def check_train_batch(hub: AdapterHub, params: TrainBatchParams, token: Any) -> dict[str, Any]:
    from adapterhub.models.bases import get_base
    from adapterhub.tasks import load_task

    seen: set[str] = set()
    for spec in params.trainings:
        _new_name(hub, spec.name, token, seen)
        load_task(spec.task)
        get_base(spec.base)
    return params.model_dump()


def run_train_batch(hub: AdapterHub, params: TrainBatchParams, progress: ProgressFn) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    total = len(params.trainings)
    progress("trainings", 0, total)
    for i, spec in enumerate(params.trainings):
        existing = hub.catalog.exists(spec.name) and hub.get(spec.name).task == spec.task
        if existing:
            record = hub.get(spec.name)
        else:
            options = spec.model_dump(exclude={"task", "name", "tags"})
            record_dict = hub.train(spec.task, name=spec.name, tags=spec.tags, **options)["adapter"]
            record = hub.get(record_dict["name"])
        results.append({"name": record.name, "task": spec.task, "digest": record.digest, "existing": existing})
        progress("trainings", i + 1, total, record.name)
    return {"adapters": results, "count": len(results)}


def check_mhr(hub: AdapterHub, params: MhrParams, token: Any) -> dict[str, Any]:
    from adapterhub.tasks import load_task

    if token is not None:
        hub.authorize_merge(token, params.inventory, params.name)
    _new_name(hub, params.name, None)
    for name in params.inventory:
        hub.catalog.get(name)
    load_task(params.task)
    return params.model_dump()


def run_mhr(hub: AdapterHub, params: MhrParams, progress: ProgressFn) -> dict[str, Any]:
    existing = hub.catalog.exists(params.name) and hub.get(params.name).task == params.task
    record = hub.get(params.name) if existing else hub.train_mhr(**params.model_dump())
    return {"adapter": record.to_dict(), "existing": existing}


def check_shard_pack(hub: AdapterHub, params: ShardPackParams, token: Any) -> dict[str, Any]:
    from adapterhub.errors import PermissionDeniedError

    if token is not None and not getattr(token, "admin", False):
        raise PermissionDeniedError("packing a base's shard pools changes every adapter of it: it needs an admin token")
    if not hub.catalog.list(base_model=params.base_model, limit=1):
        raise InvalidParameterError(f"no adapter of base '{params.base_model}' in the catalog to pack")
    for name in params.adapters or ():
        hub.catalog.get(name)
    return params.model_dump()


def run_shard_pack(hub: AdapterHub, params: ShardPackParams, progress: ProgressFn) -> dict[str, Any]:
    options = params.model_dump(exclude={"base_model"})
    return hub.shard_pack(params.base_model, **options)  # incremental: a rerun packs only what is new


class _TransferStored(TransferParams):
    """What a queued transfer job keeps: the request with its resolved name and kit status."""

    filtered: bool | None = None


JOB_KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind("merge_batch", MergeBatchParams, check_merge_batch, run_merge_batch,
                "Merge adapters, one stored result with lineage per merge."),
        JobKind("quality", QualityParams, check_quality, run_quality,
                "The merge-quality table over the shipped task library (a small grid by default)."),
        JobKind("transfer", TransferParams, check_transfer, run_transfer,
                "Move an adapter to another base model (Trans-LoRA)."),
        JobKind("train_batch", TrainBatchParams, check_train_batch, run_train_batch,
                "Train a task library: one adapter per shipped task, stored with its metrics."),
        JobKind("mhr", MhrParams, check_mhr, run_mhr, "Train an MHR router over an inventory of adapters."),
        JobKind("shard_pack", ShardPackParams, check_shard_pack, run_shard_pack,
                "Pack a base's adapters into shared shard pools (an admin's job on a server)."),
    )
}
"""Every kind of job, by name."""

_STORED: dict[str, type[BaseModel]] = {"transfer": _TransferStored}


def get_kind(name: str) -> JobKind:
    """The kind ``name``; an unknown one lists the known ones."""
    kind = JOB_KINDS.get(name.replace("-", "_"))
    if kind is None:
        raise InvalidParameterError(f"unknown job kind '{name[:64]}'; choose one of {', '.join(JOB_KINDS)}")
    return kind


def stored_params(kind: JobKind, params: Mapping[str, Any]) -> BaseModel:
    """The stored parameters of a queued job, parsed again in the worker."""
    return _STORED.get(kind.name, kind.params).model_validate(dict(params))
