"""`adapterhub serve` and `adapterhub token` as a user runs them (a real subprocess on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from typer.testing import CliRunner

from tests.helpers import free_port, wait_until_serving


@pytest.mark.slow
def test_serve_command_with_tokens(tmp_path, monkeypatch):
    from adapterhub.cli.main import app

    home = tmp_path / "home"
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    runner = CliRunner()
    created = runner.invoke(app, ["token", "create", "--name", "ci", "--json"])
    assert created.exit_code == 0, created.output
    token = json.loads(created.stdout)["token"]
    listed = runner.invoke(app, ["token", "list", "--json"])
    assert [t["name"] for t in json.loads(listed.stdout)] == ["ci"] and token not in listed.stdout

    port = free_port()
    env = {**os.environ, "ADAPTERHUB_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapterhub.cli.main", "serve", "--port", str(port), "--read-token-required",
         "--log-level", "warning"],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/docs", proc)
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/v1/adapters").status_code == 401  # --read-token-required
        assert httpx.get(f"{url}/v1/adapters", headers=auth).json() == []
        made = httpx.post(f"{url}/api/repos/create", json={"organization": "ci", "name": "one"}, headers=auth)
        assert made.status_code == 200 and made.json()["url"] == f"{url}/ci/one"
        revoked = runner.invoke(app, ["token", "revoke", "ci"])
        assert revoked.exit_code == 0
        assert httpx.get(f"{url}/v1/adapters", headers=auth).status_code == 401  # revoked at once
    finally:
        proc.terminate()
        proc.wait(timeout=30)
