"""Fixtures for the store tests: a fresh catalog database per test on SQLite and on PostgreSQL.

PostgreSQL runs when ``ADAPTERHUB_TEST_POSTGRES_URL`` points at a server (an admin URL, e.g. the
``postgres`` database; ``scripts/start_postgres.sh`` starts one). Each test gets its own database,
created before and dropped after it. Without the variable the PostgreSQL cases are skipped, except
under ``CI``, where they fail: CI starts a real server and must not silently test less.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from adapterhub.store import AdapterRecord, Catalog

PG_ENV = "ADAPTERHUB_TEST_POSTGRES_URL"


def _postgres_admin_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(
                f"{PG_ENV} is not set but CI is: the PostgreSQL tests must run in CI "
                "(start a server with scripts/start_postgres.sh and export its URL)",
                pytrace=False,
            )
        pytest.skip(f"{PG_ENV} not set; run scripts/start_postgres.sh and export its URL to test PostgreSQL")
    return url


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    engine = create_engine(_postgres_admin_url(), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def fresh_postgres_database(admin: Engine) -> Iterator[str]:
    """CREATE a uniquely named database, yield its URL, DROP it (closing stray connections)."""
    name = f"adapterhub_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """URL of an empty database (no schema yet) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'catalog.db'}"
    else:
        yield from fresh_postgres_database(request.getfixturevalue("postgres_admin"))


@pytest.fixture
def catalog(db_url: str) -> Iterator[Catalog]:
    cat = Catalog(db_url)
    yield cat
    cat.close()


def fake_digest(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


@pytest.fixture
def make_record() -> Callable[..., AdapterRecord]:
    """Build a valid record; keyword arguments override the defaults."""

    def make(name: str, **overrides: Any) -> AdapterRecord:
        values: dict[str, Any] = {
            "name": name,
            "digest": fake_digest(name),
            "size": 1000 + len(name),
            "rank": 8,
            "alpha": 16.0,
            "target_modules": ["q_proj", "v_proj"],
            "config": {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "base_model_name_or_path": "tiny/base"},
            "base_model": "tiny/base",
            "tags": ["lora"],
        }
        values.update(overrides)
        return AdapterRecord(**values)

    return make
