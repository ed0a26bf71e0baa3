"""Storage: the SQL catalog (``Catalog``) and the content-addressed blob store (``BlobStore``)."""

from adapterhub.store.blobs import BlobNotFoundError, BlobStore, DigestMismatchError, GcResult, validate_digest
from adapterhub.store.catalog import Catalog, RevisionNotFoundError, make_revision_id
from adapterhub.store.database import CatalogSchemaError
from adapterhub.store.records import AdapterRecord, LineageRecord, MetricRecord, RevisionRecord

__all__ = [
    "AdapterRecord",
    "BlobNotFoundError",
    "BlobStore",
    "Catalog",
    "CatalogSchemaError",
    "DigestMismatchError",
    "GcResult",
    "LineageRecord",
    "MetricRecord",
    "RevisionNotFoundError",
    "RevisionRecord",
    "make_revision_id",
    "validate_digest",
]
