"""The hub server's repo operations: create, list, describe a revision, history, receive a commit, delete.

A repo on this hub is a catalog entry: its commits are the entry's revisions, its weights and
config come from the revision, other files (a model card, tokenizer files) are blobs attached to
the revision. A received commit is validated whole and stored through ``ingest`` in one
transaction, so a revision is visible with all its files or not at all.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adapterhub.app.cards import card_description, card_metrics, read_card
from adapterhub.app.core import HubCore
from adapterhub.app.ingest import ExtraFile, store_new, store_revision
from adapterhub.errors import (
    AdapterExistsError,
    AdapterNotFoundError,
    BlobNotFoundError,
    CommitConflictError,
    EntryNotFoundError,
    HubRevisionNotFoundError,
    InvalidAdapterError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from adapterhub.hubformat import (
    DEFAULT_MAX_UPLOAD_BYTES,
    README_NAME,
    HubFile,
    HubSnapshot,
    StagedFile,
    UploadStaging,
    apply_commit,
    check_allowed_file,
    render_card,
)
from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME, AdapterConfig
from adapterhub.names import validate_name
from adapterhub.store import RevisionRecord, hub_catalog
from adapterhub.store.revision_ids import HEAD_ALIASES

_ADAPTER_FILES = (CONFIG_NAME, WEIGHTS_NAME)


def create_repo(core: HubCore, repo_id: str, *, private: bool = False) -> bool:
    """Create an (empty) hub repo; False when a repo or catalog entry of that id exists."""
    validate_name(repo_id)
    if core.catalog.exists(repo_id):
        return False
    return hub_catalog.create_repo(core.catalog, repo_id, private=private)


def repo_private(core: HubCore, repo_id: str) -> bool:
    """Whether the repo is private. Raises ``RepoNotFoundError`` when there is no such repo."""
    repo = hub_catalog.get_repo(core.catalog, repo_id)
    if repo is None and not core.catalog.exists(repo_id):
        raise RepoNotFoundError(repo_id)
    return bool(repo and repo.private)


def private_repos(core: HubCore) -> set[str]:
    """Names of private repos (the server hides them from readers without a token)."""
    return hub_catalog.private_repo_names(core.catalog)


@dataclass(frozen=True, slots=True)
class RepoSummary:
    """One repo as ``list_models`` lists it; ``revision`` is None for an empty repo."""

    repo_id: str
    private: bool
    revision: str | None
    created: datetime | None
    base_model: str | None
    tags: tuple[str, ...]


def list_repos(
    core: HubCore,
    *,
    search: str | None = None,
    author: str | None = None,
    tags: Sequence[str] = (),
    library: str | None = None,
) -> list[RepoSummary]:
    """Repos matching every filter, by id (``HfApi.list_models``); private ones included.

    Args:
        search: a case-insensitive substring of the repo id, as on the HF hub.
        author: the namespace.
        tags: every one must be among the repo's tags (``peft``, ``lora``, the catalog tags and
            ``base_model:<id>``), as the hub's ``filter``.
        library: ``peft`` (every repo here is a PEFT adapter) or nothing matches.

    The server hides private repos that the caller may not read.
    """
    if library is not None and library.lower() != "peft":
        return []
    created_repos = {r.name: r for r in hub_catalog.list_repos(core.catalog)}
    found: dict[str, RepoSummary] = {}
    for record in core.catalog.list():
        repo = created_repos.get(record.name)
        repo_tags = ("peft", "lora", *record.tags, *((f"base_model:{record.base_model}",) if record.base_model else ()))
        found[record.name] = RepoSummary(
            record.name, bool(repo and repo.private), record.revision, record.created, record.base_model, repo_tags
        )
    for name, repo in created_repos.items():
        found.setdefault(name, RepoSummary(name, repo.private, None, repo.created, None, ("peft", "lora")))
    needle = (search or "").lower()
    return [
        summary
        for name, summary in sorted(found.items())
        if needle in name.lower()
        and (author is None or name.split("/", 1)[0] == author)
        and all(tag in summary.tags for tag in tags)
    ]


def commits(core: HubCore, repo_id: str, revision: str = "main") -> list[RevisionRecord]:
    """The commits reachable from ``revision``, newest first (``HfApi.list_repo_commits``).

    Raises:
        RepoNotFoundError, HubRevisionNotFoundError (also for an empty repo: it has no commit yet).
    """
    repo_private(core, repo_id)
    if not core.catalog.exists(repo_id):
        raise HubRevisionNotFoundError(repo_id, revision, " (the repo is empty: nothing was committed yet)")
    try:
        start = core.catalog.get_revision(repo_id, revision)
    except RevisionNotFoundError:
        raise HubRevisionNotFoundError(repo_id, revision) from None
    by_id = {r.revision: r for r in core.catalog.revisions(repo_id)}
    history: list[RevisionRecord] = []
    current: RevisionRecord | None = start
    while current is not None and len(history) < len(by_id):  # the bound guards against a cycle
        history.append(current)
        current = by_id.get(current.parent_revision) if current.parent_revision else None
    return history


def head(core: HubCore, repo_id: str) -> str | None:
    """The head commit of a repo (its one branch, ``main``); None for an empty repo.

    Raises:
        RepoNotFoundError.
    """
    repo_private(core, repo_id)
    try:
        return core.catalog.get_revision(repo_id).revision
    except AdapterNotFoundError:
        return None


def delete_repo(core: HubCore, repo_id: str) -> None:
    """Delete a repo: its catalog entry (revisions, files, metrics, tags) and its hub row, in one
    transaction (``HfApi.delete_repo``). Its blobs stay until ``gc``: a concurrent download may
    still be streaming them, and other entries may share them.

    Raises:
        RepoNotFoundError.
    """
    validate_name(repo_id)
    repo_private(core, repo_id)
    with core.catalog.transaction() as tx:
        if tx.exists(repo_id):
            tx.remove(repo_id)
        hub_catalog.forget_repo(core.catalog, repo_id)  # joins the transaction


def referenced_digests(core: HubCore) -> set[str]:
    """Blobs the hub's revision files reference (``gc`` and ``verify`` must keep these)."""
    return hub_catalog.referenced_file_digests(core.catalog)


def _generated(path: str, content: bytes) -> HubFile:
    return HubFile(path, len(content), hashlib.sha256(content).hexdigest(), content=content)


def _blob_path(core: HubCore, digest: str, *, fetch: bool = True) -> Path:
    """Where a file's blob is on this machine; a packed adapter's weights are rebuilt first. A blob
    that is simply missing keeps its path: ``resolve`` reports it when the file is asked for.

    With ``fetch=False`` a blob in object storage is not downloaded: ``resolve`` redirects clients
    to the bucket for large files, so a replica never needs their bytes to list or serve them.
    """
    if core.blobs.remote and not fetch:
        return core.blobs.path(digest)
    try:
        return core.blobs.local_path(digest)
    except BlobNotFoundError:
        return core.blobs.path(digest)


def _nameable_parents(core: HubCore, repo_id: str, private: bool, lineage: Sequence[Any]) -> list[Any]:
    """The parents a generated card may name: every reader of the repo gets the same card, so a
    private parent is named only in a private repo of its own namespace (whose readers may read
    it); otherwise it is left out, as the ``/v1`` lineage hides it from readers who may not."""
    hidden = private_repos(core)
    namespace = repo_id.split("/", 1)[0]
    return [p for p in lineage if p.parent_name not in hidden
            or (private and p.parent_name.split("/", 1)[0] == namespace)]


def snapshot(core: HubCore, repo_id: str, revision: str = "main") -> HubSnapshot:
    """The files of one revision of a repo, as the hub server serves them.

    ``adapter_config.json`` and ``adapter_model.safetensors`` are the bytes the commit uploaded:
    a revision file of that path when they differed from the canonical ones (the catalog's digest
    and config), else generated from the revision itself; other files come from the revision's
    files; without a stored ``README.md`` a model card is generated from the catalog entry as it
    is now.

    Raises:
        RepoNotFoundError, HubRevisionNotFoundError.
    """
    private = repo_private(core, repo_id)
    if not core.catalog.exists(repo_id):
        raise HubRevisionNotFoundError(repo_id, revision, " (the repo is empty: nothing was committed yet)")
    try:
        rev = core.catalog.get_revision(repo_id, revision)
    except RevisionNotFoundError:
        raise HubRevisionNotFoundError(repo_id, revision) from None
    files = {
        CONFIG_NAME: _generated(CONFIG_NAME, AdapterConfig(rev.config).to_json().encode()),
        WEIGHTS_NAME: HubFile(WEIGHTS_NAME, rev.size, rev.digest, blob_path=_blob_path(core, rev.digest, fetch=False)),
    }
    for f in hub_catalog.revision_files(core.catalog, repo_id, rev.revision):  # uploaded bytes win
        lfs = HubFile(f.path, f.size, f.digest).lfs  # small files are read here (git oid, cards)
        files[f.path] = HubFile(f.path, f.size, f.digest, blob_path=_blob_path(core, f.digest, fetch=not lfs))
    if README_NAME not in files:
        record = core.catalog.get(repo_id)
        lineage = _nameable_parents(core, repo_id, private, core.catalog.lineage(repo_id))
        card = render_card(record, lineage, core.catalog.metrics(repo_id))
        files[README_NAME] = _generated(README_NAME, card.encode())
    return HubSnapshot(repo_id, rev.revision, rev.created, private, dict(sorted(files.items())), rev.message)


def staging(core: HubCore, *, max_bytes: int | None = None) -> UploadStaging:
    """A private folder to receive one commit's files into, under home."""
    return UploadStaging(core.settings.home / "uploads", max_bytes=max_bytes or DEFAULT_MAX_UPLOAD_BYTES)


def _local(core: HubCore, entry: HubFile | StagedFile) -> Path:
    """Where a file's bytes are now: the received upload, or the stored blob (fetched if remote)."""
    if isinstance(entry, StagedFile):
        return entry.local_path
    assert entry.blob_path is not None
    return _blob_path(core, entry.sha256) if core.blobs.remote else entry.blob_path


def _extra_file(path: str, entry: HubFile | StagedFile) -> ExtraFile:
    local = entry.local_path if isinstance(entry, StagedFile) else None
    return ExtraFile(path=path, digest=entry.sha256, size=entry.size, local_path=local)


def _check_target(core: HubCore, repo_id: str, revision: str) -> None:
    validate_name(repo_id)
    if revision not in HEAD_ALIASES:
        raise HubRevisionNotFoundError(repo_id, revision, " (this hub commits to 'main' only)")
    if not core.catalog.exists(repo_id) and hub_catalog.get_repo(core.catalog, repo_id) is None:
        raise RepoNotFoundError(repo_id)


# A commit that loses the race for the head (another process moved it first) is rebuilt on the new
# head this many times at most; each round at least one of the racing commits wins, so this bounds
# the wait, it is not a guess at how likely a conflict is.
_COMMIT_ATTEMPTS = 32


def commit(
    core: HubCore,
    repo_id: str,
    received: UploadStaging,
    *,
    revision: str = "main",
    message: str = "",
    parent_commit: str | None = None,
) -> str:
    """Apply a received commit to a repo; returns the commit id of the repo's new head.

    The result (the head's files minus deletions plus uploads) must be a valid PEFT LoRA
    adapter, validated as ``add`` validates a folder; its weights' canonical digest is the
    adapter's digest. The uploaded bytes of every file are what the repo serves afterwards (weights
    or config that differ from the canonical bytes are kept beside them), so a download is
    byte-identical to the upload. Nothing is stored unless the whole commit is accepted, and then
    weights, card metadata, metrics and extra files go in together. A commit that changes no
    served byte returns the head's id and adds no revision.

    The head moves by compare-and-set in the database (``CatalogWriter.add_revision``), so several
    server processes on one catalog never lose a commit. With ``parent_commit`` the commit is
    refused (``CommitConflictError``, HTTP 412) unless that is still the head when it is stored;
    without it, a commit that lost the race to a concurrent one is rebuilt on the new head (the
    received files applied again), as the Hugging Face hub applies operations to its latest head.

    Raises:
        RepoNotFoundError, HubRevisionNotFoundError, CommitConflictError, InvalidAdapterError,
        ForbiddenFileError, InvalidRepoPathError, UnsupportedAdapterError.
    """
    _check_target(core, repo_id, revision)
    for attempt in range(_COMMIT_ATTEMPTS):
        try:
            return _commit_on_head(core, repo_id, received, message=message, parent_commit=parent_commit)
        except (CommitConflictError, AdapterExistsError) as e:
            # AdapterExistsError: another commit created the repo's first revision before this one
            if parent_commit:
                raise CommitConflictError(
                    f"the commit was prepared on {parent_commit[:12]} but the head of '{repo_id}' moved "
                    "while it was stored; fetch the head and commit again"
                ) from None
            if attempt + 1 == _COMMIT_ATTEMPTS:
                raise CommitConflictError(
                    f"the head of '{repo_id}' kept moving ({_COMMIT_ATTEMPTS} concurrent commits won first); "
                    "commit again"
                ) from e
            time.sleep(random.uniform(0.0, 0.005 * (attempt + 1)))  # spread the retries of a burst
    raise AssertionError("unreachable")


def _commit_on_head(
    core: HubCore, repo_id: str, received: UploadStaging, *, message: str, parent_commit: str | None
) -> str:
    """One attempt of ``commit``: read the head, apply the received files, store on that head."""
    head = snapshot(core, repo_id) if core.catalog.exists(repo_id) else None
    if parent_commit and (head is None or not head.revision.startswith(parent_commit.lower())):
        raise CommitConflictError(
            f"the commit was prepared on {parent_commit[:12]} but the head of '{repo_id}' is "
            f"{head.revision[:12] if head else 'empty'}; fetch the head and commit again"
        )
    # generated files (a card made from the catalog) are not part of the head's content
    base = {p: f for p, f in (head.files if head else {}).items() if f.blob_path is not None or p == CONFIG_NAME}
    _check_deletions(repo_id, head, received)
    files = apply_commit(base, received)
    for path, entry in files.items():
        if isinstance(entry, StagedFile):
            check_allowed_file(path, entry.head)
    if CONFIG_NAME not in files or WEIGHTS_NAME not in files:
        raise InvalidAdapterError(
            f"after this commit '{repo_id}' would not hold both {CONFIG_NAME} and {WEIGHTS_NAME}; "
            "a repo on this hub is a PEFT LoRA adapter, so commit both (safetensors weights only)"
        )
    config_file = files[CONFIG_NAME]
    if isinstance(config_file, StagedFile):
        config = AdapterConfig.load(config_file.local_path)
    else:
        config = AdapterConfig(json.loads(config_file.read_small()))
    from adapterhub.lora import LoraAdapter

    adapter = LoraAdapter.from_files(config, _local(core, files[WEIGHTS_NAME]), validate=False)
    extras = {p: e for p, e in sorted(files.items()) if p not in _ADAPTER_FILES}
    readme = extras.get(README_NAME)
    card = read_card(_local(core, readme) if readme is not None else None, adapter, file_sha256=files[WEIGHTS_NAME].sha256)
    extra_files = [_extra_file(p, e) for p, e in extras.items()]
    served = [_extra_file(p, files[p]) for p in _ADAPTER_FILES]  # kept where not canonical
    if head is None:
        return store_new(
            core,
            adapter,
            repo_id,
            about=card_description(card),
            lineage=card.lineage,
            metrics=card_metrics(card),
            files=extra_files,
            served=served,
            operation="push",
            source=f"hub:{repo_id}",
        ).revision
    # unchanged means the same bytes served for every path (clients compare what they download)
    if {p: e.sha256 for p, e in files.items()} == {p: f.sha256 for p, f in base.items()}:
        return head.revision
    return store_revision(
        core,
        repo_id,
        adapter,
        message=message or "commit",
        expected_head=head.revision,
        about=card_description(card) if card.has_adapterhub_section else None,
        files=extra_files,
        served=served,
    )


def _check_deletions(repo_id: str, head: HubSnapshot | None, received: UploadStaging) -> None:
    """A deleted file or folder must exist in the head, as on the Hugging Face hub (``delete_file``
    of a missing path raises ``EntryNotFoundError`` there too)."""
    listed = head.files if head is not None else {}
    for path, folder in received.deletions:
        found = any(p.startswith(path + "/") for p in listed) if folder else path in listed
        if not found:
            raise EntryNotFoundError(repo_id, head.revision if head else "main", path)
