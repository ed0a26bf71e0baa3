"""``AdapterHub``: the one facade that the CLI and the HTTP server call.

It keeps the settings, the catalog and the blob store (``HubCore``) and answers the simple reads
itself: get, list, show, remove, lineage, verify, gc. Everything else is a service module in this
package (``ingest``, ``merging``, ``sync``, ``repos``, ``tokens``, ``evaluation``, ``transfer``): a plain
function that takes the core first, bound here as a method in one line, so ``AdapterHub.merge``
is ``merging.merge`` with its signature and docstring. A new capability is one engine package plus
one service module, and one line per method here.
"""

from __future__ import annotations

from functools import cached_property, partial
from pathlib import Path
from typing import Any

from adapterhub.app import (
    access,
    evaluation,
    generation,
    ingest,
    jobs,
    listing,
    merging,
    mhr,
    mos_training,
    repos,
    routing,
    serving,
    serving_models,
    shard_reads,
    shards,
    sync,
    tokens,
    transfer,
    transfer_kit,
)
from adapterhub.app.core import HubCore
from adapterhub.errors import AdapterNotFoundError
from adapterhub.hubformat import UploadStaging
from adapterhub.hubformat.lfs_objects import LfsObjects
from adapterhub.hubformat.xet_store import XetXorbs
from adapterhub.store import AdapterRecord


class AdapterHub(HubCore):
    """The adapterhub application: catalog + blob store + engines behind one API.

    Args:
        home: state folder (default ``ADAPTERHUB_HOME`` or ``~/.adapterhub``).
        database_url: SQLAlchemy URL (default ``ADAPTERHUB_DATABASE_URL`` or SQLite under home).

    Example:
        >>> hub = AdapterHub()
        >>> hub.add("./my-lora", "acme/sql-lora", task="text-to-sql")
    """

    def __init__(self, home: str | Path | None = None, database_url: str | None = None) -> None:
        super().__init__(home, database_url)
        # a packed adapter's weights blob is rebuilt from its shard pool when a read misses it
        self.blobs.materialiser = partial(shard_reads.materialise, self)

    # ---------------------------------------------------------------- writes: one path (ingest)
    add = ingest.add
    add_adapter = ingest.add_adapter
    add_metrics = ingest.add_metrics
    load = ingest.load
    export = ingest.export

    # ---------------------------------------------------------------- engines and workflows
    merge = merging.merge
    merge_parameters = staticmethod(merging.merge_parameters)
    methods = staticmethod(merging.methods)
    route = routing.route
    train_mhr = mhr.train_mhr
    train = evaluation.train
    shard_pack = shards.pack
    shard_unpack = shards.unpack
    shard_stats = shard_reads.stats
    shard_verify = shard_reads.verify_packed
    evaluate_adapter = evaluation.evaluate_adapter
    transfer_check = transfer.check
    transfer = transfer.run
    transfer_prepare = transfer_kit.prepare
    # ---------------------------------------------------------------- long operations as jobs
    @cached_property
    def jobs(self) -> jobs.Jobs:
        """Jobs (``app/jobs``): submit, list, show, cancel and run long operations, in this
        process or on a Ray cluster (``ADAPTERHUB_RAY_ADDRESS``)."""
        return jobs.Jobs(self)

    # ---------------------------------------------------------------- inference (OpenAI-compatible)
    serve_embeddings = serving.embeddings
    serve_classify = serving.classify
    serve_completions = generation.completions
    serve_chat = generation.chat_completions
    serve_models = serving_models.servable_models
    serve_model = serving_models.model_info

    # ---------------------------------------------------------------- hub: client, server, tokens
    push = sync.push
    pull = sync.pull
    create_token = tokens.create_token
    list_tokens = tokens.list_tokens
    revoke_token = tokens.revoke_token
    check_token = tokens.check_token
    authorize_read = access.authorize_read
    authorize_write = access.authorize_write
    authorize_merge = access.authorize_merge
    readable = access.readable
    redact_lineage = access.redact_lineage
    redact_show = access.redact_show
    hub_create_repo = repos.create_repo
    hub_repo_private = repos.repo_private
    hub_private_repos = repos.private_repos
    hub_snapshot = repos.snapshot
    hub_staging = repos.staging
    hub_commit = repos.commit
    hub_referenced_digests = repos.referenced_digests
    hub_list_repos = repos.list_repos
    hub_list_repos_page = listing.repos_page
    hub_commits = repos.commits
    hub_head = repos.head
    hub_delete_repo = repos.delete_repo

    # ---------------------------------------------------------------- reads
    list_page = listing.list_page  # one page + next_cursor: the scalable listing
    count = listing.count

    def get(self, name: str) -> AdapterRecord:
        """The catalog record for ``name`` (raises ``AdapterNotFoundError``)."""
        return self.catalog.get(name)

    def list(
        self,
        *,
        base_model: str | None = None,
        task: str | None = None,
        tag: str | None = None,
        query: str | None = None,
        limit: int | None = None,
    ) -> list[AdapterRecord]:
        """Catalog entries, filtered, ordered by name (all of them: ``list_page`` pages a big catalog)."""
        return self.catalog.list(base_model=base_model, task=task, tag=tag, query=query, limit=limit)

    def show(self, name: str) -> dict[str, Any]:
        """Everything known about one adapter: record, lineage, metrics, revisions, how its weights
        are stored (``storage``: a plain blob, or packed: pool blob, error, bytes) and, for a
        MoS-trained entry, its pool form (``mos``, else None)."""
        record = self.catalog.get(name)
        return {
            **record.to_dict(),
            "lineage": [p.to_dict() for p in self.catalog.lineage(name)],
            "children": sorted({c.child_name for c in self.catalog.descendants(name) if c.child_name}),
            "metrics": [m.to_dict() for m in self.catalog.metrics(name)],
            "revisions": [r.to_dict() for r in self.catalog.revisions(name)],
            "storage": shard_reads.storage(self, record),
            "mos": mos_training.mos_form(self, record),
        }

    def remove(self, name: str) -> AdapterRecord:
        """Delete the catalog entry; its blob goes too when nothing else references it."""
        record = self.catalog.remove(name)
        if not ingest.blob_referenced(self, record.digest):
            self.blobs.delete(record.digest)
        return record

    def lineage(self, name: str) -> dict[str, Any]:
        """The ancestry tree of ``name``: each node lists its parents recursively.

        A removed parent stays in the tree as ``{"name", "missing": true}``: lineage outlives
        its parents. Raises ``AdapterNotFoundError`` when ``name`` itself is not in the catalog.
        """
        if not self.catalog.exists(name):
            raise AdapterNotFoundError(name)
        return self._lineage_node(name, seen=set())

    def _lineage_node(self, name: str, seen: set[str]) -> dict[str, Any]:
        node: dict[str, Any] = {"name": name, "parents": []}
        if name in seen or not self.catalog.exists(name):
            node["missing"] = not self.catalog.exists(name)
            return node
        seen.add(name)
        record = self.catalog.get(name)
        node.update(digest=record.digest, base_model=record.base_model)
        for parent in self.catalog.lineage(name):
            child = self._lineage_node(parent.parent_name, seen)
            child.update(operation=parent.operation, weight=parent.weight, params=parent.params)
            node["parents"].append(child)
        return node

    def _referenced_digests(self) -> set[str]:
        """Every blob something points at: adapter revisions, the hub's other files (model cards,
        example inputs) and derived artifacts (routing state)."""
        return self.catalog.referenced_digests() | repos.referenced_digests(self) | routing.referenced_digests(self)

    def gc(self, *, grace_seconds: float = 3600.0) -> dict[str, Any]:
        """Remove blobs no catalog entry references, temp files and upload staging folders left by
        killed processes, and LFS objects and Xet xorbs uploaded but not committed.

        Anything younger than ``grace_seconds`` is kept: another process may be between writing a
        blob and committing its row, or still receiving an upload. Use 0 only when nothing else
        writes to this home (this process's own uploads in progress are kept even then).
        """
        live = self.catalog.referenced_digests() | repos.referenced_digests(self) | shard_reads.pool_digests(self)
        routing.prune(self, live)
        shards.prune_libraries(self)
        # a packed adapter's weights are rebuilt on the next read: dropped once unused for the grace period
        referenced = self._referenced_digests() - shard_reads.rebuildable_digests(self)
        result = self.blobs.gc(referenced, grace_seconds=grace_seconds)
        staging = UploadStaging.remove_stale(self.settings.home / "uploads", grace_seconds=grace_seconds)
        staging += LfsObjects(self.settings.home / "uploads" / "lfs").remove_stale(grace_seconds=grace_seconds)
        staging += XetXorbs(self.settings.home / "uploads" / "xet").remove_stale(grace_seconds=grace_seconds)
        return {
            "blobs": list(result.blobs),
            "temp_files": [str(p) for p in result.temp_files],
            "staging": [str(folder) for folder, _ in staging],
            "bytes_freed": result.bytes_freed + sum(size for _, size in staging),
        }

    def verify(self) -> dict[str, list[str]]:
        """Check every referenced blob exists and hashes to its digest.

        Shard pool blobs are checked like any blob; a packed adapter's weights may be missing (they
        are rebuilt from their pool on read; ``shard_verify`` rebuilds and checks every one).
        """
        bad: list[str] = []
        missing: list[str] = []
        rebuildable = shard_reads.rebuildable_digests(self)
        for digest in sorted(self._referenced_digests()):
            if not self.blobs.has(digest):
                if digest not in rebuildable:
                    missing.append(digest)
            elif not self.blobs.verify(digest):
                bad.append(digest)
        return {"missing": missing, "corrupt": bad}

    def __enter__(self) -> AdapterHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
