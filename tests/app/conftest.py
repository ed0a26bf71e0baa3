"""Fixtures for the facade and CLI tests: a fresh home and an in-process CLI runner."""

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



@pytest.fixture
def tiny_smollm2(monkeypatch: pytest.MonkeyPatch):
    """A tiny random Llama that stands in for SmolLM2 wherever the real base would be loaded."""
    from adapterhub.models.causal import SMOLLM2_ID, tiny_random_llama

    lm = tiny_random_llama(seed=3)
    lm.base_model_id = SMOLLM2_ID
    monkeypatch.setattr("adapterhub.models.causal.cached_smollm2", lambda dtype=None: lm)
    return lm
