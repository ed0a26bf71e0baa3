"""``HubCore``: the state every service of the facade works on.

The services (``ingest``, ``merging``, ``sync``, ``repos``, ``tokens``, ``evaluation``) are plain
functions that take a ``HubCore`` first; ``AdapterHub`` subclasses it and binds those functions as
its methods. Keeping the state here, below every service, means a service never imports the
facade, and every cache or lock the services share is declared once, with its type, in
``__init__`` instead of being conjured up on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapterhub.settings import Settings, load_settings, prepare_home
from adapterhub.store import BlobStore, Catalog


def open_blob_store(settings: Settings) -> BlobStore:
    """The local blob folder, or the bucket of ``ADAPTERHUB_BLOB_URL`` behind a local cache."""
    if settings.blob_url is None:
        return BlobStore(settings.blob_root)
    from adapterhub.store.object_blobs import ObjectBlobStore  # obstore only where a bucket is used

    return ObjectBlobStore(settings.blob_url, settings.blob_cache_root, cache_bytes=settings.blob_cache_mb * 1024**2,
                           download_endpoint=settings.blob_download_endpoint)


class HubCore:
    """Settings, catalog and blob store, plus the process-local caches and locks of the services.

    Args:
        home: state folder (default ``ADAPTERHUB_HOME`` or ``~/.adapterhub``).
        database_url: SQLAlchemy URL (default ``ADAPTERHUB_DATABASE_URL`` or SQLite under home).
    """

    def __init__(self, home: str | Path | None = None, database_url: str | None = None) -> None:
        self.settings: Settings = load_settings(home, database_url)
        prepare_home(self.settings)  # home 0700, catalog.db 0600
        self.blobs: BlobStore = open_blob_store(self.settings)
        self.catalog: Catalog = Catalog(self.settings.database_url)
        # tokens: when each token's last_used was last written (monotonic seconds), so that a busy
        # client costs one write a minute, not one per request
        self.token_last_touched: dict[int, float] = {}
        # evaluation: the base model's accuracy per (base model, task, protocol, split); it never
        # changes, and every merged adapter's report needs it
        self.zero_shot_cache: dict[tuple[str, str, str, str], float] = {}
        # shards: packed libraries loaded from their pool blobs (pool digest -> PackedLibrary), a
        # few at a time; a packed adapter's weights are rebuilt from one when its blob is missing
        # (``AdapterHub`` sets ``blobs.materialiser`` to ``shards.materialise``)
        self.shard_libraries: dict[str, Any] = {}
        # serving: per served base (short name) its engine, adapter cache and batcher, made on the
        # first inference request; the limits are read from the environment then (``app.serving``)
        self.inference: dict[str, Any] = {}
        self.inference_limits: Any = None

    def close(self) -> None:
        """Release the catalog's connections."""
        self.catalog.close()
