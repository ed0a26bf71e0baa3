"""Packing the catalog into shared shard pools (issue 12, item 2): pack, unpack, stats, reads.

``pack(base_model)`` packs every catalog adapter of one base into one library
(``shard.pack.pack_library``), stored as one pool blob (``shard_pools``). What each packed entry's
weights *are* afterwards is the library's reconstruction, serialised canonically: with an
unlimited private budget it is the original (same bytes, same digest); otherwise it is lossy, its
digest differs, and the pack records it as a new revision of the entry (message ``shard-pack``,
with the error), so the catalog never claims bytes it cannot give. Then the original weight blobs
are deleted (that is the saving) unless ``keep_originals``.

Reads stay as they were: a packed adapter's blob is simply missing, and ``BlobStore`` asks
``shard_reads.materialise`` (set by ``AdapterHub``) to rebuild it, then checks the bytes against the digest.
Rebuilding is bitwise deterministic (gathers and elementwise products, no matmul), so the check
holds. ``gc`` may drop such rebuilt blobs again after its grace period.

A second run packs only the adapters added since, with ``PackedLibrary.add`` (appending to the
pools never moves an existing entry, so the other adapters' bytes are unchanged); ``repack`` packs
everything again from the current weights.

Every operation writes its pool blob first, then all its rows (revisions, artifact rows of
``store.shard_rows``) in one catalog transaction; originals are deleted only after the commit. A
crash leaves at most unreferenced blobs, which ``gc`` removes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from adapterhub.app import shard_pools
from adapterhub.app.core import HubCore
from adapterhub.app.shard_reads import library_of, stats
from adapterhub.app.ingest import content_fields, load
from adapterhub.errors import CommitConflictError, IncompatibleAdaptersError, InvalidParameterError
from adapterhub.store import AdapterRecord
from adapterhub.store.artifacts import ArtifactRecord, find_artifact
from adapterhub.store.shard_rows import LIBRARY, ORIGINAL, PACKED, delete_rows, head_digests, names_with_digest, put_rows, rows

DEFAULTS: dict[str, Any] = {"pool_size": 256, "private_budget": 0.0, "shards_per_vector": 1, "seed": 0, "max_error": None}


def _check_parameters(params: dict[str, Any]) -> None:
    """One-line errors for bad parameters, before anything is read."""
    if params.get("pool_size") is not None and (isinstance(params["pool_size"], bool) or params["pool_size"] < 1):
        raise InvalidParameterError(f"--pool-size must be a positive number of shards per pool, got {params['pool_size']}")
    budget = params.get("private_budget")
    if budget is not None and not (budget >= 0):
        raise InvalidParameterError(f"--private-budget must be >= 0 bytes (inf: exact), got {budget}")
    if params.get("shards_per_vector") is not None and params["shards_per_vector"] < 1:
        raise InvalidParameterError(f"--shards-per-vector must be >= 1, got {params['shards_per_vector']}")
    if params.get("max_error") is not None and not (params["max_error"] >= 0):
        raise InvalidParameterError(f"--max-error must be >= 0, got {params['max_error']}")


def _stored_parameters(provenance: dict[str, Any]) -> dict[str, Any]:
    params = dict(provenance.get("parameters", {}))
    if params.get("private_budget", 0) is None:  # JSON has no infinity
        params["private_budget"] = math.inf
    return params


def _parameters(given: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters of this pack: the library's own on an incremental run (a different value
    given is refused: it would need a repack), else the given ones over the defaults."""
    if stored is None:
        return {k: given[k] if given.get(k) is not None else v for k, v in DEFAULTS.items()}
    for key, value in given.items():
        if key != "max_error" and value is not None and key in stored and stored[key] != value:
            raise InvalidParameterError(
                f"the library was packed with {key.replace('_', '-')}={stored[key]}, not {value}; "
                "pass --repack to pack everything again with new parameters"
            )
    return {**DEFAULTS, **stored, **{k: v for k, v in given.items() if v is not None}}


def _select(core: HubCore, base_model: str, names: Sequence[str] | None) -> list[AdapterRecord]:
    if names:
        records = [core.catalog.get(n) for n in names]
        other = [r for r in records if r.base_model != base_model]
        if other:
            raise IncompatibleAdaptersError(
                "one base per pack: " + ", ".join(f"'{r.name}' is for base '{r.base_model}'" for r in other)
                + f", not '{base_model}'; pack each base separately"
            )
        return sorted({r.name: r for r in records}.values(), key=lambda r: r.name)
    records = core.catalog.list(base_model=base_model)
    if not records:
        raise InvalidParameterError(f"no catalog adapter has base model '{base_model}'; see `adapterhub list --json`")
    return records


def pack(
    core: HubCore,
    base_model: str,
    *,
    adapters: Sequence[str] | None = None,
    pool_size: int | None = None,
    private_budget: float | None = None,
    shards_per_vector: int | None = None,
    seed: int | None = None,
    max_error: float | None = None,
    keep_originals: bool = False,
    repack: bool = False,
) -> dict[str, Any]:
    """Pack the catalog adapters of ``base_model`` into its shared shard pools.

    Args:
        base_model: the base whose adapters are packed (one base per library).
        adapters: pack only these entries (all of ``base_model``); default: every entry of the base.
        pool_size, private_budget, shards_per_vector, seed: as ``shard.pack.pack_library``
            (defaults 256, 0, 1, 0); on an incremental run the library's own (a different value is
            refused unless ``repack``).
        max_error: on an incremental run, the error over which ``PackedLibrary.add`` grows the
            pools (default: the worst error already packed).
        keep_originals: keep the original weight blobs (no storage saved until they are removed).
        repack: pack every adapter of the base again, from its current weights.

    Returns:
        A summary: base, pool blob, the adapters packed now with their errors and digests, stats.

    Raises:
        InvalidParameterError: bad parameters, no adapter of that base.
        IncompatibleAdaptersError: an adapter of another base, or with other module shapes.
        BlobCorruptError: the current library's pool blob cannot be read.
    """
    given = {"pool_size": pool_size, "private_budget": private_budget, "shards_per_vector": shards_per_vector,
             "seed": seed, "max_error": max_error}
    _check_parameters(given)
    records = _select(core, base_model, adapters)
    current, provenance = library_of(core, base_model)
    packed = rows(core.catalog, PACKED)
    mine = current.digest if current is not None else None
    if repack:
        todo = [r for r in records if r.digest not in packed or packed[r.digest].digest == mine]
    else:
        todo = [r for r in records if r.digest not in packed]
    params = _parameters(given, None if current is None or repack else _stored_parameters(provenance))
    if not todo:
        return {"base_model": base_model, "pool_digest": mine, "packed": [], "message": "nothing new to pack"}
    groups: dict[str, list[AdapterRecord]] = {}
    for r in todo:
        groups.setdefault(r.digest, []).append(r)
    first = {digest: group[0].name for digest, group in groups.items()}  # the engine names an adapter by its entry
    sources = {first[d]: load(core, first[d]) for d in sorted(groups)}
    from adapterhub.shard import pack_library

    if current is None or repack:
        library = pack_library(
            sources, pool_size=params["pool_size"], private_budget=params["private_budget"],
            shards_per_vector=params["shards_per_vector"], seed=params["seed"],
        )
        entries: dict[str, Any] = {}
    else:
        library = shard_pools.load_library(core, current.digest, what=f"the library of '{base_model}'", cached=False)
        for name in sorted(sources):
            library.add(name, sources[name], max_error=params["max_error"])
        entries = dict(provenance.get("adapters", {}))
    new: dict[str, tuple[str, int, Any]] = {}  # original digest -> (digest, size, reconstruction)
    for original, name in sorted(first.items()):
        rebuilt = library.unpack(name)
        data = shard_pools.weights_bytes(rebuilt)
        new[original] = (shard_pools.digest_of(data), len(data), rebuilt)
        pa = library.adapters.pop(name)
        library.adapters.setdefault(new[original][0], pa)
        exact = new[original][0] == original  # the engine's error is float noise then: same bytes
        entries[new[original][0]] = {"names": [r.name for r in groups[original]], "original_digest": original,
                                     "original_size": groups[original][0].size, "error": 0.0 if exact else pa.error}
    budget = params["private_budget"]
    record_params = {**params, "private_budget": None if math.isinf(budget) else budget}
    provenance = {"base_model": base_model, "parameters": record_params, "adapters": entries, "previous_pool": mine}
    data = shard_pools.pool_bytes(library, provenance)
    _check_rebuilds(data, {d: size for d, size, _ in new.values()})
    pool_digest, pool_size_bytes = core.blobs.put_bytes(data)
    sizes = {d: row.size for d, row in packed.items() if row.digest == mine}
    sizes.update({d: size for d, size, _ in new.values()})
    try:
        with core.catalog.transaction() as tx:
            _still_current(core, base_model, mine)
            for original, (digest, size, rebuilt) in sorted(new.items()):
                if digest == original:
                    continue
                message = f"shard-pack: pool {pool_digest[:12]}, error {entries[digest]['error']:.3g}"
                for r in groups[original]:
                    revision = tx.add_revision(r.name, digest=digest, size=size, config=rebuilt.config.raw, message=message,
                                               expected_head=r.revision, **content_fields(rebuilt))  # type: ignore[arg-type]
                    tx.add_revision_files(r.name, revision, _carried_files(core, r))
            stale = [d for d, row in packed.items() if row.digest == mine and d not in library.adapters]
            delete_rows(tx, PACKED, stale)
            put_rows(tx, [ArtifactRecord(LIBRARY, base_model, pool_digest, pool_digest, pool_size_bytes)])
            put_rows(tx, [ArtifactRecord(PACKED, d, d, pool_digest, sizes.get(d, 0)) for d in library.adapters])
            put_rows(tx, [ArtifactRecord(ORIGINAL, o, d, d, groups[o][0].size) for o, (d, _, _) in new.items() if d != o])
    except BaseException:
        if pool_digest != mine and not _pool_referenced(core, pool_digest):
            core.blobs.delete(pool_digest)
        raise
    if mine is not None and mine != pool_digest:
        shard_pools.forget(core, mine)
    if not keep_originals:
        _drop_originals(core, {o: d for o, (d, _, _) in new.items()})
    summary = stats(core, base_model)[0]
    summary["packed"] = [
        {"names": entries[d]["names"], "digest": d, "original_digest": o, "error": entries[d]["error"], "exact": d == o}
        for o, (d, _, _) in sorted(new.items())
    ]
    return summary


def _still_current(core: HubCore, base_model: str, expected: str | None) -> None:
    """Inside the write transaction: the base's library is still the one this operation read
    (compare-and-set, as a repo head moves), else nothing is written."""
    found = rows(core.catalog, LIBRARY).get(base_model)
    if (found.digest if found is not None else None) != expected:
        raise CommitConflictError(
            f"the packed library of '{base_model}' changed while this operation ran (another pack or unpack); run it again"
        )


def _carried_files(core: HubCore, record: AdapterRecord) -> list[Any]:
    """The previous head's files (examples, model card) for the new revision, but the weights and
    config as uploaded: the new revision's own are the reconstruction's."""
    from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME
    from adapterhub.store.hub_catalog import revision_files

    files = revision_files(core.catalog, record.name, record.revision)  # type: ignore[arg-type]
    return [f for f in files if f.path not in (WEIGHTS_NAME, CONFIG_NAME)]


def _check_rebuilds(data: bytes, expected: dict[str, int]) -> None:
    """Rebuild every newly packed adapter from the pool bytes as they will be stored: each must
    give the digest the catalog is about to record (a failure here is a bug; nothing is written)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="adapterhub-pack-") as tmp:
        path = Path(tmp) / "pool.safetensors"
        path.write_bytes(data)
        library = shard_pools.parse_pool(path)
        for digest in expected:
            again = shard_pools.digest_of(shard_pools.weights_bytes(library.unpack(digest)))
            if again != digest:
                raise RuntimeError(f"packed adapter {digest} does not rebuild to the same bytes ({again}); not stored")


def _pool_referenced(core: HubCore, pool_digest: str) -> bool:
    return any(row.digest == pool_digest for kind in (LIBRARY, PACKED) for row in rows(core.catalog, kind).values())


def _drop_originals(core: HubCore, replaced: dict[str, str]) -> None:
    """Delete the original weight blobs of adapters just packed, where nothing else needs them:
    an exact pack's blob can be rebuilt (same digest); a lossy pack's original is still needed by
    an entry of another base with the same weights, or by a revision file."""
    heads = head_digests(core.catalog)
    from adapterhub.store.hub_catalog import file_digest_in_use

    for original, digest in replaced.items():
        if digest == original or (original not in heads and not file_digest_in_use(core.catalog, original)):
            core.blobs.delete(original)


def unpack(core: HubCore, name: str) -> dict[str, Any]:
    """Store a packed adapter as a plain blob again and drop it from its packed library.

    Its weights stay the reconstruction (the head's digest does not change). Every other entry
    with the same weights is unpacked with it (they share one blob).

    Raises:
        AdapterNotFoundError: no such entry.
        InvalidParameterError: the entry is not packed.
        BlobCorruptError: its pool cannot be read (it cannot be rebuilt).
    """
    record = core.catalog.get(name)
    row = find_artifact(core.catalog, PACKED, record.digest)
    if row is None:
        raise InvalidParameterError(f"'{name}' is not packed (its weights are a plain blob); nothing to unpack")
    core.blobs.local_path(record.digest)  # rebuilt and checked now; kept, since no row says it is rebuildable
    library_rows = [r for r in rows(core.catalog, LIBRARY).values() if r.digest == row.digest]
    base = library_rows[0].key if library_rows else None
    _, provenance = library_of(core, base) if base else (None, {})
    library = shard_pools.load_library(core, row.digest, what=f"adapter '{name}'", cached=False)
    library.adapters.pop(record.digest, None)
    provenance.get("adapters", {}).pop(record.digest, None)
    pool_digest = None
    if library.adapters and base is not None:
        provenance["previous_pool"] = row.digest
        pool_digest, pool_size = core.blobs.put_bytes(shard_pools.pool_bytes(library, provenance))
    sizes = {d: r.size for d, r in rows(core.catalog, PACKED).items() if r.digest == row.digest}
    try:
        with core.catalog.transaction() as tx:
            if base is not None:
                _still_current(core, base, row.digest)
            delete_rows(tx, PACKED, [record.digest])
            if pool_digest is None:
                delete_rows(tx, PACKED, sizes)
                if base is not None:
                    delete_rows(tx, LIBRARY, [base])
            else:
                put_rows(tx, [ArtifactRecord(LIBRARY, base, pool_digest, pool_digest, pool_size)])  # type: ignore[arg-type]
                put_rows(tx, [ArtifactRecord(PACKED, d, d, pool_digest, sizes.get(d, 0)) for d in library.adapters])
    except BaseException:
        if pool_digest is not None and not _pool_referenced(core, pool_digest):
            core.blobs.delete(pool_digest)
        raise
    shard_pools.forget(core, row.digest)
    return {"name": name, "digest": record.digest, "size": core.blobs.size(record.digest), "pool_digest": pool_digest,
            "names": names_with_digest(core.catalog, record.digest)}


def prune_libraries(core: HubCore) -> list[str]:
    """Forget the libraries none of whose adapters is in the catalog any more (``gc`` calls this
    after pruning the artifact rows of removed content); their pool blobs go with ``gc``.

    Returns:
        The bases whose library was dropped.
    """
    in_use = {r.digest for r in rows(core.catalog, PACKED).values()}
    dead = [base for base, r in rows(core.catalog, LIBRARY).items() if r.digest not in in_use]
    if dead:
        with core.catalog.transaction() as tx:
            delete_rows(tx, LIBRARY, dead)
    return dead


