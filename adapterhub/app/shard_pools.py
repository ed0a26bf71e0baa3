"""Shard pool blobs: a packed library (``shard.pack.PackedLibrary``) as one content-addressed blob.

The blob is a safetensors file: the tensors of ``PackedLibrary.to_tensors`` and, in its header
metadata, the library's JSON metadata (``adapterhub.shard.pack``) and its provenance
(``adapterhub.shard.provenance``: base model, parameters, and for each packed weights digest the
catalog names and original digest it was packed from). No pickle: safetensors and JSON only.

Inside the library each adapter is named by its weights digest (the digest of its reconstruction),
so a blob of a packed adapter is rebuilt from the digest alone, whatever the catalog calls it.

Reading a pool checks it as a blob (it must hash to its digest) and as a library (``from_tensors``
checks every shape and that every index lies in its pool); either failure is one
``BlobCorruptError`` naming the pool and the adapter being read.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.app.core import HubCore
from adapterhub.errors import BlobCorruptError, InvalidAdapterError
from adapterhub.files import sha256_file

if TYPE_CHECKING:  # torch-backed: loaded on use
    from adapterhub.lora import LoraAdapter
    from adapterhub.shard import PackedLibrary

META_KEY = "adapterhub.shard.pack"
PROVENANCE_KEY = "adapterhub.shard.provenance"
_MAX_HEADER = 256 * 1024 * 1024
_CACHED = 2  # libraries kept loaded per process (each read of a packed adapter needs its pool)
_lock = threading.Lock()


def weights_bytes(adapter: LoraAdapter) -> bytes:
    """The canonical safetensors bytes of an adapter (what its blob holds)."""
    return b"".join(adapter.iter_weights_bytes(check_values=True))


def pool_bytes(library: PackedLibrary, provenance: dict[str, Any]) -> bytes:
    """The pool blob's bytes: the library's tensors, its metadata and ``provenance`` in the header."""
    from safetensors.torch import save

    tensors, meta = library.to_tensors()
    # views of one packing buffer share storage, which safetensors refuses: give each its own
    tensors = {k: v.contiguous().clone() for k, v in tensors.items()}
    header = {META_KEY: json.dumps(meta, sort_keys=True), PROVENANCE_KEY: json.dumps(provenance, sort_keys=True)}
    return save(tensors, metadata=header)


def safetensors_header(f: Any, *, max_bytes: int = _MAX_HEADER) -> dict[str, Any]:
    """The JSON header of a safetensors stream open at its start (tensor entries and ``__metadata__``),
    read without the data; a length over ``max_bytes`` is refused before anything is read.

    Raises:
        InvalidAdapterError: truncated, too large, not JSON or not an object.
    """
    head = f.read(8)
    if len(head) != 8:
        raise InvalidAdapterError("truncated safetensors header")
    (n,) = struct.unpack("<Q", head)
    if not 0 < n <= max_bytes:
        raise InvalidAdapterError(f"safetensors header length {n} is outside 1..{max_bytes} bytes")
    try:
        header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidAdapterError(f"safetensors header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise InvalidAdapterError("safetensors header is not an object")
    return header


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(tensor entries, library metadata, provenance)`` from a pool blob's header, no tensor read.

    Raises:
        InvalidAdapterError: not a pool blob (bad header, no library metadata).
    """
    with open(path, "rb") as f:
        header = safetensors_header(f)
    extra = header.pop("__metadata__", None) or {}
    try:
        meta, provenance = json.loads(extra[META_KEY]), json.loads(extra.get(PROVENANCE_KEY, "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidAdapterError(f"not a shard pool blob (no valid '{META_KEY}' metadata: {e})") from None
    return header, meta, provenance


def tensor_bytes(entries: dict[str, Any], prefix: str) -> int:
    """Bytes of the tensors whose names start with ``prefix``, from the header's data offsets."""
    total = 0
    for key, entry in entries.items():
        if key.startswith(prefix) and isinstance(entry, dict):
            start, end = entry.get("data_offsets", (0, 0))
            total += int(end) - int(start)
    return total


def parse_pool(path: Path) -> PackedLibrary:
    """The packed library in a pool file, checked by ``from_tensors`` (not its hash: see ``load_library``).

    Raises:
        InvalidAdapterError: not a pool file, unreadable tensors, a wrong shape, an index outside its pool.
    """
    from safetensors import safe_open

    from adapterhub.shard import PackedLibrary

    _, meta, _ = read_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise InvalidAdapterError(f"unreadable safetensors data ({type(e).__name__}: {e})") from None
    return PackedLibrary.from_tensors(tensors, meta)


def _who(what: str | None) -> str:
    return f" (needed to rebuild {what})" if what else ""


def load_library(core: HubCore, pool_digest: str, *, what: str | None = None, cached: bool = True) -> PackedLibrary:
    """The packed library stored as blob ``pool_digest``, checked (hash, shapes, index ranges).

    Args:
        what: what the caller is rebuilding, named in errors ("adapter 'acme/a'").
        cached: share one loaded copy per process (reads); ``False`` for a private copy to modify.

    Raises:
        BlobCorruptError: the pool blob is missing, does not hash to its digest, or is not a valid
            packed library (a missing tensor, a wrong shape, an index outside its pool).
    """
    if cached:
        with _lock:
            found = core.shard_libraries.get(pool_digest)
        if found is not None:
            return found
    try:
        path = core.blobs.local_path(pool_digest)  # fetched first from object storage
        actual, _ = sha256_file(path)
    except FileNotFoundError:
        raise BlobCorruptError(
            f"shard pool blob {pool_digest} is missing{_who(what)}; restore it from a backup, or remove and re-add "
            "the adapters packed in it"
        ) from None
    if actual != pool_digest:
        raise BlobCorruptError(
            f"shard pool blob {pool_digest} is corrupt (hashes to {actual}){_who(what)}; run `adapterhub verify`, "
            "restore the blob from a backup, or remove and re-add the adapters packed in it"
        )
    try:
        library = parse_pool(path)
    except InvalidAdapterError as e:
        raise BlobCorruptError(f"shard pool blob {pool_digest} is not a valid packed library{_who(what)}: {e}") from None
    if cached:
        with _lock:
            while len(core.shard_libraries) >= _CACHED:
                core.shard_libraries.pop(next(iter(core.shard_libraries)))
            core.shard_libraries[pool_digest] = library
    return library


def forget(core: HubCore, pool_digest: str) -> None:
    """Drop a loaded library from the process cache (its blob was replaced)."""
    with _lock:
        core.shard_libraries.pop(pool_digest, None)


def rebuild(core: HubCore, digest: str, pool_digest: str, *, what: str | None = None) -> bytes:
    """The weights bytes of packed adapter ``digest`` rebuilt from its pool (not checked here:
    ``BlobStore`` checks them against ``digest`` when it stores them).

    Raises:
        BlobCorruptError: the pool is missing, corrupt or does not hold ``digest``.
    """
    library = load_library(core, pool_digest, what=what)
    if digest not in library.adapters:
        raise BlobCorruptError(f"shard pool blob {pool_digest} does not hold weights {digest}{_who(what)}")
    return weights_bytes(library.unpack(digest))


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
