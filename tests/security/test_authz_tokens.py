"""Token scopes as the operator makes them: the CLI's flags and defaults, and what migration 0003
makes of tokens created before tokens had owners (admin, so running deployments keep working)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from typer.testing import CliRunner

from adapterhub.app import AdapterHub
from adapterhub.app.access import may_use_namespace
from adapterhub.store import Catalog, hub_catalog
from adapterhub.store.database import alembic_config, make_engine, upgrade_database
from tests.helpers import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'catalog.db'}"
    else:
        with postgres_database(request.getfixturevalue("postgres_admin")) as url:
            yield url


def test_tokens_made_before_scopes_become_admin_tokens(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")
            conn.execute(
                text("INSERT INTO tokens (name, token_sha256, write, created) VALUES (:n, :s, :w, :c)"),
                [{"n": "old-writer", "s": "a" * 64, "w": True, "c": datetime.now(timezone.utc)},
                 {"n": "old-reader", "s": "b" * 64, "w": False, "c": datetime.now(timezone.utc)}],
            )
        upgrade_database(engine)
    finally:
        engine.dispose()
    with Catalog(db_url) as catalog:
        writer, reader = hub_catalog.find_token(catalog, "a" * 64), hub_catalog.find_token(catalog, "b" * 64)
    assert writer is not None and reader is not None
    assert (writer.admin, writer.write, writer.owner, writer.namespaces) == (True, True, None, ())
    assert (reader.admin, reader.write) == (True, False)  # scopes kept: an old read-only token stays read-only
    assert may_use_namespace(writer, "anyone/repo")


def test_token_create_flags_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapterhub.cli.main import app

    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def create(*args: str) -> dict:
        result = runner.invoke(app, ["token", "create", *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    named = create("--name", "ci")  # the existing flags still work: the token owns the namespace 'ci'
    assert (named["owner"], named["namespaces"], named["admin"], named["scope"]) == ("ci", [], False, "write")
    owned = create("--owner", "acme", "--namespace", "team2", "--namespace", "team3", "--read-only")
    assert (owned["owner"], owned["namespaces"], owned["scope"]) == ("acme", ["team2", "team3"], "read")
    assert owned["name"].startswith("token-")
    admin = create("--admin", "--name", "operator")
    assert (admin["owner"], admin["admin"]) == (None, True)
    bad = runner.invoke(app, ["token", "create", "--owner", "../etc"])
    assert bad.exit_code == 1 and "--owner" in bad.output
    unnamed = runner.invoke(app, ["token", "create", "--name", "my token"])  # no owner: the name must be one
    assert unnamed.exit_code == 1 and "--owner" in unnamed.output
    listed = runner.invoke(app, ["token", "list"])
    assert listed.exit_code == 0 and "team2" in listed.output and "every namespace" in listed.output
    with AdapterHub(tmp_path / "home") as hub:
        assert [t["name"] for t in hub.list_tokens()] == ["ci", owned["name"], "operator"]
