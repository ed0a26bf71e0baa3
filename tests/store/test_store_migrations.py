"""The schema comes from Alembic migrations, matches the ORM, and is applied safely on open."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from adapterhub.errors import CatalogSchemaError
from adapterhub.store import Catalog
from adapterhub.store.database import MIGRATIONS_DIR, alembic_config, make_engine, schema_metadata, upgrade_database

METADATA = schema_metadata()
TABLES = set(METADATA.tables) | {"alembic_version"}
CATALOG_TABLES = {"adapters", "adapter_tags", "adapter_revisions", "lineage", "metrics"}
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_migrated_schema_matches_orm(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade_database(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            diffs = compare_metadata(context, METADATA)
            assert diffs == [], f"ORM and migrations disagree; write a migration for: {diffs}"
            assert set(inspect(conn).get_table_names()) == TABLES and CATALOG_TABLES <= TABLES
            assert context.get_current_revision() == HEAD
    finally:
        engine.dispose()


def test_open_migrates_once_and_keeps_data(db_url: str, make_record) -> None:  # type: ignore[no-untyped-def]
    with Catalog(db_url) as catalog:
        catalog.add(make_record("acme/a"))
    with Catalog(db_url) as catalog:  # second open: nothing to do, data intact
        assert catalog.names() == ["acme/a"]
        with catalog.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade_database(engine)
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        upgrade_database(engine)
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == TABLES
    finally:
        engine.dispose()


def test_newer_schema_is_refused(db_url: str) -> None:
    Catalog(db_url).close()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    with pytest.raises(CatalogSchemaError, match="upgrade adapterhub"):
        Catalog(db_url)


def test_sqlite_settings(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "folder" / "catalog.db"  # parent folders are created
    with Catalog(f"sqlite:///{db}") as catalog, catalog.engine.connect() as conn:
        assert db.is_file()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_migrations_are_package_files() -> None:
    # pyproject ships store/migrations/*.py and versions/*.py as package data; nothing else is needed.
    assert (MIGRATIONS_DIR / "env.py").is_file()
    versions = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py"))
    assert versions[0] == "0001_initial.py" and all(name[:4].isdigit() for name in versions)
    assert not list(MIGRATIONS_DIR.glob("*.ini"))


def test_schema_head_constant_is_the_newest_migration():
    """Opening a catalog skips Alembic when the database is at SCHEMA_HEAD, so it must be the head."""
    from adapterhub.store.connections import SCHEMA_HEAD
    from adapterhub.store.database import _script_revisions

    head, known = _script_revisions()
    assert SCHEMA_HEAD == head, f"set SCHEMA_HEAD = {head!r} in adapterhub/store/connections.py"
    assert SCHEMA_HEAD in known
