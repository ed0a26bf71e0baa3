"""Issue 9, item 15 replayed: a real ``adapterhub serve`` is killed while receiving a commit; its
staging folder stays behind, and ``adapterhub gc`` removes it at once (its process is gone) instead
of after 24 hours, while an upload still in progress elsewhere is kept."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.helpers import free_port, store_state, wait_until_serving


def _staging(home: Path) -> list[Path]:
    uploads = home / "uploads"
    return sorted(uploads.glob(".upload-*")) if uploads.is_dir() else []


def test_gc_removes_the_staging_of_a_server_killed_mid_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapterhub.cli.main import app

    home = tmp_path / "home"
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    monkeypatch.delenv("ADAPTERHUB_DATABASE_URL", raising=False)
    runner = CliRunner()
    token = json.loads(runner.invoke(app, ["token", "create", "--name", "sec", "--json"]).stdout)["token"]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapterhub.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "ADAPTERHUB_HOME": str(home)},
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/v1/health", proc)
        made = httpx.post(f"http://127.0.0.1:{port}/api/repos/create", json={"organization": "sec", "name": "killed"},
                          headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 200, made.text
        before = store_state(home)
        header = b'{"key": "header", "value": {"summary": "big", "description": ""}}\n'
        # one whole 4.5 MB file (past the server's 4 MiB feed batch, so it is staged) and half of the next
        line = b'{"key": "file", "value": {"path": "a.txt", "encoding": "base64", "content": "' + b"eHh4" * 1_500_000
        line += b'"}}\n{"key": "file", "value": {"path": "b.txt", "encoding": "base64", "content": "eHh4'  # unfinished
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                f"POST /api/models/sec/killed/commit/main HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {len(header) + len(line) + 10**6}\r\n\r\n".encode()
                + header + line
            )
            deadline = time.monotonic() + 20
            while not any(p.is_file() for d in _staging(home) for p in d.iterdir()):
                assert time.monotonic() < deadline, "the server never started staging the upload"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)  # killed mid-upload: nothing can clean up
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    left = _staging(home)
    assert len(left) == 1

    # an upload another live process on this host is receiving, younger than the grace period
    busy = home / "uploads" / f".upload-{os.getppid()}@{socket.gethostname()}-busy"
    busy.mkdir()
    (busy / "000001").write_bytes(b"x" * 100)

    result = runner.invoke(app, ["gc", "--json"])  # default grace: an hour
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["staging"] == [str(left[0])]
    assert _staging(home) == [busy]
    assert store_state(home) == before
