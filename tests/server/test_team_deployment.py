"""Three ``adapterhub serve`` processes, one PostgreSQL, one bucket: 8 pullers and 2 pushers for 30 s.

The load is ``bench/team_stress.py``, run as the command its docstring gives (tests do not import
benchmarks): it starts the servers, drives them with ``huggingface_hub``, then checks every commit
is in its repo's history, each repo's head is its last commit and every blob verifies in the bucket.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import postgres_admin_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.postgres
def test_three_servers_one_database_one_bucket_lose_nothing(s3_endpoint: str, tmp_path: Path) -> None:
    out = tmp_path / "stress.json"
    subprocess.run(
        [sys.executable, "bench/team_stress.py", "--postgres", postgres_admin_url(), "--s3", s3_endpoint,
         "--seconds", "30", "--servers", "3", "--json", str(out)],
        cwd=ROOT, check=True, timeout=400, stdout=subprocess.DEVNULL,
    )
    result = json.loads(out.read_text())
    assert result["errors"] == 0, result["error_samples"]
    assert result["lost_commits"] == [] and result["wrong_heads"] == []
    assert result["blobs_missing"] == [] and result["blobs_corrupt"] == []
    assert result["pulls"] > 100 and result["commits"] > 10 and result["shared_repo_commits"] > 2
    assert result["blobs_checked"] >= result["commits"]  # every pushed weights file is a checked blob
