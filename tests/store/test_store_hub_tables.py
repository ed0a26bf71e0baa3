"""The hub server's tables (``hub_catalog``): repos, revision files, tokens, on SQLite and PostgreSQL;
and the promise that plain reads of a SQLite catalog never import SQLAlchemy (CLI start-up)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapterhub.errors import AuthError, InvalidParameterError, RevisionNotFoundError
from adapterhub.store import AdapterRecord, Catalog, RevisionFileRecord, hub_catalog
from tests.helpers import fake_digest

MakeRecord = Callable[..., AdapterRecord]


def test_repos(catalog: Catalog) -> None:
    before = datetime.now(timezone.utc)
    assert hub_catalog.create_repo(catalog, "acme/open", private=False)
    assert hub_catalog.create_repo(catalog, "acme/secret", private=True)
    assert not hub_catalog.create_repo(catalog, "acme/open", private=True)  # already there: unchanged
    repo = hub_catalog.get_repo(catalog, "acme/open")
    assert repo is not None and repo.name == "acme/open" and repo.private is False
    assert before <= repo.created <= datetime.now(timezone.utc) and repo.created.utcoffset() == timedelta(0)
    assert hub_catalog.get_repo(catalog, "acme/none") is None
    assert hub_catalog.private_repo_names(catalog) == {"acme/secret"}


def test_revision_files(catalog: Catalog, make_record: MakeRecord) -> None:
    first = catalog.add(make_record("acme/a")).revision or ""
    files = [RevisionFileRecord("README.md", fake_digest("r"), 10), RevisionFileRecord("a/b.json", fake_digest("b"), 2)]
    hub_catalog.add_revision_files(catalog, "acme/a", first, files)
    hub_catalog.add_revision_files(catalog, "acme/a", first, [])  # nothing to attach: no error
    assert set(hub_catalog.revision_files(catalog, "acme/a", first)) == set(files)
    assert hub_catalog.referenced_file_digests(catalog) == {fake_digest("r"), fake_digest("b")}
    assert hub_catalog.file_digest_in_use(catalog, fake_digest("r")) and not hub_catalog.file_digest_in_use(catalog, fake_digest("x"))
    for name, revision in (("acme/a", "0" * 40), ("acme/none", first), ("acme/a", first[:7])):
        with pytest.raises(RevisionNotFoundError):
            hub_catalog.revision_files(catalog, name, revision)
        with pytest.raises(RevisionNotFoundError):
            hub_catalog.add_revision_files(catalog, name, revision, files)
    with pytest.raises(InvalidParameterError):
        hub_catalog.add_revision_files(catalog, "acme/a", first, [RevisionFileRecord("x", "../etc", 1)])
    second = catalog.add_revision("acme/a", digest=fake_digest("v2"), size=1, config={}, message="v2")
    assert hub_catalog.revision_files(catalog, "acme/a", second) == []  # files belong to one revision


def test_tokens(catalog: Catalog) -> None:
    writer = hub_catalog.add_token(catalog, name="ci", token_sha256=fake_digest("secret-1"), write=True)
    reader = hub_catalog.add_token(catalog, name="bot", token_sha256=fake_digest("secret-2"), write=False)
    assert (writer.name, writer.write, writer.last_used) == ("ci", True, None) and writer.created.tzinfo is not None
    with pytest.raises(InvalidParameterError, match="exists"):
        hub_catalog.add_token(catalog, name="ci", token_sha256=fake_digest("secret-3"), write=True)
    assert hub_catalog.list_tokens(catalog) == [writer, reader]
    assert hub_catalog.find_token(catalog, fake_digest("secret-2")) == reader
    assert hub_catalog.find_token(catalog, fake_digest("nope")) is None

    used = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    hub_catalog.touch_token(catalog, reader.id, used)
    assert hub_catalog.find_token(catalog, fake_digest("secret-2")).last_used == used  # type: ignore[union-attr]
    assert hub_catalog.list_tokens(catalog)[1].to_dict()["last_used"] == used.isoformat()

    assert hub_catalog.remove_token(catalog, "ci") == writer
    assert hub_catalog.remove_token(catalog, str(reader.id)).name == "bot"  # by id too
    assert hub_catalog.list_tokens(catalog) == []
    with pytest.raises(AuthError):
        hub_catalog.remove_token(catalog, "ci")


def test_plain_reads_of_a_sqlite_catalog_do_not_import_sqlalchemy(tmp_path: Path, make_record: MakeRecord) -> None:
    """``adapterhub list`` pays for SQLAlchemy only when it writes (0.2 s of start-up otherwise)."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with Catalog(url) as catalog:
        name = catalog.add(make_record("acme/a")).name
        catalog.add_metric(name, task="t", split="s", metric="m", value=1.0)
    script = (
        "import sys\n"
        "from adapterhub.store import Catalog, hub_catalog\n"
        f"catalog = Catalog({url!r})\n"
        "records = catalog.list(query='acme')\n"
        "assert [r.name for r in records] == ['acme/a'] and catalog.count(tag='lora') == 1\n"
        "catalog.get('acme/a'); catalog.metrics('acme/a'); catalog.lineage('acme/a'); catalog.revisions('acme/a')\n"
        "hub_catalog.revision_files(catalog, 'acme/a', records[0].revision)\n"
        "hub_catalog.list_tokens(catalog); hub_catalog.get_repo(catalog, 'acme/a')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic'))\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
