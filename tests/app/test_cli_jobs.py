"""``adapterhub jobs``: submit (follows to the end), list, show, cancel, run; JSON output; errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import write_random_adapter

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def catalog(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ADAPTERHUB_JOB_HEARTBEAT_S", "0.1")
    monkeypatch.delenv("ADAPTERHUB_RAY_ADDRESS", raising=False)
    for seed, name in enumerate(("acme/a", "acme/b")):
        assert cli("add", write_random_adapter(tmp_path / name.replace("/", "-"), seed), "--name", name).exit_code == 0
    merges = tmp_path / "merges.json"
    merges.write_text(json.dumps({"merges": [{"names": ["acme/a", "acme/b"], "name": "acme/ab", "method": "svd",
                                              "k": 2}]}))
    return merges


def test_submit_follows_the_job_and_list_and_show_find_it(cli, catalog):
    result = cli("jobs", "submit", "merge-batch", catalog, "--json")
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and job["kind"] == "merge_batch"
    assert job["result"]["merges"][0]["name"] == "acme/ab"
    assert "runs on the local backend" in result.stderr
    listed = json.loads(cli("jobs", "list", "--json").stdout)
    assert [j["id"] for j in listed] == [job["id"]]
    shown = cli("jobs", "show", job["id"])
    assert shown.exit_code == 0 and "succeeded" in shown.stdout and "acme/ab" in shown.stdout
    assert "acme/ab" in cli("list").stdout


def test_a_detached_job_is_queued_then_run_or_cancelled(cli, catalog):
    queued = cli("jobs", "submit", "merge_batch", catalog, "--detach", "--json")
    assert queued.exit_code == 0 and json.loads(queued.stdout)["status"] == "queued"
    job_id = json.loads(queued.stdout)["id"]
    ran = cli("jobs", "run", job_id, "--json")
    assert ran.exit_code == 0 and json.loads(ran.stdout)["status"] == "succeeded"
    other = cli("jobs", "submit", "merge-batch", '{"merges": [{"names": ["acme/a", "acme/b"], "seed": 3}]}',
                "--detach", "--json")
    other_id = json.loads(other.stdout)["id"]
    cancelled = cli("jobs", "cancel", other_id)
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.stderr
    assert json.loads(cli("jobs", "show", other_id, "--json").stdout)["status"] == "cancelled"
    assert json.loads(cli("jobs", "list", "--status", "cancelled", "--json").stdout)[0]["id"] == other_id


def test_bad_input_exits_1_with_one_line(cli, catalog, tmp_path):
    bad = cli("jobs", "submit", "nope", catalog)
    assert bad.exit_code == 1 and bad.stderr.startswith("error: unknown job kind 'nope'")
    assert "Traceback" not in bad.stderr
    taken = cli("jobs", "submit", "merge-batch", catalog)
    assert cli("jobs", "submit", "merge-batch", catalog).exit_code == 1  # acme/ab exists now
    assert taken.exit_code == 0
    assert cli("jobs", "submit", "merge-batch", tmp_path / "none.json").exit_code == 1
    assert cli("jobs", "submit", "merge-batch", "{not json").exit_code == 1
    assert cli("jobs", "show", "0" * 32).exit_code == 1
    assert cli("jobs", "list", "--json").stdout.strip().startswith("[")
