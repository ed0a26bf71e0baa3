"""``adapterhub serve --workers N``: several uvicorn worker processes on one home.

uvicorn starts each worker process by importing the application by name, so a worker cannot be
handed the facade that the command built; it builds its own from the environment instead:
``ADAPTERHUB_HOME`` and ``ADAPTERHUB_DATABASE_URL`` (as every command reads them) and the serve
options in ``ADAPTERHUB_SERVE_*`` variables, which ``serve_workers`` sets before uvicorn spawns the
workers (children inherit the environment). Nothing is shared between workers but the catalog
database and the blob store: the head of a repo moves by compare-and-set in the database, so
commits arriving at different workers (or at servers on other hosts sharing one PostgreSQL) are
never lost.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from adapterhub.hubformat import DEFAULT_MAX_UPLOAD_BYTES, LFS_THRESHOLD
from adapterhub.server.app import DEFAULT_RATE_LIMIT, create_app
from adapterhub.settings import env_flag

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "ENV_LFS_THRESHOLD_BYTES",
    "ENV_MAX_UPLOAD_BYTES",
    "ENV_RATE_LIMIT",
    "ENV_READ_TOKEN_REQUIRED",
    "app_from_environment",
    "serve_workers",
]

ENV_READ_TOKEN_REQUIRED = "ADAPTERHUB_SERVE_READ_TOKEN_REQUIRED"
ENV_MAX_UPLOAD_BYTES = "ADAPTERHUB_SERVE_MAX_UPLOAD_BYTES"
ENV_LFS_THRESHOLD_BYTES = "ADAPTERHUB_SERVE_LFS_THRESHOLD_BYTES"  # "off": every file inline
ENV_RATE_LIMIT = "ADAPTERHUB_SERVE_RATE_LIMIT"  # inference requests per second per token
FACTORY = "adapterhub.server.workers:app_from_environment"


def app_from_environment() -> FastAPI:
    """The server application on the home and options named by the environment (uvicorn factory).

    Example:
        uvicorn --factory adapterhub.server.workers:app_from_environment --workers 4
    """
    from adapterhub.app import AdapterHub  # in the worker process, after it started

    max_upload = os.environ.get(ENV_MAX_UPLOAD_BYTES, "")
    lfs = os.environ.get(ENV_LFS_THRESHOLD_BYTES, "")
    try:
        rate = float(os.environ.get(ENV_RATE_LIMIT, "") or DEFAULT_RATE_LIMIT)
    except ValueError:
        rate = DEFAULT_RATE_LIMIT
    return create_app(
        AdapterHub(),
        read_token_required=env_flag(ENV_READ_TOKEN_REQUIRED),
        max_upload_bytes=int(max_upload) if max_upload.isdigit() else DEFAULT_MAX_UPLOAD_BYTES,
        lfs_threshold=None if lfs == "off" else int(lfs) if lfs.isdigit() else LFS_THRESHOLD,
        rate_limit=rate,
    )


def serve_workers(
    *,
    workers: int,
    home: str,
    database_url: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    read_token_required: bool = False,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    lfs_threshold: int | None = LFS_THRESHOLD,
    log_level: str = "info",
    rate_limit: float = DEFAULT_RATE_LIMIT,
) -> None:
    """Run ``workers`` server processes on one port until interrupted (uvicorn's process manager).

    ``home`` and ``database_url`` are the resolved settings of the command, passed on through the
    environment so every worker opens the same catalog and blob store.
    """
    import uvicorn

    os.environ["ADAPTERHUB_HOME"] = home
    os.environ["ADAPTERHUB_DATABASE_URL"] = database_url
    os.environ[ENV_READ_TOKEN_REQUIRED] = "1" if read_token_required else "0"
    os.environ[ENV_MAX_UPLOAD_BYTES] = str(max_upload_bytes)
    os.environ[ENV_LFS_THRESHOLD_BYTES] = "off" if lfs_threshold is None else str(lfs_threshold)
    os.environ[ENV_RATE_LIMIT] = str(rate_limit)
    uvicorn.run(FACTORY, factory=True, workers=workers, host=host, port=port, log_level=log_level)
