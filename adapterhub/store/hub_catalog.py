"""Database operations on the hub server's tables (``orm_hub``), on a ``Catalog``'s database.

Plain functions over a ``Catalog`` rather than methods on it, so the catalog stays about adapters
and the hub tables stay in one place. Each function is one transaction and returns frozen records,
never ORM objects. Reads are plain SQL through ``Catalog.reading()``; writes use the ORM tables
in a ``Catalog.transaction()`` (SQLite writes take the write lock up front, as catalog writes do),
imported on the first write: like the catalog's own reads, these need no SQLAlchemy on a SQLite
file, so importing this module costs the CLI nothing. Inside a ``Catalog.transaction()`` every
function joins that transaction. Attaching files to a revision is a write of the catalog transaction
(``CatalogWriter.add_revision_files``), so a revision and its files can commit together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from adapterhub.errors import AuthError, InvalidParameterError
from adapterhub.store import reads
from adapterhub.store.catalog import Catalog
from adapterhub.store.records import RevisionFileRecord

__all__ = [
    "HubRepoRecord",
    "TokenRecord",
    "add_revision_files",
    "add_token",
    "create_repo",
    "file_digest_in_use",
    "find_token",
    "forget_repo",
    "get_repo",
    "list_repos",
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
    """An access token, without its secret (only its sha256 is stored).

    ``owner`` is the namespace it acts for, ``namespaces`` the further namespaces it was granted;
    an ``admin`` token (the operator's) may use every namespace. ``write`` False: read-only.
    """

    id: int
    name: str
    write: bool
    created: datetime
    last_used: datetime | None
    owner: str | None = None
    namespaces: tuple[str, ...] = ()
    admin: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": "write" if self.write else "read",
            "owner": self.owner,
            "namespaces": list(self.namespaces),
            "admin": self.admin,
            "created": self.created.isoformat(),
            "last_used": self.last_used.isoformat() if self.last_used else None,
        }


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- repos ---------------------------------------------------------------------------------------


def create_repo(catalog: Catalog, name: str, *, private: bool) -> bool:
    """Record a hub repo; returns False (and changes nothing) when it was already recorded."""
    from sqlalchemy.exc import IntegrityError  # lazy, as in every write here: SQLAlchemy and the ORM

    from adapterhub.store.orm_hub import HubRepo

    try:
        with catalog.transaction() as tx:
            if get_repo(catalog, name) is not None:  # reads inside the transaction see its rows
                return False
            tx.session.add(HubRepo(name=name, private=private, created=_now()))
            tx.session.flush()
    except IntegrityError:  # another process created it between our check and our insert
        return False
    return True


def get_repo(catalog: Catalog, name: str) -> HubRepoRecord | None:
    """The hub repo row of ``name``, or None when it was never created through the hub API."""
    with catalog.reading() as reader:
        rows = reader.rows("SELECT name, private, created FROM hub_repos WHERE name = :name", {"name": name})
    return HubRepoRecord(rows[0][0], bool(rows[0][1]), reads.as_utc(rows[0][2])) if rows else None


def forget_repo(catalog: Catalog, name: str) -> None:
    """Delete the hub repo row of ``name`` (not its catalog entry): undoes ``create_repo``."""
    from sqlalchemy import delete  # lazy: SQLAlchemy and the ORM

    from adapterhub.store.orm_hub import HubRepo

    with catalog.transaction() as tx:
        tx.session.execute(delete(HubRepo).where(HubRepo.name == name))


def private_repo_names(catalog: Catalog) -> set[str]:
    """Names of the repos created private (hidden from anonymous listings)."""
    with catalog.reading() as reader:
        return {r[0] for r in reader.rows("SELECT name FROM hub_repos WHERE private = :yes", {"yes": True})}


def list_repos(catalog: Catalog) -> list[HubRepoRecord]:
    """Every repo created through the hub API, by name (``list_models`` also shows the empty ones)."""
    with catalog.reading() as reader:
        rows = reader.rows("SELECT name, private, created FROM hub_repos ORDER BY name")
    return [HubRepoRecord(r[0], bool(r[1]), reads.as_utc(r[2])) for r in rows]


# -- revision files ------------------------------------------------------------------------------


def add_revision_files(catalog: Catalog, name: str, revision: str, files: Sequence[RevisionFileRecord]) -> None:
    """Attach extra files to a revision (their blobs must already be stored); one transaction.

    Inside a larger operation use ``CatalogWriter.add_revision_files`` in its transaction.
    """
    with catalog.transaction() as tx:
        tx.add_revision_files(name, revision, files)


def revision_files(catalog: Catalog, name: str, revision: str) -> list[RevisionFileRecord]:
    """The extra files of one revision (full 40-hex id), by path.

    Raises:
        RevisionNotFoundError: no such adapter or revision.
    """
    with catalog.reading() as reader:
        rows = reader.rows(
            "SELECT path, digest, size FROM revision_files WHERE revision_id = :id ORDER BY path",
            {"id": reads.revision_row_id(reader, name, revision)},
        )
    return [RevisionFileRecord(r[0], r[1], r[2]) for r in rows]


def referenced_file_digests(catalog: Catalog) -> set[str]:
    """Every blob digest that a revision file references (add these to the catalog's for ``gc``)."""
    with catalog.reading() as reader:
        return {r[0] for r in reader.rows("SELECT DISTINCT digest FROM revision_files")}


def file_digest_in_use(catalog: Catalog, digest: str) -> bool:
    """Whether any revision file references this blob."""
    with catalog.reading() as reader:
        return bool(reader.rows("SELECT 1 FROM revision_files WHERE digest = :digest LIMIT 1", {"digest": digest}))


# -- tokens --------------------------------------------------------------------------------------

_TOKEN_COLUMNS = "id, name, write, created, last_used, owner, CAST(namespaces AS TEXT), admin"


def _token_record(r: Sequence[Any]) -> TokenRecord:
    return TokenRecord(
        id=r[0],
        name=r[1],
        write=bool(r[2]),
        created=reads.as_utc(r[3]),
        last_used=None if r[4] is None else reads.as_utc(r[4]),
        owner=r[5],
        namespaces=tuple(json.loads(r[6]) if r[6] else ()),
        admin=bool(r[7]),
    )


def add_token(
    catalog: Catalog,
    *,
    name: str,
    token_sha256: str,
    write: bool,
    owner: str | None = None,
    namespaces: Sequence[str] = (),
    admin: bool = False,
) -> TokenRecord:
    """Store a new token by its hash, with its owner namespace, granted namespaces and admin flag.

    Raises:
        InvalidParameterError: a token with this name exists.
    """
    from sqlalchemy.exc import IntegrityError  # lazy: SQLAlchemy and the ORM

    from adapterhub.store.orm_hub import Token

    try:
        with catalog.transaction() as tx:
            row = Token(
                name=name,
                token_sha256=token_sha256,
                write=write,
                owner=owner,
                namespaces=list(namespaces),
                admin=admin,
                created=_now(),
                last_used=None,
            )
            tx.session.add(row)
            tx.session.flush()
            return TokenRecord(
                row.id, row.name, row.write, row.created, row.last_used, row.owner, tuple(row.namespaces), row.admin
            )
    except IntegrityError:
        raise InvalidParameterError(
            f"a token named {name!r} exists; choose another --name or revoke it with `adapterhub token revoke {name}`"
        ) from None


def list_tokens(catalog: Catalog) -> list[TokenRecord]:
    """All tokens, oldest first."""
    with catalog.reading() as reader:
        return [_token_record(r) for r in reader.rows(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY id")]


def remove_token(catalog: Catalog, key: str) -> TokenRecord:
    """Delete the token named ``key`` (or with id ``key``); it stops working at once.

    Raises:
        AuthError: no such token.
    """
    from sqlalchemy import delete  # lazy: SQLAlchemy and the ORM

    from adapterhub.store.orm_hub import Token

    with catalog.transaction() as tx:
        rows = tx.reader.rows(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE name = :key", {"key": key})
        if not rows and key.isdigit():
            rows = tx.reader.rows(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = :id", {"id": int(key)})
        if not rows:
            raise AuthError(f"no token named {key!r}; see `adapterhub token list`")
        record = _token_record(rows[0])
        tx.session.execute(delete(Token).where(Token.id == record.id))
    return record


def find_token(catalog: Catalog, token_sha256: str) -> TokenRecord | None:
    """The token whose secret hashes to ``token_sha256``, or None."""
    with catalog.reading() as reader:
        rows = reader.rows(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_sha256 = :sha", {"sha": token_sha256})
    return _token_record(rows[0]) if rows else None


def touch_token(catalog: Catalog, token_id: int, when: datetime | None = None) -> None:
    """Record that a token was just used (callers throttle this; it is a write)."""
    from sqlalchemy import update  # lazy: SQLAlchemy and the ORM

    from adapterhub.store.orm_hub import Token

    with catalog.transaction() as tx:
        tx.session.execute(update(Token).where(Token.id == token_id).values(last_used=when or _now()))
