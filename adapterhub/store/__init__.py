"""Storage: the SQL catalog (``Catalog``) and the content-addressed blob store (``BlobStore``).

Importing this package does not import SQLAlchemy: opening an up-to-date SQLite catalog and reading
it use the standard library's ``sqlite3`` (see ``connections.py``); writes load the ORM on first use.
"""

from adapterhub.store.blobs import BlobStore, GcResult, validate_digest
from adapterhub.store.catalog import Catalog
from adapterhub.store.records import AdapterRecord, LineageRecord, MetricRecord, RevisionFileRecord, RevisionRecord
from adapterhub.store.revision_ids import make_revision_id

__all__ = [
    "AdapterRecord",
    "BlobStore",
    "Catalog",
    "GcResult",
    "LineageRecord",
    "MetricRecord",
    "RevisionFileRecord",
    "RevisionRecord",
    "make_revision_id",
    "validate_digest",
]
