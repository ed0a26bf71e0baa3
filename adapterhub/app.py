"""``AdapterHub``: the one facade that the CLI and the HTTP server call.

It resolves names, validates input, runs engines and stores their results with lineage. The order
of writes is what makes the catalog crash-safe: the blob is written (atomically) *before* the row
that points to it is committed, so a crash at any moment leaves at worst an unreferenced blob (which
``gc`` removes), never a row without a blob or a half-written blob under a final name.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adapterhub.errors import AdapterExistsError, BlobCorruptError, InvalidAdapterError
from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME, AdapterConfig, LoraAdapter
from adapterhub.names import validate_name
from adapterhub.settings import Settings, load_settings
from adapterhub.store import AdapterRecord, BlobStore, Catalog, LineageRecord


def _normalise_tags(tags: Iterable[str]) -> list[str]:
    cleaned = sorted({t.strip() for t in tags if t and t.strip()})
    for tag in cleaned:
        if len(tag) > 100 or any(c in tag for c in "\n\r\t"):
            raise InvalidAdapterError(f"invalid tag {tag!r}: tags are one line of at most 100 characters")
    return cleaned


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
        """Store an in-memory or on-disk adapter (e.g. an engine's output) with its lineage."""
        validate_name(name)
        if self.catalog.exists(name):
            raise AdapterExistsError(name)
        tags = _normalise_tags(tags)
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
        try:
            return self.catalog.add(record, lineage)
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
        return LoraAdapter.from_files(AdapterConfig(record.config), self.blobs.path(record.digest), validate=False)

    def export(self, name: str, folder: str | Path) -> Path:
        """Write ``name`` as a PEFT folder that ``PeftModel.from_pretrained`` loads.

        The weights are copied from the blob while hashing, and the copy is only renamed into place
        if it matches the digest, so a corrupt blob is reported, never exported.
        """
        record = self.catalog.get(name)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        from adapterhub.lora.tensorfile import atomic_write
        import hashlib

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

    def gc(self, *, grace_seconds: float = 3600.0) -> dict[str, Any]:
        """Remove blobs no catalog entry references and temp files left by killed processes.

        Anything younger than ``grace_seconds`` is kept: another process may be between writing a
        blob and committing its row. Use 0 only when nothing else writes to this home.
        """
        result = self.blobs.gc(self.catalog.referenced_digests(), grace_seconds=grace_seconds)
        return {
            "blobs": list(result.blobs),
            "temp_files": [str(p) for p in result.temp_files],
            "bytes_freed": result.bytes_freed,
        }

    def verify(self) -> dict[str, list[str]]:
        """Check every referenced blob exists and hashes to its digest."""
        bad: list[str] = []
        missing: list[str] = []
        for digest in sorted(self.catalog.referenced_digests()):
            if not self.blobs.has(digest):
                missing.append(digest)
            elif not self.blobs.verify(digest):
                bad.append(digest)
        return {"missing": missing, "corrupt": bad}

    def add_metrics(self, name: str, metrics: Mapping[str, float], *, task: str, split: str = "test") -> None:
        for metric, value in metrics.items():
            self.catalog.add_metric(name, task=task, split=split, metric=metric, value=float(value))

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "AdapterHub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
