"""The read side of packed libraries (``shards`` writes them): rebuilding a packed adapter's
weights, what ``show``, ``stats``, ``gc`` and ``verify`` need to know about them.

Everything here reads; nothing writes rows. ``materialise`` is ``BlobStore.materialiser`` (set by
``AdapterHub``): the weights blob of a packed adapter, rebuilt from its pool blob on a read miss.
"""

from __future__ import annotations

from typing import Any

from adapterhub.app import shard_pools
from adapterhub.app.core import HubCore
from adapterhub.errors import InvalidParameterError
from adapterhub.store import AdapterRecord
from adapterhub.store.artifacts import ArtifactRecord, find_artifact
from adapterhub.store.shard_rows import LIBRARY, ORIGINAL, PACKED, head_digests, names_with_digest, rows


def library_of(core: HubCore, base_model: str) -> tuple[ArtifactRecord | None, dict[str, Any]]:
    """The library row of a base (or None) and its provenance (read from the pool blob's header)."""
    row = rows(core.catalog, LIBRARY).get(base_model)
    if row is None:
        return None, {}
    try:
        _, _, provenance = shard_pools.read_header(core.blobs.local_path(row.digest))
    except (OSError, ValueError):  # missing or corrupt: reads say so when they load it
        provenance = {}
    return row, provenance


def materialise(core: HubCore, digest: str) -> bytes | None:
    """``BlobStore.materialiser``: the weights of a packed adapter rebuilt from its pool, or None
    when ``digest`` is not a packed adapter's."""
    row = find_artifact(core.catalog, PACKED, digest)
    if row is None:
        return None
    names = names_with_digest(core.catalog, digest)
    what = f"adapter '{names[0]}'" if names else f"weights {digest}"
    return shard_pools.rebuild(core, digest, row.digest, what=what)


def rebuildable_digests(core: HubCore) -> set[str]:
    """Blobs ``gc`` may drop although rows reference them: packed adapters' weights (rebuilt on
    the next read) and the originals a lossy pack replaced (no head needs them any more)."""
    originals = set(rows(core.catalog, ORIGINAL)) - head_digests(core.catalog)
    return set(rows(core.catalog, PACKED)) | originals


def pool_digests(core: HubCore) -> set[str]:
    """The pool blobs of every packed library (``gc`` keeps them and their rows)."""
    return {r.digest for r in rows(core.catalog, LIBRARY).values()}


def storage(core: HubCore, record: AdapterRecord) -> dict[str, Any]:
    """How an entry's weights are stored, for ``show``: a plain blob, or packed (pool, error, bytes)."""
    row = find_artifact(core.catalog, PACKED, record.digest)
    materialised = core.blobs.has(record.digest)
    if row is None:
        return {"packed": False, "blob_stored": materialised, "bytes": record.size}
    info: dict[str, Any] = {"packed": True, "pool_digest": row.digest, "materialised": materialised,
                            "bytes": {"reconstructed": record.size}}
    try:
        entries, meta, provenance = shard_pools.read_header(core.blobs.local_path(row.digest))
    except (OSError, ValueError) as e:
        info["pool_error"] = f"pool blob unreadable: {e}"
        return info
    info["bytes"]["pool_blob"] = core.blobs.size(row.digest)
    for j, entry in enumerate(meta.get("adapters", [])):
        if entry.get("name") == record.digest:
            info["error"] = entry.get("error")
            info["bytes"]["own"] = shard_pools.tensor_bytes(entries, f"a{j}.")
            info["bytes"]["original_factors"] = entry.get("factor_bytes")
    about = provenance.get("adapters", {}).get(record.digest, {})
    info["error"] = about.get("error", info.get("error"))
    info["original_digest"] = about.get("original_digest")
    info["exact"] = about.get("original_digest") == record.digest
    info["base_model"] = provenance.get("base_model")
    info["parameters"] = provenance.get("parameters")
    return info


def stats(core: HubCore, base_model: str | None = None) -> list[dict[str, Any]]:
    """Per packed library: adapters, bytes packed vs unpacked, ratio, mean and max error.

    Raises:
        InvalidParameterError: ``base_model`` given and nothing of it is packed.
        BlobCorruptError: a pool blob cannot be read.
    """
    libraries = rows(core.catalog, LIBRARY)
    if base_model is not None:
        if base_model not in libraries:
            raise InvalidParameterError(f"nothing of base '{base_model}' is packed; run `adapterhub shard pack --base {base_model}`")
        libraries = {base_model: libraries[base_model]}
    answer = []
    for base, row in sorted(libraries.items()):
        library = shard_pools.load_library(core, row.digest, what=f"the library of '{base}'")
        s = library.stats()
        _, _, provenance = shard_pools.read_header(core.blobs.local_path(row.digest))
        errors = list(s.errors.values())
        names = sorted(n for d in library.adapters for n in names_with_digest(core.catalog, d))
        answer.append({
            "base_model": base, "pool_digest": row.digest, "pool_blob_bytes": row.size, "adapters": len(library.adapters),
            "names": names, "bytes_packed": s.total_packed_bytes, "bytes_unpacked": s.unpacked_bytes, "ratio": s.ratio,
            "mean_error": s.mean_error, "max_error": max(errors, default=0.0), "packed_bytes": dict(s.packed_bytes),
            "parameters": provenance.get("parameters", {}),
            "materialised": sum(core.blobs.has(d) for d in library.adapters),
        })
    return answer


def verify_packed(core: HubCore) -> dict[str, Any]:
    """Rebuild every packed adapter (without storing it) and check it hashes to its digest.

    Returns:
        ``{"checked": n, "failed": [{"digest", "names", "pool_digest", "error"}]}``.
    """
    from adapterhub.errors import AdapterHubError

    failed = []
    packed = rows(core.catalog, PACKED)
    for digest, row in sorted(packed.items()):
        names = names_with_digest(core.catalog, digest)
        try:
            actual = shard_pools.digest_of(shard_pools.rebuild(core, digest, row.digest, what=", ".join(names) or None))
            problem = None if actual == digest else f"rebuilds to {actual}"
        except AdapterHubError as e:
            problem = str(e)
        if problem is not None:
            failed.append({"digest": digest, "names": names, "pool_digest": row.digest, "error": problem})
    return {"checked": len(packed), "failed": failed}
