"""Catalog database plumbing: engine settings per backend, and migrations run from code.

Concurrency, and why it is done this way:
- SQLite: WAL journal (readers never block the writer), ``busy_timeout`` 30 s (writers queue instead
  of failing), foreign keys on (the schema's ON DELETE CASCADE needs them), and every write
  transaction starts with ``BEGIN IMMEDIATE``. Python's ``sqlite3`` otherwise starts transactions
  lazily, so a transaction that reads and then writes can fail at once with "database is locked"
  when another process wrote in between, busy timeout or not. Taking the write lock up front turns
  that into an orderly queue. Migrations run inside such a transaction (SQLite DDL is
  transactional), which is what serialises several processes opening a new file at once.
- PostgreSQL: migrations run in one transaction holding a transaction-scoped advisory lock, so
  concurrent first opens queue, and the later ones find the schema current.
- Opening an up-to-date SQLite file does not come here at all: ``Catalog`` compares the file's
  ``alembic_version`` with ``connections.SCHEMA_HEAD`` using the standard library's ``sqlite3``.
- Migrations come from ``migrations/`` next to this file (shipped as package data), with an Alembic
  ``Config`` built in code: no ``alembic.ini`` is needed at run time. ``create_all`` is never used
  for the real schema, so every database has a migration history from its first table.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

from adapterhub.errors import CatalogSchemaError
from adapterhub.store.connections import SCHEMA_HEAD, SQLITE_BUSY_SECONDS

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_DIR",
    "WRITE_OPTION",
    "alembic_config",
    "make_engine",
    "schema_metadata",
    "upgrade_database",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Execution option on a connection: its transaction will write (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "adapterhub_write"
_PG_MIGRATION_LOCK = int.from_bytes(b"adptrhub", "big")  # any fixed 63-bit key, unique to us
_SQLITE_BUSY_MS = int(SQLITE_BUSY_SECONDS * 1000)


def schema_metadata() -> MetaData:
    """The metadata of every table the migrations create: the catalog's and the hub server's.

    The ORM modules register their tables on one ``Base`` when imported; importing them all here
    gives Alembic (``migrations/env.py``) and the schema tests the complete picture.
    """
    import adapterhub.store.orm_artifacts  # noqa: F401  (registers artifacts)
    import adapterhub.store.orm_hub  # noqa: F401  (registers hub_repos, revision_files, tokens)
    import adapterhub.store.orm_jobs  # noqa: F401  (registers jobs)
    from adapterhub.store.orm import Base

    return Base.metadata


def _sqlite_connect(memory: bool):  # type: ignore[no-untyped-def]
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (see the module docstring); sqlite3 still sends COMMIT/ROLLBACK.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                # Switching to WAL needs a brief exclusive lock; a concurrent first open may see
                # "locked" even with busy_timeout, so retry for up to the same 30 s.
                deadline = time.monotonic() + _SQLITE_BUSY_MS / 1000
                while True:
                    try:
                        cursor.execute("PRAGMA journal_mode = WAL")
                        break
                    except Exception as e:  # sqlite3.OperationalError
                        if "locked" not in str(e) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
        finally:
            cursor.close()

    return on_connect


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine with the catalog's connection settings (SQLite pragmas, folder created)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if memory:
        # One shared connection, or every checkout would see its own empty database.
        engine = create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
    event.listen(engine, "connect", _sqlite_connect(memory))
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (pass a connection via ``attributes``)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@lru_cache(maxsize=1)
def _script_revisions() -> tuple[str, frozenset[str]]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None, f"no Alembic revisions under {MIGRATIONS_DIR}"
    return head, frozenset(rev.revision for rev in script.walk_revisions())


def _current_revision(conn: Connection) -> str | None:
    """The revision recorded in ``alembic_version`` (None for a new database), read with plain SQL."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_database(engine: Engine) -> None:
    """Bring the schema to the newest migration; a no-op (one SELECT) when it is already there.

    Several processes may call this on the same new database at once: on SQLite the migration runs
    in a ``BEGIN IMMEDIATE`` transaction, on PostgreSQL under a transaction-scoped advisory lock, so
    one process migrates and the others wait, then find the schema current.

    Raises:
        CatalogSchemaError: the database was migrated by a newer adapterhub.
    """
    with engine.connect() as conn:
        current = _current_revision(conn)
    if current == SCHEMA_HEAD:
        return
    from alembic import command

    head, known = _script_revisions()
    if current is not None and current not in known:
        raise CatalogSchemaError(
            f"the catalog database is at schema revision {current!r}, newer than this adapterhub "
            f"knows (newest {head!r}); upgrade adapterhub (pip install -U adapterhub)"
        )
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
