"""ORM tables of the hub server: repos, the extra files of each revision, access tokens.

They live on the catalog's ``Base`` so that Alembic and the schema checks see one metadata
(migration ``0002_hub``). Anything that compares ``Base.metadata`` with a migrated database must
import this module first (``database.schema_metadata`` and ``writer`` do).

Choices, and why:
- ``hub_repos`` exists because a hub client creates a repo (``create_repo``) *before* it uploads
  anything, and an empty repo cannot be a catalog entry (an entry needs weights). It also keeps the
  repo's visibility. A repo exists for the server when it has a row here or a catalog entry.
- ``revision_files`` holds the files of a revision other than ``adapter_config.json`` and
  ``adapter_model.safetensors`` (those two come from the revision row itself: its config and its
  weights digest). Rows reference ``adapter_revisions.id`` with ``ON DELETE CASCADE``, so removing
  an adapter removes its file rows in the database; the blobs go with the next ``gc``.
- ``tokens`` stores only the sha256 of each token: a stolen database does not give write access.
  Each token has an owner namespace, extra granted namespaces and an ``admin`` flag (migration
  ``0003_token_scopes``): what it may read privately and write is decided in ``app/access``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from adapterhub.store.orm import Base, UTCDateTime

__all__ = ["HubRepo", "RevisionFile", "Token"]


class HubRepo(Base):
    """A repo created through the hub API (it may have no content yet) and its visibility."""

    __tablename__ = "hub_repos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    private: Mapped[bool] = mapped_column(Boolean)
    created: Mapped[datetime] = mapped_column(UTCDateTime)


class RevisionFile(Base):
    """One extra file (README.md, tokenizer files, …) of one revision; its bytes are a blob."""

    __tablename__ = "revision_files"
    __table_args__ = (UniqueConstraint("revision_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision_id: Mapped[int] = mapped_column(ForeignKey("adapter_revisions.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class Token(Base):
    """An access token of the hub server, by the sha256 of its secret."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    write: Mapped[bool] = mapped_column(Boolean)
    # the namespace it acts for (None only for admin tokens), more namespaces it was granted, and
    # whether it is the operator's token (every namespace, every private repo)
    owner: Mapped[str | None] = mapped_column(String(96))
    namespaces: Mapped[list[str]] = mapped_column(JSON)
    admin: Mapped[bool] = mapped_column(Boolean)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime)
