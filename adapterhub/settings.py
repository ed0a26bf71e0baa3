"""Environment settings, read by functions (not at import) so tests can ``monkeypatch.setenv``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def env_flag(name: str, default: bool = False) -> bool:
    """The one parser of boolean environment variables: 1/true/yes/on (any case) mean true.

    An unset or empty variable gives ``default``; anything else (0, false, no, off, typos) is false.
    """
    value = (os.environ.get(name) or "").strip().lower()
    if not value:
        return default
    return value in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Where adapterhub keeps its state.

    Attributes:
        home: ``ADAPTERHUB_HOME`` (default ``~/.adapterhub``): catalog database and blob store.
        database_url: ``ADAPTERHUB_DATABASE_URL``; default SQLite file ``home/catalog.db``.
    """

    home: Path
    database_url: str

    @property
    def blob_root(self) -> Path:
        return self.home / "blobs"


def load_settings(home: str | Path | None = None, database_url: str | None = None) -> Settings:
    """Resolve settings from arguments first, then ``ADAPTERHUB_*`` variables, then defaults."""
    env_home = os.environ.get("ADAPTERHUB_HOME")
    resolved_home = Path(home or env_home or "~/.adapterhub").expanduser().resolve()
    url = database_url or os.environ.get("ADAPTERHUB_DATABASE_URL") or f"sqlite:///{resolved_home / 'catalog.db'}"
    return Settings(home=resolved_home, database_url=url)
