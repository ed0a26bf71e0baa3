"""A real uvicorn server on a free loopback port, in a background thread, for the hub tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from adapterhub.app import AdapterHub
from adapterhub.server import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port>; yields the base URL; stops the server after."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="adapterhub-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def store_state(home: Path) -> tuple[list[str], list[str], list[tuple[str, int]]]:
    """What a home holds: (catalog names, blob files, (name, revision count) pairs).

    Opened read-only in spirit: a fresh facade, closed at once.
    """
    hub = AdapterHub(home)
    try:
        names = [r.name for r in hub.list()]
        revisions = [(n, len(hub.catalog.revisions(n))) for n in names]
    finally:
        hub.close()
    root = home / "blobs"
    blobs = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return names, blobs, revisions


def online_env(monkeypatch: Any, cache: Path) -> None:
    """Let huggingface_hub reach the loopback server (tests/conftest.py sets offline mode)."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Anything that falls back to the default endpoint fails at once on loopback, never the internet.
    # (hf_hub_url swaps an explicit endpoint in for the ENDPOINT prefix of the template: patch both.)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)


# -- fixtures (imported by tests/server/conftest.py and tests/hub/conftest.py) ---------------------

MAX_UPLOAD = 256 * 1024  # small, so the oversize cases are cheap


@dataclass
class Live:
    """A running server: its URL, its facade and home, a write token and a read-only token."""

    url: str
    hub: AdapterHub
    home: Path
    token: str
    read_token: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("server-home")
    hub = AdapterHub(home)
    token = hub.create_token(name="writer")["token"]
    read_token = hub.create_token(name="reader", write=False)["token"]
    with live_server(create_app(hub, max_upload_bytes=MAX_UPLOAD)) as url:
        yield Live(url, hub, home, token, read_token)
    hub.close()


@pytest.fixture(scope="module", autouse=True)
def online(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Online clients for the whole module (module-scoped fixtures push and pull too)."""
    with pytest.MonkeyPatch.context() as mp:
        online_env(mp, tmp_path_factory.mktemp("hf-cache"))
        yield
