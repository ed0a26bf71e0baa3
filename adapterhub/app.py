"""``AdapterHub``: the one facade that the CLI and the HTTP server call.

It resolves names, validates input, runs engines and stores their results with lineage. The order
of writes is what makes the catalog crash-safe: the blob is written (atomically) *before* the row
that points to it is committed, so a crash at any moment leaves at worst an unreferenced blob (which
``gc`` removes), never a row without a blob or a half-written blob under a final name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.errors import AdapterExistsError, BlobCorruptError, InvalidAdapterError, InvalidParameterError
from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME, AdapterConfig
from adapterhub.names import validate_name
from adapterhub.settings import Settings, load_settings
from adapterhub.store import AdapterRecord, BlobStore, Catalog, LineageRecord
from adapterhub.store.records import normalise_tags

if TYPE_CHECKING:  # torch-backed types load lazily so catalog-only commands start fast
    from adapterhub.lora import LoraAdapter


@dataclass(frozen=True)
class MergeOutcome:
    """What ``AdapterHub.merge`` made: the stored record and how it was made."""

    record: AdapterRecord
    method: str
    params: dict[str, Any]
    weights: list[float]
    seed: int
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        summary = {k: v for k, v in self.report.items() if k != "modules"}
        return {
            "adapter": self.record.to_dict(),
            "method": self.method,
            "params": self.params,
            "weights": self.weights,
            "seed": self.seed,
            "report": summary,
        }


def _summarise_targets(adapter: LoraAdapter) -> list[str]:
    """Target modules as users name them (last path component), from the tensors actually present."""
    return sorted({path.rsplit(".", 1)[-1] for path in adapter.module_paths})


class AdapterHub:
    """The adapterhub application: catalog + blob store + engines behind one API.

    Args:
        home: state folder (default ``ADAPTERHUB_HOME`` or ``~/.adapterhub``).
        database_url: SQLAlchemy URL (default ``ADAPTERHUB_DATABASE_URL`` or SQLite under home).

    Example:
        >>> hub = AdapterHub()
        >>> hub.add("./my-lora", "acme/sql-lora", task="text-to-sql")
    """

    def __init__(self, home: str | Path | None = None, database_url: str | None = None) -> None:
        self.settings: Settings = load_settings(home, database_url)
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.settings.blob_root)
        self.catalog = Catalog(self.settings.database_url)

    # ------------------------------------------------------------------ catalog
    def add(
        self,
        path: str | Path,
        name: str,
        *,
        task: str | None = None,
        tags: Sequence[str] = (),
        base_model: str | None = None,
        description: str | None = None,
    ) -> AdapterRecord:
        """Import a PEFT adapter folder under ``name``.

        Raises:
            InvalidNameError, AdapterExistsError, InvalidAdapterError, UnsupportedAdapterError.
        """
        validate_name(name)
        if self.catalog.exists(name):
            raise AdapterExistsError(name)
        from adapterhub.lora import LoraAdapter

        adapter = LoraAdapter.load(path)
        if base_model:
            adapter = adapter.with_config(adapter.config.with_updates(base_model_name_or_path=base_model))
        return self.add_adapter(
            adapter, name, task=task, tags=tags, description=description, operation="import", source=str(path)
        )

    def add_adapter(
        self,
        adapter: LoraAdapter,
        name: str,
        *,
        task: str | None = None,
        tags: Sequence[str] = (),
        description: str | None = None,
        lineage: Sequence[LineageRecord] = (),
        operation: str = "import",
        source: str | None = None,
        source_repo: str | None = None,
        source_revision: str | None = None,
    ) -> AdapterRecord:
        """Store an in-memory or on-disk adapter (e.g. an engine's output) with its lineage.

        ``operation`` and ``source`` become the first revision's message ("import: ./my-lora"),
        so ``show`` tells where an entry came from even when it has no parents.
        """
        validate_name(name)
        if self.catalog.exists(name):
            raise AdapterExistsError(name)
        tags = list(normalise_tags(tags))  # checked before any blob is written
        with self.blobs.writer() as writer:
            for chunk in adapter.iter_weights_bytes():
                writer.write(chunk)
        digest, size = writer.digest, writer.size
        ranks = adapter.ranks()
        rank = max(ranks.values())
        record = AdapterRecord(
            name=name,
            base_model=adapter.base_model,
            rank=rank,
            alpha=adapter.config.lora_alpha,
            ranks=ranks if len(set(ranks.values())) > 1 else None,
            target_modules=_summarise_targets(adapter),
            task=task,
            tags=tags,
            description=description or "",
            digest=digest,
            size=size,
            config=adapter.config.raw,
            source_repo=source_repo,
            source_revision=source_revision,
            created=datetime.now(timezone.utc),
        )
        message = f"{operation}: {source}" if source else operation
        try:
            return self.catalog.add(record, lineage, message=message)
        except BaseException:
            if not self.catalog.digest_in_use(digest):
                self.blobs.delete(digest)
            raise

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
        """Catalog entries, filtered, ordered by name."""
        return self.catalog.list(base_model=base_model, task=task, tag=tag, query=query, limit=limit)

    def show(self, name: str) -> dict[str, Any]:
        """Everything known about one adapter: record, lineage, metrics, revisions."""
        record = self.catalog.get(name)
        return {
            **record.to_dict(),
            "lineage": [p.to_dict() for p in self.catalog.lineage(name)],
            "children": sorted({c.child_name for c in self.catalog.descendants(name) if c.child_name}),
            "metrics": [m.to_dict() for m in self.catalog.metrics(name)],
            "revisions": [r.to_dict() for r in self.catalog.revisions(name)],
        }

    def remove(self, name: str) -> AdapterRecord:
        """Delete the catalog entry; its blob goes too when no other entry references it."""
        record = self.catalog.remove(name)
        if not self.catalog.digest_in_use(record.digest):
            self.blobs.delete(record.digest)
        return record

    def load(self, name: str, *, verify: bool = False) -> LoraAdapter:
        """The stored adapter, lazily memory-mapped from its blob."""
        record = self.catalog.get(name)
        if verify and not self.blobs.verify(record.digest):
            raise BlobCorruptError(
                f"blob of '{name}' does not match its digest {record.digest}; the blob store is corrupt"
            )
        from adapterhub.lora import LoraAdapter

        return LoraAdapter.from_files(AdapterConfig(record.config), self.blobs.path(record.digest), validate=False)

    def export(self, name: str, folder: str | Path) -> Path:
        """Write ``name`` as a PEFT folder that ``PeftModel.from_pretrained`` loads.

        The weights are copied from the blob while hashing, and the copy is only renamed into place
        if it matches the digest, so a corrupt blob is reported, never exported.
        """
        record = self.catalog.get(name)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        from adapterhub.lora.tensorfile import atomic_write  # torch-backed module: load on use

        h = hashlib.sha256()
        with atomic_write(folder / WEIGHTS_NAME) as out, self.blobs.open(record.digest) as src:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
            if h.hexdigest() != record.digest:
                raise BlobCorruptError(
                    f"blob of '{name}' hashes to {h.hexdigest()}, not {record.digest}; the blob store is corrupt"
                )
        with atomic_write(folder / CONFIG_NAME, "w") as f:
            f.write(AdapterConfig(record.config).to_json())
        return folder

    def lineage(self, name: str) -> dict[str, Any]:
        """The ancestry tree of ``name``: each node lists its parents recursively."""
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
        """Every blob something points at: adapter revisions and the hub's other files (model cards)."""
        return self.catalog.referenced_digests() | self.hub_referenced_digests()

    def gc(self, *, grace_seconds: float = 3600.0) -> dict[str, Any]:
        """Remove blobs no catalog entry references and temp files left by killed processes.

        Anything younger than ``grace_seconds`` is kept: another process may be between writing a
        blob and committing its row. Use 0 only when nothing else writes to this home.
        """
        result = self.blobs.gc(self._referenced_digests(), grace_seconds=grace_seconds)
        return {
            "blobs": list(result.blobs),
            "temp_files": [str(p) for p in result.temp_files],
            "bytes_freed": result.bytes_freed,
        }

    def verify(self) -> dict[str, list[str]]:
        """Check every referenced blob exists and hashes to its digest."""
        bad: list[str] = []
        missing: list[str] = []
        for digest in sorted(self._referenced_digests()):
            if not self.blobs.has(digest):
                missing.append(digest)
            elif not self.blobs.verify(digest):
                bad.append(digest)
        return {"missing": missing, "corrupt": bad}

    # ------------------------------------------------------------------ merge
    @staticmethod
    def merge_parameters() -> dict[str, list[dict[str, Any]]]:
        """Method -> its parameters (name, default, help, choices); cheap, no torch import."""
        from adapterhub.merge.params import parameter_table

        return parameter_table()

    @staticmethod
    def methods() -> list[dict[str, Any]]:
        """Every merge method with its description, reference and typed parameters (no catalog needed)."""
        from adapterhub.merge import list_methods

        return [m.to_dict() for m in list_methods()]

    def merge(
        self,
        names: Sequence[str],
        *,
        method: str = "lego",
        k: int | None = None,
        weights: Sequence[float] | None = None,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
        seed: int = 0,
        force: bool = False,
        task: str | None = None,
        tags: Sequence[str] = (),
        description: str | None = None,
        progress: Any = None,
    ) -> MergeOutcome:
        """Merge catalog adapters with a registered method and store the result with lineage.

        Args:
            names: the inputs, by catalog name (at least one; each at most once).
            method: a merge method (``methods()`` lists them); ``lego`` by default.
            k: output rank, for methods that take one (same as ``params={"k": k}``).
            weights: one per input; default 1/n for averaging methods, 1 for sums.
            params: the method's other parameters (validated; unknown keys list the valid ones).
            name: catalog name of the result; default ``merged/<method>-<digest prefix>``.
            seed: seeds every random choice, so a merge is reproducible.
            force: merge adapters whose base models differ.

        Raises:
            AdapterNotFoundError, AdapterExistsError, InvalidParameterError,
            IncompatibleAdaptersError.
        """
        from adapterhub.merge import merge_adapters, resolve_params

        if not names:
            raise InvalidParameterError("merge needs at least one adapter name")
        if len(set(names)) != len(names):
            raise InvalidParameterError("each adapter may be named only once; use --weights to weigh one more")
        merged_params = dict(params or {})
        if k is not None:
            merged_params["k"] = k
        resolve_params(method, merged_params)  # fail on bad parameters before reading anything
        if name is not None:
            validate_name(name)
            if self.catalog.exists(name):
                raise AdapterExistsError(name)
        records = [self.catalog.get(n) for n in names]
        adapters = [self.load(n) for n in names]
        result = merge_adapters(
            adapters, method, weights=weights, params=merged_params, seed=seed, progress=progress, force=force
        )
        target = name or f"merged/{method}-{result.adapter.digest[:12]}"
        lineage = [
            LineageRecord(
                parent_name=record.name,
                parent_digest=record.digest,
                operation=f"merge:{method}",
                params={**result.params, "seed": seed},
                weight=weight,
            )
            for record, weight in zip(records, result.weights)
        ]
        parent_tasks = [r.task for r in records if r.task]
        record = self.add_adapter(
            result.adapter,
            target,
            task=task,
            tags=list(tags) or ["merged"],
            description=description or f"{method} merge of " + ", ".join(names)
            + (f" (tasks: {', '.join(parent_tasks)})" if parent_tasks else ""),
            lineage=lineage,
            operation=f"merge:{method}",
        )
        return MergeOutcome(record=record, method=method, params=result.params, weights=list(result.weights),
                            seed=seed, report=result.report.to_dict())

    def add_metrics(self, name: str, metrics: Mapping[str, float], *, task: str, split: str = "test") -> None:
        for metric, value in metrics.items():
            self.catalog.add_metric(name, task=task, split=split, metric=metric, value=float(value))

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "AdapterHub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ hub (push, pull, serve)
    # Everything hub-related that the CLI (push, pull, token) and `adapterhub serve` call. The
    # repo format and the huggingface_hub client live in store/hub.py, the hub tables in
    # store/hub_catalog.py, model cards in modelcard.py; these methods put them together.

    def push(
        self,
        name: str,
        repo_id: str | None = None,
        *,
        revision: str = "main",
        private: bool = False,
        endpoint: str | None = None,
        token: str | None = None,
        commit_message: str | None = None,
    ) -> dict[str, Any]:
        """Upload ``name`` to a hub repo as a PEFT folder with a model card (one commit).

        The repo is created if needed. Endpoint and token default to ``HF_ENDPOINT``/``HF_TOKEN``.

        Returns:
            ``{"name", "repo_id", "revision" (the commit id), "url", "digest"}``.

        Raises:
            AdapterNotFoundError, InvalidNameError, HubError, AuthError.
        """
        import tempfile

        from adapterhub.modelcard import render_card
        from adapterhub.store.hub import README_NAME, HubClient

        repo_id = validate_name(repo_id or name)
        record = self.catalog.get(name)
        card = render_card(record, self.catalog.lineage(name), self.catalog.metrics(name), repo_id=repo_id)
        client = HubClient(endpoint=endpoint, token=token)
        with tempfile.TemporaryDirectory(prefix=".push-", dir=self.settings.home) as tmp:
            self.export(name, tmp)
            (Path(tmp) / README_NAME).write_text(card, encoding="utf-8")
            sha, url = client.push_folder(
                Path(tmp),
                repo_id,
                revision=revision,
                private=private,
                commit_message=commit_message or f"adapterhub push {name} (revision {record.revision[:12]})",
            )
        return {"name": name, "repo_id": repo_id, "revision": sha, "url": url, "digest": record.digest}

    def pull(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        name: str | None = None,
        endpoint: str | None = None,
        token: str | None = None,
    ) -> AdapterRecord:
        """Download a PEFT adapter from a hub repo, validate it and import it (with its lineage).

        The repo id and commit id are recorded as ``source_repo``/``source_revision``. Pulling a
        commit that is already a revision of the entry changes nothing; a new commit of the same
        repo becomes a new revision of the entry (its head moves).

        Raises:
            HubError, AuthError: not found, unauthorised, gated, offline and not cached.
            InvalidAdapterError, UnsupportedAdapterError: the files are not a valid LoRA adapter.
            AdapterExistsError: ``name`` exists and was not pulled from ``repo_id``.
        """
        from adapterhub.store.hub import HubClient, sha256_file

        name = validate_name(name or repo_id)
        client = HubClient(endpoint=endpoint, token=token)
        remote = client.resolve(repo_id, revision)
        existing = self.catalog.get(name) if self.catalog.exists(name) else None
        if existing is not None:
            if existing.source_repo != repo_id:
                raise AdapterExistsError(name)
            if any(r.source_revision == remote.sha for r in self.catalog.revisions(name)):
                return existing
        # Download by the name asked for (so the cache records that ref for offline pulls later);
        # if the head moved since `resolve`, describe the commit that was actually downloaded.
        folder = client.download(repo_id, revision or "main")
        if folder.name != remote.sha and not client.offline:
            remote = client.resolve(repo_id, folder.name)
            if existing is not None and any(r.source_revision == remote.sha for r in self.catalog.revisions(name)):
                return existing
        expected = remote.lfs_sha256.get(WEIGHTS_NAME)
        file_sha256 = sha256_file(folder / WEIGHTS_NAME)
        if expected is not None and file_sha256 != expected:
            raise InvalidAdapterError(
                f"{WEIGHTS_NAME} of {repo_id}@{remote.sha[:12]} does not hash to the sha256 the hub lists "
                "(truncated or corrupted download); pull again"
            )
        from adapterhub.lora import LoraAdapter

        adapter = LoraAdapter.from_files(AdapterConfig.load(folder / CONFIG_NAME), folder / WEIGHTS_NAME)
        card = self._hub_card(folder / "README.md", adapter, file_sha256=file_sha256)
        if existing is None:
            record = self.add_adapter(
                adapter,
                name,
                task=card.task,
                tags=card.tags,
                description=card.description,
                lineage=card.lineage,
                operation="pull",
                source=repo_id,
                source_repo=repo_id,
                source_revision=remote.sha,
            )
            self._hub_card_metrics(name, card)
            return record
        self._hub_new_revision(
            name, adapter, message=f"pull {repo_id}@{remote.sha}", source_revision=remote.sha, source_repo=repo_id
        )
        if card.has_adapterhub_section:
            self.catalog.update(name, tags=card.tags, task=card.task or "", description=card.description)
        return self.catalog.get(name)

    def _hub_card(self, path: Path | None, adapter: LoraAdapter, *, file_sha256: str | None = None) -> Any:
        """What a model card says, or an empty ``CardInfo``.

        A card whose recorded digest is not this adapter's describes other content (weights
        replaced, card left as it was), so its adapterhub section (lineage, metrics, tags) is
        ignored. ``file_sha256`` (of the weights file as received) saves a pass over the tensors
        when it equals the recorded digest: only the canonical bytes hash to it.
        """
        from adapterhub.modelcard import CardInfo, parse_card

        if path is None or not path.is_file():
            return CardInfo()
        card = parse_card(path.read_text(encoding="utf-8", errors="replace"))
        if card.digest is not None and card.digest != file_sha256 and card.digest != adapter.digest:
            return CardInfo(base_model=card.base_model)
        return card

    def _hub_card_metrics(self, name: str, card: Any) -> None:
        for m in card.metrics:
            self.catalog.add_metric(name, task=m["task"], split=m["split"], metric=m["metric"], value=m["value"])

    def _hub_new_revision(
        self,
        name: str,
        adapter: LoraAdapter,
        *,
        message: str,
        source_revision: str | None = None,
        source_repo: str | None = None,
    ) -> str:
        """Store ``adapter`` as a new head revision of ``name`` (blob first, then the row)."""
        with self.blobs.writer() as writer:
            for chunk in adapter.iter_weights_bytes():
                writer.write(chunk)
        ranks = adapter.ranks()
        extra = {"source_repo": source_repo} if source_repo is not None else {}
        try:
            return self.catalog.add_revision(
                name,
                digest=writer.digest,
                size=writer.size,
                config=adapter.config.raw,
                message=message,
                source_revision=source_revision,
                rank=max(ranks.values()),
                alpha=adapter.config.lora_alpha,
                ranks=ranks if len(set(ranks.values())) > 1 else None,
                target_modules=_summarise_targets(adapter),
                base_model=adapter.base_model,
                **extra,
            )
        except BaseException:
            if not self.catalog.digest_in_use(writer.digest):
                self.blobs.delete(writer.digest)
            raise

    # -- tokens of the hub server

    def create_token(self, *, name: str | None = None, write: bool = True) -> dict[str, Any]:
        """Make a new access token for ``adapterhub serve``; the secret is returned only here.

        Only its sha256 is stored. ``write=False`` makes a read-only token (for servers started
        with ``--read-token-required``).

        Returns:
            The token's record as a dict plus ``"token"``, the secret.
        """
        import secrets

        from adapterhub.store import hub_catalog

        secret = "ah_" + secrets.token_urlsafe(32)
        name = name or f"token-{secrets.token_hex(3)}"
        record = hub_catalog.add_token(
            self.catalog, name=name, token_sha256=hashlib.sha256(secret.encode()).hexdigest(), write=write
        )
        return {**record.to_dict(), "token": secret}

    def list_tokens(self) -> list[dict[str, Any]]:
        """All tokens (never their secrets)."""
        from adapterhub.store import hub_catalog

        return [t.to_dict() for t in hub_catalog.list_tokens(self.catalog)]

    def revoke_token(self, key: str) -> dict[str, Any]:
        """Delete a token by name (or id); it stops working at once. Raises ``AuthError`` if unknown."""
        from adapterhub.store import hub_catalog

        return hub_catalog.remove_token(self.catalog, key).to_dict()

    def check_token(self, secret: str | None, *, write: bool = False) -> Any:
        """The token record for ``secret`` (None when no secret is given).

        Raises:
            AuthError: the secret is unknown, or ``write`` is asked of a read-only token.
        """
        import time

        from adapterhub.errors import AuthError
        from adapterhub.store import hub_catalog
        from adapterhub.store.hub import InvalidTokenError

        if not secret:
            return None
        record = hub_catalog.find_token(self.catalog, hashlib.sha256(secret.encode()).hexdigest())
        if record is None:
            raise InvalidTokenError(
                "invalid token: it is unknown or was revoked; create one with `adapterhub token create`"
            )
        if write and not record.write:
            raise AuthError(f"token '{record.name}' is read-only; writes need a token made without --read-only")
        touched = self.__dict__.setdefault("_hub_token_touched", {})
        if time.monotonic() - touched.get(record.id, -1e9) > 60:  # last_used to the minute, not a write per request
            touched[record.id] = time.monotonic()
            hub_catalog.touch_token(self.catalog, record.id)
        return record

    # -- what the hub server serves and receives

    def hub_create_repo(self, repo_id: str, *, private: bool = False) -> bool:
        """Create an (empty) hub repo; False when a repo or catalog entry of that id exists."""
        from adapterhub.store import hub_catalog

        validate_name(repo_id)
        if self.catalog.exists(repo_id):
            return False
        return hub_catalog.create_repo(self.catalog, repo_id, private=private)

    def hub_repo_private(self, repo_id: str) -> bool:
        """Whether the repo is private. Raises ``RepoNotFoundError`` when there is no such repo."""
        from adapterhub.store import hub_catalog
        from adapterhub.store.hub import RepoNotFoundError

        repo = hub_catalog.get_repo(self.catalog, repo_id)
        if repo is None and not self.catalog.exists(repo_id):
            raise RepoNotFoundError(repo_id)
        return bool(repo and repo.private)

    def hub_snapshot(self, repo_id: str, revision: str = "main") -> Any:
        """The files of one revision of a repo, as the hub server serves them (``HubSnapshot``).

        ``adapter_config.json`` and ``adapter_model.safetensors`` come from the revision itself;
        other files from the revision's ``revision_files``; without a stored ``README.md`` a model
        card is generated from the catalog entry as it is now.

        Raises:
            RepoNotFoundError, HubRevisionNotFoundError.
        """
        from adapterhub.modelcard import render_card
        from adapterhub.store import RevisionNotFoundError, hub_catalog
        from adapterhub.store.hub import README_NAME, HubFile, HubRevisionNotFoundError, HubSnapshot

        private = self.hub_repo_private(repo_id)
        if not self.catalog.exists(repo_id):
            raise HubRevisionNotFoundError(repo_id, revision, " (the repo is empty: nothing was committed yet)")
        try:
            rev = self.catalog.get_revision(repo_id, revision)
        except RevisionNotFoundError:
            raise HubRevisionNotFoundError(repo_id, revision) from None
        config = AdapterConfig(rev.config).to_json().encode()
        files = {
            CONFIG_NAME: HubFile(CONFIG_NAME, len(config), hashlib.sha256(config).hexdigest(), content=config),
            WEIGHTS_NAME: HubFile(WEIGHTS_NAME, rev.size, rev.digest, blob_path=self.blobs.path(rev.digest)),
        }
        for f in hub_catalog.revision_files(self.catalog, repo_id, rev.revision):
            files[f.path] = HubFile(f.path, f.size, f.digest, blob_path=self.blobs.path(f.digest))
        if README_NAME not in files:
            record = self.catalog.get(repo_id)
            card = render_card(record, self.catalog.lineage(repo_id), self.catalog.metrics(repo_id)).encode()
            files[README_NAME] = HubFile(README_NAME, len(card), hashlib.sha256(card).hexdigest(), content=card)
        return HubSnapshot(repo_id, rev.revision, rev.created, private, dict(sorted(files.items())), rev.message)

    def hub_staging(self, *, max_bytes: int | None = None) -> Any:
        """A private folder to receive one commit's files into (``UploadStaging``), under home."""
        from adapterhub.store.hub import DEFAULT_MAX_UPLOAD_BYTES, UploadStaging

        return UploadStaging(self.settings.home / "uploads", max_bytes=max_bytes or DEFAULT_MAX_UPLOAD_BYTES)

    def hub_commit(
        self,
        repo_id: str,
        staging: Any,
        *,
        revision: str = "main",
        message: str = "",
        parent_commit: str | None = None,
    ) -> str:
        """Apply a received commit to a repo; returns the commit id of the repo's new head.

        The result (the head's files minus deletions plus uploads) must be a valid PEFT LoRA
        adapter, validated as ``add`` validates a folder; its weights' canonical digest is the
        adapter's digest. Nothing is stored unless the whole commit is accepted. A commit that
        changes nothing returns the head's id and adds no revision.

        Raises:
            RepoNotFoundError, HubRevisionNotFoundError, CommitConflictError, InvalidAdapterError,
            ForbiddenFileError, InvalidRepoPathError, UnsupportedAdapterError.
        """
        import json
        import threading

        from adapterhub.store import hub_catalog
        from adapterhub.store.hub import (
            README_NAME,
            CommitConflictError,
            HubRevisionNotFoundError,
            RepoNotFoundError,
            StagedFile,
            apply_commit,
            check_allowed_file,
        )
        from adapterhub.store.hub_catalog import RevisionFileRecord
        from adapterhub.store.catalog import HEAD_ALIASES

        validate_name(repo_id)
        if revision not in HEAD_ALIASES:
            raise HubRevisionNotFoundError(repo_id, revision, " (this hub commits to 'main' only)")
        locks = self.__dict__.setdefault("_hub_commit_locks", {})
        with locks.setdefault(repo_id, threading.Lock()):
            exists = self.catalog.exists(repo_id)
            if not exists and hub_catalog.get_repo(self.catalog, repo_id) is None:
                raise RepoNotFoundError(repo_id)
            head = self.hub_snapshot(repo_id) if exists else None
            if parent_commit and (head is None or not head.revision.startswith(parent_commit.lower())):
                raise CommitConflictError(
                    f"the commit was prepared on {parent_commit[:12]} but the head of '{repo_id}' is "
                    f"{head.revision[:12] if head else 'empty'}; fetch the head and commit again"
                )
            base = {p: f for p, f in (head.files if head else {}).items() if f.blob_path is not None or p == CONFIG_NAME}
            files = apply_commit(base, staging)
            for path, entry in files.items():
                if isinstance(entry, StagedFile):
                    check_allowed_file(path, entry.head)
            if CONFIG_NAME not in files or WEIGHTS_NAME not in files:
                raise InvalidAdapterError(
                    f"after this commit '{repo_id}' would not hold both {CONFIG_NAME} and {WEIGHTS_NAME}; "
                    "a repo on this hub is a PEFT LoRA adapter, so commit both (safetensors weights only)"
                )

            def local(entry: Any) -> Path:
                return entry.local_path if isinstance(entry, StagedFile) else entry.blob_path

            if isinstance(files[CONFIG_NAME], StagedFile):
                config = AdapterConfig.load(local(files[CONFIG_NAME]))
            else:
                config = AdapterConfig(json.loads(files[CONFIG_NAME].read_small()))
            from adapterhub.lora import LoraAdapter

            adapter = LoraAdapter.from_files(config, local(files[WEIGHTS_NAME]), validate=True)
            extras = {p: e for p, e in files.items() if p not in (CONFIG_NAME, WEIGHTS_NAME)}
            readme = extras.get(README_NAME)
            card = self._hub_card(
                local(readme) if readme is not None else None, adapter, file_sha256=files[WEIGHTS_NAME].sha256
            )
            if head is not None:
                same_extras = {p: e.sha256 for p, e in extras.items()} == {
                    p: f.sha256 for p, f in base.items() if p not in (CONFIG_NAME, WEIGHTS_NAME)
                }
                if same_extras and adapter.digest == head.files[WEIGHTS_NAME].sha256 and config.raw == json.loads(
                    head.files[CONFIG_NAME].read_small()
                ):
                    return head.revision
            new_blobs: list[str] = []
            try:
                for entry in extras.values():
                    if isinstance(entry, StagedFile) and not self.blobs.has(entry.sha256):
                        self.blobs.put_file(entry.local_path, entry.sha256)
                        new_blobs.append(entry.sha256)
                if head is None:
                    sha = self.add_adapter(
                        adapter,
                        repo_id,
                        task=card.task,
                        tags=card.tags,
                        description=card.description,
                        lineage=card.lineage,
                        operation="push",
                        source=f"hub:{repo_id}",
                    ).revision
                    self._hub_card_metrics(repo_id, card)
                else:
                    sha = self._hub_new_revision(repo_id, adapter, message=message or "commit")
                    if card.has_adapterhub_section:
                        self.catalog.update(repo_id, tags=card.tags, task=card.task or "", description=card.description)
                hub_catalog.add_revision_files(
                    self.catalog,
                    repo_id,
                    sha,
                    [RevisionFileRecord(p, e.sha256, e.size) for p, e in sorted(extras.items())],
                )
            except BaseException:
                for digest in new_blobs:
                    if not hub_catalog.file_digest_in_use(self.catalog, digest) and not self.catalog.digest_in_use(
                        digest
                    ):
                        self.blobs.delete(digest)
                raise
            assert isinstance(sha, str)
            return sha

    def hub_referenced_digests(self) -> set[str]:
        """Blobs the hub's revision files reference (``gc`` and ``verify`` must keep these)."""
        from adapterhub.store import hub_catalog

        return hub_catalog.referenced_file_digests(self.catalog)

    def hub_private_repos(self) -> set[str]:
        """Names of private repos (the server hides them from readers without a token)."""
        from adapterhub.store import hub_catalog

        return hub_catalog.private_repo_names(self.catalog)

    # ------------------------------------------------------------------ evaluation (train, eval, demo)
    # Train a task adapter, score adapters (merged ones on each parent's task), the merge-quality
    # table and the demo. Models, tasks and engines are imported inside each method, so catalog
    # commands never load torch or transformers.

    def train(
        self,
        task: str,
        *,
        name: str,
        rank: int = 8,
        alpha: float = 16,
        epochs: int = 3,
        lr: float = 1e-3,
        batch_size: int = 32,
        seed: int = 0,
        protocol: str = "similarity",
        base_model: str | None = None,
        tags: Sequence[str] = (),
        description: str | None = None,
        threads: int | None = None,
    ) -> dict[str, Any]:
        """Train one LoRA for a shipped task on the default base model and store it with its metrics.

        The adapter is scored on the task's held-out test split (and the zero-shot baseline beside
        it); the catalog entry records the task, the label descriptions (in its description and in
        the ``accuracy`` metric's ``extra``) and the metrics (validation and test).

        Args:
            task: a shipped task name (``adapterhub.eval.list_tasks()``).
            name: catalog name of the new adapter.
            rank, alpha, epochs, lr, batch_size, seed: training hyperparameters.
            protocol: ``"similarity"`` (no head, the adapter carries the task) or ``"head"``.
            base_model: a local ``transformers`` checkpoint folder (default: the packaged MiniLM).
            threads: torch threads while training (``None``: leave torch's setting).

        Returns:
            ``{"adapter": record, "task", "protocol", "metrics": {...}, "params": {...}}``.

        Raises:
            InvalidNameError, AdapterExistsError, TaskNotFoundError, InvalidParameterError,
            BaseModelNotFoundError.
        """
        from adapterhub.eval.evaluate import evaluate
        from adapterhub.eval.merge_quality import torch_threads
        from adapterhub.eval.tasks import load_task
        from adapterhub.models.base import load_base_model
        from adapterhub.models.train import train_adapter

        from adapterhub.eval.evaluate import PROTOCOLS

        if protocol not in PROTOCOLS:
            raise InvalidParameterError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
        validate_name(name)
        if self.catalog.exists(name):
            raise AdapterExistsError(name)
        spec = load_task(task)
        with torch_threads(threads):
            base = load_base_model(base_model)  # fresh: training changes the model (and restores it)
            result = train_adapter(
                base, spec, rank=rank, alpha=alpha, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                protocol=protocol,  # type: ignore[arg-type]
            )
            test = evaluate(result.adapter, spec, protocol=protocol, split="test", model=base)  # type: ignore[arg-type]
            zero = evaluate(None, spec, protocol=protocol, split="test", model=base)  # type: ignore[arg-type]
        labels = {label.name: label.description for label in spec.labels}
        record = self.add_adapter(
            result.adapter,
            name,
            task=spec.name,
            tags=list(tags) or ["trained"],
            description=description
            or f"{spec.description} Labels: " + "; ".join(f"{k}: {v}" for k, v in labels.items()),
            operation="train",
        )
        prefix = "" if protocol == "similarity" else f"{protocol}_"  # metric names: accuracy, head_accuracy, ...
        extra = {"protocol": protocol, "n": test.n, "source": "adapterhub train", "params": result.params}
        test_metrics = {
            "accuracy": test.accuracy,
            "macro_f1": test.macro_f1,
            "accuracy_stderr": test.accuracy_stderr,
            "zero_shot_accuracy": zero.accuracy,
        }
        for metric, value in test_metrics.items():
            self.catalog.add_metric(name, task=spec.name, split="test", metric=prefix + metric, value=value,
                                    extra={**extra, "labels": labels} if metric == "accuracy" else extra)
        val = {k.removeprefix("validation_"): v for k, v in result.metrics.items() if k.startswith("validation_")}
        for metric, value in val.items():
            self.catalog.add_metric(name, task=spec.name, split="validation", metric=prefix + metric, value=value,
                                    extra=extra)
        metrics = {
            "test": test_metrics,
            "validation": val,
            "train": {k: v for k, v in result.metrics.items() if not k.startswith("validation_")},
        }
        return {"adapter": record.to_dict(), "task": spec.name, "protocol": protocol, "metrics": metrics,
                "params": result.params}

    def evaluate_adapter(
        self,
        name: str,
        *,
        task: str | None = None,
        protocol: str = "similarity",
        split: str = "test",
        record: bool = True,
        threads: int | None = None,
    ) -> dict[str, Any]:
        """Accuracy and macro-F1 of a catalog adapter on held-out examples of its task(s).

        A merged adapter (lineage rows with operation ``merge:*``) is scored on each parent's
        task, with that task's label descriptions, beside the zero-shot baseline and the parent's
        own accuracy: ``normalised_accuracy = merged / own`` and ``retained_gain = (merged -
        zero-shot) / (own - zero-shot)``. The parent's own accuracy is its recorded metric when it
        has one for this task, split and protocol, else it is measured (and recorded on the parent).
        In the head protocol a merged adapter, which carries no head (heads are per task and are
        not merged), is read through the parent's head.

        Args:
            name: the adapter.
            task: score on this task only (default: the adapter's task, or every parent's task).
            protocol: ``"similarity"`` (primary) or ``"head"``.
            split: ``"test"`` (default) or ``"validation"``.
            record: store the results as metrics on the adapter.
            threads: torch threads while evaluating.

        Returns:
            ``{"name", "merged", "protocol", "split", "base_model", "tasks": [per-task dict],
            "mean": {...}}``.

        Raises:
            AdapterNotFoundError, TaskNotFoundError, InvalidParameterError,
            IncompatibleAdaptersError, BaseModelNotFoundError.
        """
        from adapterhub.eval.evaluate import PROTOCOLS, evaluate, relative_scores
        from adapterhub.eval.heads import head_from_tensors
        from adapterhub.eval.merge_quality import torch_threads
        from adapterhub.eval.tasks import SPLITS, list_tasks, load_task
        from adapterhub.models.base import DEFAULT_BASE_MODEL, cached_base_model

        if protocol not in PROTOCOLS:
            raise InvalidParameterError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
        if split not in SPLITS or split == "train":
            raise InvalidParameterError(f"evaluate on 'test' or 'validation', not {split!r}")
        entry = self.catalog.get(name)
        parents = [p for p in self.catalog.lineage(name) if p.operation.startswith("merge:")]
        plan: list[tuple[str, str | None]] = []  # (task, parent name)
        if parents:
            for p in parents:
                parent_task = self.catalog.get(p.parent_name).task if self.catalog.exists(p.parent_name) else None
                if parent_task and (task is None or parent_task == task):
                    plan.append((parent_task, p.parent_name))
            if task is not None and not plan:
                plan.append((task, None))
            if not plan:
                raise InvalidParameterError(
                    f"no parent of '{name}' records a task; pass --task (one of: {', '.join(list_tasks())})"
                )
        else:
            chosen = task or entry.task
            if not chosen:
                raise InvalidParameterError(
                    f"'{name}' records no task; pass --task (one of: {', '.join(list_tasks())})"
                )
            plan.append((chosen, None))
        base_id = entry.base_model
        model_key = None if base_id in (None, DEFAULT_BASE_MODEL) else base_id
        prefix = "" if protocol == "similarity" else f"{protocol}_"
        specs = {task_name: load_task(task_name) for task_name, _ in plan}  # unknown tasks fail before any model
        adapter = self.load(name)
        rows: list[dict[str, Any]] = []
        with torch_threads(threads):
            model = cached_base_model(model_key)
            for task_name, parent in plan:
                spec = specs[task_name]
                head = None
                if protocol == "head" and parent and head_from_tensors(adapter.extra_tensors(), spec.name) is None:
                    head = head_from_tensors(self.load(parent).extra_tensors(), spec.name)
                result = evaluate(
                    adapter, spec, protocol=protocol, split=split, model=model, head=head  # type: ignore[arg-type]
                )
                zero = self._zero_shot(model, spec, protocol, split)
                row: dict[str, Any] = {
                    "task": spec.name,
                    "parent": parent,
                    "n": result.n,
                    "accuracy": result.accuracy,
                    "accuracy_stderr": result.accuracy_stderr,
                    "macro_f1": result.macro_f1,
                    "zero_shot_accuracy": zero,
                }
                if parent is not None:
                    own = self._own_accuracy(parent, spec, protocol, split, model, record=record)
                    row["own_accuracy"] = own
                    row.update(relative_scores(result.accuracy, own=own, baseline=zero))
                else:
                    row["gain_over_zero_shot"] = result.accuracy - zero
                rows.append(row)
        if record:
            for row in rows:
                extra = {"protocol": protocol, "n": row["n"], "source": "adapterhub eval", "parent": row["parent"]}
                for metric in ("accuracy", "macro_f1", "accuracy_stderr", "zero_shot_accuracy", "own_accuracy",
                               "normalised_accuracy", "retained_gain"):
                    value = row.get(metric)
                    if value is not None and value == value:  # NaN (undefined ratio) is not stored
                        self.catalog.add_metric(name, task=row["task"], split=split, metric=prefix + metric,
                                                value=value, extra=extra)

        def mean(key: str) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
            return sum(values) / len(values) if values else None

        return {
            "name": name,
            "merged": bool(parents),
            "protocol": protocol,
            "split": split,
            "base_model": base_id,
            "tasks": rows,
            "mean": {k: mean(k) for k in ("accuracy", "macro_f1", "zero_shot_accuracy", "normalised_accuracy",
                                          "retained_gain") if mean(k) is not None},
        }

    def _zero_shot(self, model: Any, spec: Any, protocol: str, split: str) -> float:
        """The base model's accuracy on a task split (cached per hub: it never changes)."""
        from adapterhub.eval.evaluate import evaluate

        cache = self.__dict__.setdefault("_zero_shot_cache", {})
        key = (model.base_model_id, spec.name, protocol, split)
        if key not in cache:
            cache[key] = evaluate(None, spec, protocol=protocol, split=split, model=model).accuracy
        return float(cache[key])

    def _own_accuracy(self, parent: str, spec: Any, protocol: str, split: str, model: Any, *, record: bool) -> float:
        """A parent adapter's accuracy on its task: its newest matching metric, else measured now."""
        from adapterhub.eval.evaluate import evaluate

        metric = "accuracy" if protocol == "similarity" else f"{protocol}_accuracy"
        for m in reversed(self.catalog.metrics(parent)):
            if m.task == spec.name and m.split == split and m.metric == metric:
                return float(m.value)
        result = evaluate(
            self.load(parent), spec, protocol=protocol, split=split, model=model  # type: ignore[arg-type]
        )
        if record:
            self.catalog.add_metric(parent, task=spec.name, split=split, metric=metric, value=result.accuracy,
                                    extra={"protocol": protocol, "n": result.n, "source": "adapterhub eval"})
        return float(result.accuracy)

    @staticmethod
    def merge_quality(
        *,
        quick: bool = False,
        out: str | Path | None = None,
        library: str | Path | None = None,
        seeds: Sequence[int] | None = None,
        ks: Sequence[int] | None = None,
        max_examples: int | None = None,
        split: str = "test",
        threads: int | None = None,
        progress: Any = None,
    ) -> dict[str, Any]:
        """The merge-quality table over the shipped task library (``adapterhub.eval.merge_quality``).

        Args:
            quick: a few-minute version (all-task merge, k = 8, one seed, core methods).
            out: folder for ``merge_quality.md``/``.json``/``.png`` (nothing written if ``None``).
            library: folder of task adapters (default: the repository's ``examples/``).
            seeds, ks, max_examples: override the plan's seeds, ranks and examples per task.
            split: the reported split (``"test"``; ``"validation"`` for tuning studies).
            threads: torch threads while evaluating (merges use one).
            progress: called with one line per finished step.

        Returns:
            The report as a dict (``rows``, ``references``, ``lego_vs_best_baseline``, ...) plus
            ``"files"`` (the paths written).

        Raises:
            LibraryNotFoundError, InvalidParameterError.
        """
        import dataclasses

        from adapterhub.eval.library import load_library
        from adapterhub.eval.merge_quality import default_plan, quick_plan, run_merge_quality, torch_threads
        from adapterhub.eval.tasks import load_task
        from adapterhub.models.base import cached_base_model

        lib = load_library(library)
        adapters = {t: adapter for t, (adapter, _meta) in lib.items()}
        tasks = {t: load_task(t) for t in adapters}
        plan = quick_plan() if quick else default_plan()
        changes: dict[str, Any] = {"split": split}
        if seeds:
            changes["seeds"] = tuple(seeds)
        if ks:
            changes["ks"] = tuple(ks)
        if max_examples is not None:
            changes["max_examples"] = max_examples
        plan = dataclasses.replace(plan, **changes)
        with torch_threads(threads):
            report = run_merge_quality(adapters, tasks, model=cached_base_model(), plan=plan, progress=progress)
        data = report.to_dict()
        data["files"] = {k: str(v) for k, v in report.write(out).items()} if out is not None else {}
        return data

    @staticmethod
    def demo(
        *,
        home: str | Path | None = None,
        library: str | Path | None = None,
        out: str | Path | None = None,
        quick: bool = False,
        threads: int | None = None,
        progress: Any = None,
    ) -> dict[str, Any]:
        """The end-to-end demo on a fresh catalog: import the shipped task adapters, merge them with
        LoRA-LEGO and the baselines, score every merge on every task, write a table and a plot.

        Args:
            home: the demo's ``ADAPTERHUB_HOME`` (default ``./demo-home``); its ``demo/`` entries
                are remade on every run, imported adapters are reused.
            library: folder of task adapters (default: the repository's ``examples/``).
            out: where ``demo.md`` and ``demo.png`` go (default ``<home>/report``).
            quick: three tasks and two methods, for a smoke test.
            threads: torch threads while evaluating.
            progress: called with one line per step.

        Returns:
            ``{"home", "library", "rows", "files", "seconds", ...}`` (see ``adapterhub.demo``).
        """
        from adapterhub.demo import run_demo

        return run_demo(home=home, library=library, out=out, quick=quick, threads=threads, progress=progress)
