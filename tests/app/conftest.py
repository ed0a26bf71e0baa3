from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ADAPTERHUB_HOME with the default SQLite catalog."""
    home = tmp_path / "home"
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    monkeypatch.delenv("ADAPTERHUB_DATABASE_URL", raising=False)
    monkeypatch.delenv("ADAPTERHUB_DEBUG", raising=False)
    return home


@pytest.fixture
def cli(home: Path):
    """Run the CLI in-process; returns the click Result (stdout and stderr kept apart)."""
    from adapterhub.cli.main import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return run


def state(home: Path) -> tuple[list[str], list[str]]:
    """What is in the catalog and the blob store: (names, blob files relative to the store)."""
    from adapterhub.app import AdapterHub

    hub = AdapterHub(home)
    names = [r.name for r in hub.list()]
    hub.close()
    root = home / "blobs"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return names, files
