"""Fixtures for the store tests: a fresh catalog database per test on SQLite and on PostgreSQL.

PostgreSQL runs when ``ADAPTERHUB_TEST_POSTGRES_URL`` points at a server (an admin URL, e.g. the
``postgres`` database; ``scripts/start_postgres.sh`` starts one). Each test gets its own database,
created before and dropped after it. Without the variable the PostgreSQL cases are skipped, except
under ``CI``, where they fail: CI starts a real server and must not silently test less (see
``postgres_admin`` in tests/conftest.py and ``tests/helpers.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapterhub.store import AdapterRecord, Catalog
from tests.helpers import fake_digest, postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """URL of an empty database (no schema yet) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'catalog.db'}"
    else:
        with postgres_database(request.getfixturevalue("postgres_admin")) as url:
            yield url


@pytest.fixture
def catalog(db_url: str) -> Iterator[Catalog]:
    cat = Catalog(db_url)
    yield cat
    cat.close()


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
