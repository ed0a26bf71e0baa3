"""Environment settings, read by functions (not at import) so tests can ``monkeypatch.setenv``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from adapterhub.errors import InvalidParameterError


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
        blob_url: ``ADAPTERHUB_BLOB_URL`` (``s3://bucket/prefix``…): blobs in object storage;
            None keeps them on local disk under ``home/blobs``.
        blob_cache_mb: ``ADAPTERHUB_BLOB_CACHE_MB``: the local cache of an object store.
        blob_download_endpoint: ``ADAPTERHUB_BLOB_DOWNLOAD_ENDPOINT``: the bucket's endpoint as
            clients reach it, for presigned download URLs (None: the one the servers use).
        url_secret: ``ADAPTERHUB_URL_SECRET``: signs upload URLs; the same on every replica of a
            team deployment (None: a key per home).
        ray_address: ``ADAPTERHUB_RAY_ADDRESS`` (``host:port`` or ``auto``): run jobs on that Ray
            cluster; None runs them in this process.
    """

    home: Path
    database_url: str
    blob_url: str | None = None
    blob_cache_mb: int = 20480
    blob_download_endpoint: str | None = None
    url_secret: str | None = field(default=None, repr=False)  # never in logs
    ray_address: str | None = None

    @property
    def blob_cache_root(self) -> Path:
        """Where an object store keeps its local copies (a cache; the bucket is the truth)."""
        return self.home / "blob-cache"

    @property
    def blob_root(self) -> Path:
        return self.home / "blobs"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite catalog file when the catalog is the default one under home, else None."""
        default = self.home / "catalog.db"
        return default if self.database_url == f"sqlite:///{default}" else None


def prepare_home(settings: Settings) -> None:
    """Create the home private to its owner: the folder 0700, the default SQLite catalog 0600.

    Why: the home holds private repos' weights and the token table; with a usual umask (022) the
    folder and ``catalog.db`` would be readable by every local user. The modes are set explicitly
    (``chmod``), so they do not depend on the umask. An existing home keeps the mode its operator
    gave it; SQLite gives its ``-wal``/``-shm`` files the database file's mode.
    """
    home = settings.home
    if not home.is_dir():
        home.parent.mkdir(parents=True, exist_ok=True)
        try:
            home.mkdir(mode=0o700)
            os.chmod(home, 0o700)
        except FileExistsError:  # another process created it first
            pass
    database = settings.sqlite_path
    if database is not None and not database.exists():
        try:
            fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # an empty file is an empty database
        except FileExistsError:
            return
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


def load_settings(home: str | Path | None = None, database_url: str | None = None) -> Settings:
    """Resolve settings from arguments first, then ``ADAPTERHUB_*`` variables, then defaults."""
    env_home = os.environ.get("ADAPTERHUB_HOME")
    resolved_home = Path(home or env_home or "~/.adapterhub").expanduser().resolve()
    url = database_url or os.environ.get("ADAPTERHUB_DATABASE_URL") or f"sqlite:///{resolved_home / 'catalog.db'}"
    blob_url = (os.environ.get("ADAPTERHUB_BLOB_URL") or "").strip() or None
    cache_mb = (os.environ.get("ADAPTERHUB_BLOB_CACHE_MB") or "").strip()
    if cache_mb and not (cache_mb.isdigit() and int(cache_mb) > 0):
        raise InvalidParameterError(f"ADAPTERHUB_BLOB_CACHE_MB must be a positive whole number of MiB; got {cache_mb!r}")
    return Settings(home=resolved_home, database_url=url, blob_url=blob_url,
                    blob_cache_mb=int(cache_mb) if cache_mb else 20480,
                    blob_download_endpoint=(os.environ.get("ADAPTERHUB_BLOB_DOWNLOAD_ENDPOINT") or "").strip() or None,
                    url_secret=os.environ.get("ADAPTERHUB_URL_SECRET") or None,
                    ray_address=(os.environ.get("ADAPTERHUB_RAY_ADDRESS") or "").strip() or None)
