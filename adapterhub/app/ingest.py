"""The one write path: a blob, its catalog rows, metrics, lineage and extra files, all or nothing.

Every way an adapter enters the catalog (``add``, ``merge``, ``train``, ``pull``, a hub commit)
ends here. The order of writes is what makes it crash-safe: blobs are written (atomically) first,
then every row that points to them is committed in ONE catalog transaction. A crash or an error at
any step leaves at worst unreferenced blobs (removed here on error, by ``gc`` after a crash), never
a row without its blob, and never a revision without its metrics or its extra files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from adapterhub.app import examples as example_files
from adapterhub.app.core import HubCore
from adapterhub.errors import (
    AdapterExistsError,
    BlobCorruptError,
    CommitConflictError,
    InvalidAdapterError,
    InvalidParameterError,
)
from adapterhub.files import CHUNK, atomic_write, sha256_file
from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME, AdapterConfig
from adapterhub.names import validate_name
from adapterhub.store import AdapterRecord, LineageRecord, MetricRecord, RevisionFileRecord
from adapterhub.store.hub_catalog import file_digest_in_use
from adapterhub.store.records import normalise_tags

if TYPE_CHECKING:  # torch-backed: loaded on use, so catalog-only commands start fast
    from adapterhub.lora import LoraAdapter


@dataclass(frozen=True, slots=True)
class ExtraFile:
    """A file stored beside a revision's weights (a model card, a tokenizer file, ...).

    ``local_path`` is where its bytes are now (a received upload), or ``None`` when a blob with
    ``digest`` is already stored (a file carried over from the previous head).
    """

    path: str
    digest: str
    size: int
    local_path: Path | None = None


@dataclass(frozen=True, slots=True)
class Description:
    """What the catalog says about an entry besides its weights; a new revision may replace it."""

    task: str | None = None
    tags: Sequence[str] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class StoredWeights:
    """Weights already stored under their canonical digest (``received_weights``); ``file_sha256``:
    of the file as received, which a model card may name instead of the canonical digest."""

    digest: str
    size: int
    file_sha256: str


def summarise_targets(adapter: LoraAdapter) -> list[str]:
    """Target modules as users name them (last path component), from the tensors actually present."""
    return sorted({path.rsplit(".", 1)[-1] for path in adapter.module_paths})


def _weights_chunks(adapter: LoraAdapter) -> Iterator[bytes]:
    """The canonical safetensors bytes, with each tensor's values checked as it streams by."""
    return adapter.iter_weights_bytes(check_values=True)


def blob_referenced(core: HubCore, digest: str) -> bool:
    """Whether any revision or revision file points at this blob (then it must stay)."""
    return core.catalog.digest_in_use(digest) or file_digest_in_use(core.catalog, digest)


def _kept_files(
    adapter: LoraAdapter, weights_digest: str, files: Sequence[ExtraFile], served: Sequence[ExtraFile]
) -> list[ExtraFile]:
    """The extra files plus each served adapter file whose bytes are not the canonical ones.

    A hub returns exactly the bytes it was given: uploaded weights (or config) that differ from
    what ``export`` would write are kept under their own path, and the hub serves them in place
    of the canonical file; identical ones need no second blob.
    """
    config_digest = hashlib.sha256(adapter.config.to_json().encode()).hexdigest()
    canonical = {WEIGHTS_NAME: weights_digest, CONFIG_NAME: config_digest}
    return [*files, *(f for f in served if f.digest != canonical.get(f.path))]


@contextmanager
def _stored_blobs(
    core: HubCore,
    adapter: LoraAdapter,
    files: Sequence[ExtraFile],
    served: Sequence[ExtraFile] = (),
    weights: StoredWeights | None = None,
) -> Iterator[tuple[str, int, list[ExtraFile]]]:
    """Write the weights' and extra files' blobs; yields (weights digest, size, files to record).

    ``weights``: the weights blob is already stored (``received_weights``, which also removes it
    again if the commit fails); it is not written a second time.

    ``served``: the adapter files as received (see ``_kept_files``); only those that differ from
    the canonical bytes are stored and recorded.

    If the block raises (the rows were not committed), blobs that nothing references are deleted
    again, so a refused commit leaves the store as it was. Not after a lost race for the head
    (``CommitConflictError``, ``AdapterExistsError``): the commit is retried with the same files,
    and a concurrent commit of the same bytes may be about to reference them (``gc`` removes
    what nobody took, after its grace period).
    """
    written: list[str] = []

    def put(stored: Sequence[ExtraFile]) -> None:
        for f in stored:
            if f.local_path is not None and not core.blobs.has(f.digest):
                core.blobs.put_file(f.local_path, f.digest)
                written.append(f.digest)

    try:
        put(files)
        if weights is not None:
            digest, size = weights.digest, weights.size
        else:
            with core.blobs.writer() as writer:
                for chunk in _weights_chunks(adapter):
                    writer.write(chunk)
            digest, size = writer.digest, writer.size
            written.append(digest)
        kept = _kept_files(adapter, digest, files, served)
        put(kept[len(files) :])  # the uploaded adapter files, once the canonical digest is known
        yield digest, size, kept
    except (CommitConflictError, AdapterExistsError):
        raise
    except BaseException:
        for digest in written:
            if not blob_referenced(core, digest):
                core.blobs.delete(digest)
        raise


def _fsync_path(path: Path) -> None:
    """Flush a file's dirty pages; best effort (durability itself comes from the blob's own fsync)."""
    with suppress(OSError):  # e.g. platforms that fsync only writable descriptors
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _store_received(core: HubCore, adapter: LoraAdapter, path: Path, check: Callable[[str], None]) -> StoredWeights:
    """Read ``path`` once (hash, check, canonical digest) and store its canonical bytes; see ``received_weights``.

    The received file is flushed to disk on a side thread while it is read. Why: a linked blob
    *is* that file and must be durable before a row points at it, so its flush (0.04 s for 100 MB
    here) overlaps the scan instead of following it; and before a second copy is written the
    download's ~100 MB of dirty pages are written back first, so the two do not compete.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsync") as pool:
        flushed = pool.submit(_fsync_path, path)
        layout = adapter.canonical_layout()
        if layout is None:  # data not laid out canonically: hash the file, then rewrite it tensor by tensor
            file_sha256, _ = sha256_file(path)
            check(file_sha256)
            flushed.result()
            with core.blobs.writer() as writer:
                for chunk in _weights_chunks(adapter):
                    writer.write(chunk)
            return StoredWeights(writer.digest, writer.size, file_sha256)
        if layout.is_canonical:  # the file is the blob: hash it, then link it (copy where links fail)
            scan = adapter.scan_file(layout)
            check(scan.file_sha256)
            flushed.result()
            if not core.blobs.link_file(path, scan.digest):
                core.blobs.put_file(path, scan.digest)
            return StoredWeights(scan.digest, scan.size, scan.file_sha256)
        flushed.result()  # before writing a second copy: see above
        tmp = core.blobs.temp_file()  # only the header differs: canonical header + a kernel copy of the data
        try:
            adapter.write_canonical_copy(layout, tmp)
            scan = adapter.scan_file(layout, copy=tmp)  # what is checked is what is stored
            check(scan.file_sha256)
            core.blobs.adopt(tmp, scan.digest)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredWeights(scan.digest, scan.size, scan.file_sha256)


@contextmanager
def received_weights(
    core: HubCore, adapter: LoraAdapter, path: Path, *, expected_sha256: str | None, what: str
) -> Iterator[StoredWeights]:
    """Check a received weights file and store its canonical bytes, reading it (nearly) once.

    For a pull: ``path`` is the downloaded ``adapter_model.safetensors`` (``adapter`` opened on it
    with ``validate=False``). One read hashes the file (checked against ``expected_sha256``, the
    hub's LFS oid, before anything is stored), computes the canonical digest, checks every value
    and stores the canonical bytes: a file that already is canonical is hard-linked into the store
    (stored once, not copied), one whose header alone differs is written as canonical header +
    its data. Pass the yielded ``StoredWeights`` to ``store_new``/``store_revision`` inside the
    block: blobs first, then the one transaction, as everywhere. If the block raises, the blob is
    removed again unless something references it (not after a lost race, as in ``_stored_blobs``).

    Raises:
        InvalidAdapterError: the file does not hash to ``expected_sha256`` (the message names
            ``what``), or a tensor holds NaN or Inf; nothing is stored then.
    """

    def check(file_sha256: str) -> None:
        if expected_sha256 is not None and file_sha256 != expected_sha256:
            raise InvalidAdapterError(
                f"{what} does not hash to the sha256 the hub lists (truncated or corrupted download); pull again"
            )

    weights = _store_received(core, adapter, path, check)  # raises with nothing stored
    try:
        yield weights
    except (CommitConflictError, AdapterExistsError):
        raise
    except BaseException:
        if not blob_referenced(core, weights.digest):
            core.blobs.delete(weights.digest)
        raise


def content_fields(adapter: LoraAdapter) -> dict[str, object]:
    """The catalog columns that follow an adapter's content (they change with each revision)."""
    ranks = adapter.ranks()
    return {
        "rank": max(ranks.values()),
        "alpha": adapter.config.lora_alpha,
        "ranks": ranks if len(set(ranks.values())) > 1 else None,
        "target_modules": summarise_targets(adapter),
        "base_model": adapter.base_model,
    }


def store_new(
    core: HubCore,
    adapter: LoraAdapter,
    name: str,
    *,
    about: Description = Description(),
    lineage: Sequence[LineageRecord] = (),
    metrics: Sequence[MetricRecord] = (),
    files: Sequence[ExtraFile] = (),
    served: Sequence[ExtraFile] = (),
    weights: StoredWeights | None = None,
    operation: str = "import",
    source: str | None = None,
    source_repo: str | None = None,
    source_revision: str | None = None,
) -> AdapterRecord:
    """Store ``adapter`` as the new entry ``name``: blobs first, then every row in one transaction.

    ``operation`` and ``source`` become the first revision's message ("import: ./my-lora"), so
    ``show`` tells where an entry came from even when it has no parents. ``served``: the adapter
    files as a hub commit received them, kept beside the canonical blob when their bytes differ.
    ``weights``: the weights are already stored (``received_weights``); they are not rewritten.

    Raises:
        InvalidNameError, AdapterExistsError, InvalidParameterError (tags), InvalidAdapterError
        (non-finite values, found while the blob is written).
    """
    validate_name(name)
    if core.catalog.exists(name):
        raise AdapterExistsError(name)
    tags = list(normalise_tags(about.tags))  # checked before any blob is written
    with _stored_blobs(core, adapter, files, served, weights) as (digest, size, kept):
        record = AdapterRecord(
            name=name,
            task=about.task,
            tags=tags,
            description=about.description or "",
            digest=digest,
            size=size,
            config=adapter.config.raw,
            source_repo=source_repo,
            source_revision=source_revision,
            created=datetime.now(timezone.utc),
            **content_fields(adapter),  # type: ignore[arg-type]
        )
        with core.catalog.transaction() as tx:
            stored = tx.add(record, lineage, message=f"{operation}: {source}" if source else operation)
            for m in metrics:
                tx.add_metric(name, task=m.task, split=m.split, metric=m.metric, value=m.value, extra=m.extra)
            tx.add_revision_files(name, stored.revision, [RevisionFileRecord(f.path, f.digest, f.size) for f in kept])
        return stored


def store_revision(
    core: HubCore,
    name: str,
    adapter: LoraAdapter,
    *,
    message: str,
    expected_head: str | None = None,
    about: Description | None = None,
    metrics: Sequence[MetricRecord] = (),
    files: Sequence[ExtraFile] = (),
    served: Sequence[ExtraFile] = (),
    weights: StoredWeights | None = None,
    source_repo: str | None = None,
    source_revision: str | None = None,
) -> str:
    """Store ``adapter`` as the new head revision of ``name``, with its files, in one transaction.

    ``about`` (when given) replaces the entry's task, tags and description in the same transaction.
    ``expected_head``: the revision this one is built on; the head moves only if it still is
    (``CatalogWriter.add_revision``), else nothing is written. ``served``, ``weights``: as in
    ``store_new``.

    Returns:
        The new revision id.

    Raises:
        CommitConflictError: the head is no longer ``expected_head``.
    """
    tags = list(normalise_tags(about.tags)) if about is not None else None
    with _stored_blobs(core, adapter, files, served, weights) as (digest, size, kept):
        extra = {"source_repo": source_repo} if source_repo is not None else {}
        with core.catalog.transaction() as tx:
            revision = tx.add_revision(
                name,
                digest=digest,
                size=size,
                config=adapter.config.raw,
                message=message,
                expected_head=expected_head,
                source_revision=source_revision,
                **content_fields(adapter),  # type: ignore[arg-type]
                **extra,
            )
            if about is not None:
                tx.update(name, tags=tags, task=about.task or "", description=about.description)
            for m in metrics:
                tx.add_metric(name, task=m.task, split=m.split, metric=m.metric, value=m.value, extra=m.extra)
            tx.add_revision_files(name, revision, [RevisionFileRecord(f.path, f.digest, f.size) for f in kept])
        return revision


# ---------------------------------------------------------------------- the facade's methods


def add(
    core: HubCore,
    path: str | Path,
    name: str,
    *,
    task: str | None = None,
    tags: Sequence[str] = (),
    base_model: str | None = None,
    description: str | None = None,
    examples: str | Path | None = None,
) -> AdapterRecord:
    """Import a PEFT adapter folder under ``name``.

    The folder is read once: its structure (config, keys, shapes, ranks) is checked on opening,
    its values (finite) while the canonical blob is written. The adapter's example inputs (for
    routing) come from ``examples``, or from the folder's ``adapterhub_examples.jsonl``; they are
    checked, then kept as a file of the revision.

    Raises:
        InvalidNameError, AdapterExistsError, InvalidAdapterError, UnsupportedAdapterError,
        InvalidParameterError (an examples file that is not ``{"text": ...}`` lines, or too many).
    """
    validate_name(name)
    if core.catalog.exists(name):
        raise AdapterExistsError(name)
    from adapterhub.lora import LoraAdapter

    files = examples_files(Path(path), examples)
    adapter = LoraAdapter.load(path, validate=False)
    if base_model:
        adapter = adapter.with_config(adapter.config.with_updates(base_model_name_or_path=base_model))
    about = Description(task=task, tags=tags, description=description or "")
    return store_new(core, adapter, name, about=about, files=files, operation="import", source=str(path))


def examples_files(folder: Path | None, source: str | Path | None) -> list[ExtraFile]:
    """The examples file to keep with an adapter (``source``, else ``folder``'s), checked; [] if none."""
    found = example_files.read_examples_file(folder, source)
    return [ExtraFile(example_files.EXAMPLES_FILE, found[1], found[2], found[0])] if found is not None else []


def add_adapter(
    core: HubCore,
    adapter: LoraAdapter,
    name: str,
    *,
    task: str | None = None,
    tags: Sequence[str] = (),
    description: str | None = None,
    lineage: Sequence[LineageRecord] = (),
    metrics: Sequence[MetricRecord] = (),
    operation: str = "import",
    source: str | None = None,
    examples: str | Path | None = None,
) -> AdapterRecord:
    """Store an in-memory or on-disk adapter (e.g. an engine's output) with its lineage and metrics
    (and its example inputs for routing, from an ``adapterhub_examples.jsonl`` file)."""
    about = Description(task=task, tags=tags, description=description or "")
    files = examples_files(None, examples) if examples is not None else []
    return store_new(
        core, adapter, name, about=about, lineage=lineage, metrics=metrics, files=files, operation=operation,
        source=source,
    )


def add_metrics(core: HubCore, name: str, metrics: Mapping[str, float], *, task: str, split: str = "test") -> None:
    """Record measured numbers on ``name`` (one transaction)."""
    with core.catalog.transaction() as tx:
        for metric, value in metrics.items():
            tx.add_metric(name, task=task, split=split, metric=metric, value=float(value))


def load(core: HubCore, name: str, *, verify: bool = False) -> LoraAdapter:
    """The stored adapter, read lazily from its blob (``verify``: re-hash the blob first).

    A packed adapter's blob is rebuilt from its shard pool first when it is missing
    (``BlobStore.local_path``; ``BlobCorruptError`` naming the adapter and pool if it cannot be).
    """
    record = core.catalog.get(name)
    path = core.blobs.local_path(record.digest)  # a packed adapter's weights are rebuilt here
    if verify and not core.blobs.verify(record.digest):
        raise BlobCorruptError(
            f"blob of '{name}' does not match its digest {record.digest}; the blob store is corrupt"
        )
    from adapterhub.lora import LoraAdapter

    return LoraAdapter.from_files(AdapterConfig(record.config), path, validate=False)


def _check_export_folder(folder: Path, *, force: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise InvalidParameterError(f"cannot export into '{folder}': it is a file; name a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise InvalidParameterError(
            f"'{folder}' is not empty; export into a new folder, or pass --force (force=True) to overwrite "
            f"its {CONFIG_NAME} and {WEIGHTS_NAME}"
        )


def export(core: HubCore, name: str, folder: str | Path, *, force: bool = False) -> Path:
    """Write ``name`` as a PEFT folder that ``PeftModel.from_pretrained`` loads.

    The weights are copied from the blob while hashing, and the copy is only renamed into place
    if it matches the digest, so a corrupt blob is reported, never exported. A non-empty folder is
    refused unless ``force`` (then only the adapter files are replaced). The adapter's example
    inputs (``adapterhub_examples.jsonl``), if it has any, are written too.

    Raises:
        AdapterNotFoundError, InvalidParameterError, BlobCorruptError.
    """
    record = core.catalog.get(name)
    folder = Path(folder)
    _check_export_folder(folder, force=force)
    folder.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with atomic_write(folder / WEIGHTS_NAME) as out, core.blobs.open(record.digest) as src:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
        if h.hexdigest() != record.digest:
            raise BlobCorruptError(
                f"blob of '{name}' hashes to {h.hexdigest()}, not {record.digest}; the blob store is corrupt"
            )
    with atomic_write(folder / CONFIG_NAME, "w") as f:
        f.write(AdapterConfig(record.config).to_json())
    example_files.write_examples(core, name, folder)
    return folder
