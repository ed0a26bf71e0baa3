"""How catalog reads reach the database, and why a plain SQLite read never imports SQLAlchemy.

Reads are plain SQL text (``reads.py``) run through a ``Reader``: one read transaction, so a read of
several statements sees one snapshot. There are two kinds:

- ``SqliteFiles`` for a catalog in a SQLite file (``sqlite:///path``, the default): the standard
  library's ``sqlite3``. Why: ``import sqlalchemy`` alone costs about 0.19 s on a 2-core machine,
  more than half of the 0.35 s that ``adapterhub list`` may take as a whole process; ``sqlite3``
  costs 2 ms. Connections are read-only (``PRAGMA query_only``), opened with ``mode=rw`` so a
  missing file is reported instead of created empty, and pooled under a lock because the server
  reads from many threads.
- ``sqlalchemy_reader`` for everything else (PostgreSQL, in-memory SQLite, URLs with options) and
  for reads inside a write transaction, which must see that transaction's own rows.

The schema check on open reads ``alembic_version`` the same way, so opening an up-to-date catalog
and listing it imports neither SQLAlchemy nor Alembic; writes and migrations import them on first use.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["SCHEMA_HEAD", "SQLITE_BUSY_SECONDS", "Reader", "SqliteFiles", "sqlalchemy_reader", "sqlite_file"]

# The newest migration's revision id. Opening an up-to-date catalog compares against this constant
# and never imports Alembic; a test checks it equals the head of migrations/versions/.
SCHEMA_HEAD = "0006"
SQLITE_BUSY_SECONDS = 30.0  # writers queue this long for the lock instead of failing "locked"
_SQLITE_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


class Reader(Protocol):
    """One read transaction: run SELECTs (``:name`` parameters) and get all their rows."""

    dialect: str

    def rows(self, sql: str, params: Mapping[str, Any] = ...) -> Sequence[Sequence[Any]]: ...


def sqlite_file(url: str) -> str | None:
    """The file of a plain ``sqlite:///path`` URL, or None for any other URL.

    Only the plain form is read without SQLAlchemy: in-memory databases, ``file:`` URIs and URLs
    with options (``?``) or escapes (``%``) keep the SQLAlchemy path, which knows their meaning.
    """
    for prefix in _SQLITE_PREFIXES:
        if url.startswith(prefix):
            path = url[len(prefix) :]
            if not path or path == ":memory:" or path.startswith("file:") or any(c in path for c in "?#%"):
                return None
            return path
    return None


class _SqliteReader:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Mapping[str, Any] = {}) -> list[Any]:  # noqa: B006 (never mutated)
        return self._conn.execute(sql, params).fetchall()


class SqliteFiles:
    """Pooled read-only ``sqlite3`` connections to one SQLite file.

    Args:
        path: the database file (as in the ``sqlite:///`` URL: relative paths are relative to the
            working directory).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._uri = f"file:{path}?mode=rw"
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _checkout(self) -> sqlite3.Connection:
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not share its parent's connections
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        conn = sqlite3.connect(
            self._uri, uri=True, timeout=SQLITE_BUSY_SECONDS, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA query_only = ON")
        return conn

    @contextmanager
    def reading(self) -> Iterator[Reader]:
        """One read transaction (a consistent snapshot in WAL mode).

        Raises:
            sqlite3.Error: the file is missing or not a database (``mode=rw`` never creates it).
        """
        conn = self._checkout()
        try:
            conn.execute("BEGIN")
            yield _SqliteReader(conn)
        finally:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # read-only: ending the snapshot is all it does
            except sqlite3.Error:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)

    def schema_revision(self) -> str | None:
        """The migration the file is at, or None when the file, or its ``alembic_version``, is missing."""
        try:
            with self.reading() as reader:
                rows = reader.rows("SELECT version_num FROM alembic_version")
        except sqlite3.Error:
            return None
        return rows[0][0] if rows else None

    def close(self) -> None:
        """Close the idle connections (later reads open new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _SqlAlchemyReader:
    def __init__(self, conn: Connection) -> None:
        from sqlalchemy import text  # lazy: SQLAlchemy is only imported on this path

        self._conn = conn
        self._text = text
        self.dialect = conn.dialect.name

    def rows(self, sql: str, params: Mapping[str, Any] = {}) -> Sequence[Any]:  # noqa: B006 (never mutated)
        return self._conn.execute(self._text(sql), params).all()


def sqlalchemy_reader(conn: Connection) -> Reader:
    """A ``Reader`` on a SQLAlchemy connection, inside whatever transaction that connection is in."""
    return _SqlAlchemyReader(conn)
