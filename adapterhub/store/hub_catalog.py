"""Database operations on the hub server's tables (``orm_hub``), on a ``Catalog``'s engine.

Plain functions over a ``Catalog`` rather than methods on it, so the catalog stays about adapters
and the hub tables stay in one place. Each function is one transaction (``Catalog.session``, so
SQLite writes take the write lock up front exactly as catalog writes do; inside
``Catalog.transaction()`` they join that transaction) and returns frozen records, never ORM
objects. Attaching files to a revision is a write of the catalog transaction
(``CatalogWriter.add_revision_files``), so a revision and its files can commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError

from adapterhub.errors import AuthError, InvalidParameterError
from adapterhub.store.catalog import Catalog
from adapterhub.store.orm_hub import HubRepo, RevisionFile, Token
from adapterhub.store.records import RevisionFileRecord
from adapterhub.store.writer import revision_pk

__all__ = [
    "HubRepoRecord",
    "TokenRecord",
    "add_revision_files",
    "add_token",
    "create_repo",
    "file_digest_in_use",
    "find_token",
    "get_repo",
    "list_tokens",
    "private_repo_names",
    "referenced_file_digests",
    "remove_token",
    "revision_files",
    "touch_token",
]


@dataclass(frozen=True, slots=True)
class HubRepoRecord:
    """A repo created through the hub API."""

    name: str
    private: bool
    created: datetime


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An access token, without its secret (only its sha256 is stored)."""

    id: int
    name: str
    write: bool
    created: datetime
    last_used: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": "write" if self.write else "read",
            "created": self.created.isoformat(),
            "last_used": self.last_used.isoformat() if self.last_used else None,
        }


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- repos ---------------------------------------------------------------------------------------


def create_repo(catalog: Catalog, name: str, *, private: bool) -> bool:
    """Record a hub repo; returns False (and changes nothing) when it was already recorded."""
    try:
        with catalog.session(write=True) as session:
            if session.scalar(select(exists().where(HubRepo.name == name))):
                return False
            session.add(HubRepo(name=name, private=private, created=_now()))
    except IntegrityError:  # another process created it between our check and our insert
        return False
    return True


def get_repo(catalog: Catalog, name: str) -> HubRepoRecord | None:
    """The hub repo row of ``name``, or None when it was never created through the hub API."""
    with catalog.session() as session:
        row = session.scalars(select(HubRepo).where(HubRepo.name == name)).one_or_none()
        return HubRepoRecord(row.name, row.private, row.created) if row else None


def private_repo_names(catalog: Catalog) -> set[str]:
    """Names of the repos created private (hidden from anonymous listings)."""
    with catalog.session() as session:
        return set(session.scalars(select(HubRepo.name).where(HubRepo.private.is_(True))))


# -- revision files ------------------------------------------------------------------------------


def add_revision_files(catalog: Catalog, name: str, revision: str, files: Sequence[RevisionFileRecord]) -> None:
    """Attach extra files to a revision (their blobs must already be stored); one transaction.

    Inside a larger operation use ``CatalogWriter.add_revision_files`` in its transaction.
    """
    with catalog.transaction() as tx:
        tx.add_revision_files(name, revision, files)


def revision_files(catalog: Catalog, name: str, revision: str) -> list[RevisionFileRecord]:
    """The extra files of one revision (full 40-hex id), by path."""
    with catalog.session() as session:
        rev_id = revision_pk(session, name, revision)
        rows = session.scalars(
            select(RevisionFile).where(RevisionFile.revision_id == rev_id).order_by(RevisionFile.path)
        ).all()
        return [RevisionFileRecord(r.path, r.digest, r.size) for r in rows]


def referenced_file_digests(catalog: Catalog) -> set[str]:
    """Every blob digest that a revision file references (add these to the catalog's for ``gc``)."""
    with catalog.session() as session:
        return set(session.scalars(select(RevisionFile.digest).distinct()))


def file_digest_in_use(catalog: Catalog, digest: str) -> bool:
    """Whether any revision file references this blob."""
    with catalog.session() as session:
        return bool(session.scalar(select(exists().where(RevisionFile.digest == digest))))


# -- tokens --------------------------------------------------------------------------------------


def _token_record(row: Token) -> TokenRecord:
    return TokenRecord(row.id, row.name, row.write, row.created, row.last_used)


def add_token(catalog: Catalog, *, name: str, token_sha256: str, write: bool) -> TokenRecord:
    """Store a new token by its hash.

    Raises:
        InvalidParameterError: a token with this name exists.
    """
    try:
        with catalog.session(write=True) as session:
            row = Token(name=name, token_sha256=token_sha256, write=write, created=_now(), last_used=None)
            session.add(row)
            session.flush()
            return _token_record(row)
    except IntegrityError:
        raise InvalidParameterError(
            f"a token named {name!r} exists; choose another --name or revoke it with `adapterhub token revoke {name}`"
        ) from None


def list_tokens(catalog: Catalog) -> list[TokenRecord]:
    """All tokens, oldest first."""
    with catalog.session() as session:
        return [_token_record(r) for r in session.scalars(select(Token).order_by(Token.id))]


def remove_token(catalog: Catalog, key: str) -> TokenRecord:
    """Delete the token named ``key`` (or with id ``key``); it stops working at once.

    Raises:
        AuthError: no such token.
    """
    with catalog.session(write=True) as session:
        row = session.scalars(select(Token).where(Token.name == key)).one_or_none()
        if row is None and key.isdigit():
            row = session.get(Token, int(key))
        if row is None:
            raise AuthError(f"no token named {key!r}; see `adapterhub token list`")
        record = _token_record(row)
        session.execute(delete(Token).where(Token.id == row.id))
        return record


def find_token(catalog: Catalog, token_sha256: str) -> TokenRecord | None:
    """The token whose secret hashes to ``token_sha256``, or None."""
    with catalog.session() as session:
        row = session.scalars(select(Token).where(Token.token_sha256 == token_sha256)).one_or_none()
        return _token_record(row) if row else None


def touch_token(catalog: Catalog, token_id: int, when: datetime | None = None) -> None:
    """Record that a token was just used (callers throttle this; it is a write)."""
    with catalog.session(write=True) as session:
        session.execute(update(Token).where(Token.id == token_id).values(last_used=when or _now()))
