"""Push from one adapterhub home to a live server, pull into another: same digests and lineage."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import errors as hf_errors
from typer.testing import CliRunner

from adapterhub.app import AdapterHub
from adapterhub.errors import AdapterExistsError, AuthError, HubError
from adapterhub.hubformat import parse_card
from adapterhub.store import LineageRecord
from adapterhub.store.hub_client import HubClient
from tests.helpers import random_adapter, write_random_adapter

NAMES = ["acme/p1", "acme/p2", "acme/child"]


def lineage_rows(hub: AdapterHub, name: str) -> list[tuple]:
    return [(p.parent_name, p.operation, p.parent_digest, p.params, p.weight, p.position) for p in hub.catalog.lineage(name)]


def describe(hub: AdapterHub, name: str) -> dict:
    r = hub.get(name)
    return {
        "digest": r.digest,
        "size": r.size,
        "config": r.config,
        "task": r.task,
        "tags": r.tags,
        "description": r.description,
        "lineage": lineage_rows(hub, name),
        "metrics": [(m.task, m.split, m.metric, m.value) for m in hub.catalog.metrics(name)],
    }


@pytest.fixture(scope="module")
def homes(live, tmp_path_factory):
    """Home A with two parents and a merged child (lineage + metrics), pushed; home B pulled them."""
    root = tmp_path_factory.mktemp("homes")
    a, b = AdapterHub(root / "A"), AdapterHub(root / "B")
    p1 = a.add(write_random_adapter(root / "p1", seed=1), "acme/p1", task="sql", tags=["x", "y"], description="one")
    p2 = a.add(write_random_adapter(root / "p2", seed=2), "acme/p2", task="chat")
    a.add_adapter(
        random_adapter(3),
        "acme/child",
        task="merged",
        tags=["m"],
        description="a merge",
        lineage=[
            LineageRecord(parent_name="acme/p1", operation="merge:lego", parent_digest=p1.digest,
                          params={"k": 4, "seed": 0}, weight=0.6),
            LineageRecord(parent_name="acme/p2", operation="merge:lego", parent_digest=p2.digest,
                          params={"k": 4, "seed": 0}, weight=0.4),
        ],
    )
    a.add_metrics("acme/child", {"accuracy": 0.75, "loss": 1.25}, task="sql", split="test")
    pushed = {n: a.push(n, n, endpoint=live.url, token=live.token) for n in NAMES}
    pulled = {n: b.pull(n, endpoint=live.url) for n in NAMES}
    yield a, b, pushed, pulled
    a.close()
    b.close()


def test_pull_into_a_second_home_gives_identical_digests_and_lineage(live, homes):
    a, b, pushed, pulled = homes
    for name in NAMES:
        assert describe(b, name) == describe(a, name), name
        assert describe(live.hub, name)["lineage"] == describe(a, name)["lineage"]
        assert pulled[name].source_repo == name
        assert pulled[name].source_revision == pushed[name]["revision"] == live.hub.get(name).revision
    assert b.lineage("acme/child") == a.lineage("acme/child")
    assert b.verify() == {"missing": [], "corrupt": []}


def test_pushed_model_card(live, homes, tmp_path):
    from huggingface_hub import hf_hub_download

    card = Path(hf_hub_download("acme/child", "README.md", endpoint=live.url, cache_dir=str(tmp_path))).read_text()
    assert card.startswith("---\nlibrary_name: peft\nbase_model:\n- acme/p1\n- acme/p2\nbase_model_relation: merge\n")
    assert "| acme/p1 | merge:lego | 0.6 |" in card and "| sql | test | accuracy | 0.7500 |" in card
    info = parse_card(card)
    assert info.digest == homes[0].get("acme/child").digest and info.task == "merged"
    parent = Path(hf_hub_download("acme/p1", "README.md", endpoint=live.url, cache_dir=str(tmp_path))).read_text()
    assert "base_model: tiny-bert\nbase_model_relation: adapter\n" in parent


def test_pulling_the_same_commit_again_changes_nothing(live, homes):
    _, b, _, pulled = homes
    again = b.pull("acme/p2", endpoint=live.url)
    assert again == pulled["acme/p2"]
    assert len(b.catalog.revisions("acme/p2")) == 1


def test_a_new_commit_becomes_a_new_revision(live, homes, tmp_path):
    a, b, pushed, _ = homes
    a.remove("acme/p1")
    a.add(write_random_adapter(tmp_path / "p1v2", seed=9), "acme/p1", task="sql", tags=["x", "y", "z"])
    second = a.push("acme/p1", "acme/p1", endpoint=live.url, token=live.token)["revision"]
    assert second != pushed["acme/p1"]["revision"]
    record = b.pull("acme/p1", endpoint=live.url)
    revisions = b.catalog.revisions("acme/p1")
    assert len(revisions) == 2 and revisions[0].revision == record.revision
    assert record.digest == random_adapter(9).digest and record.source_revision == second
    assert record.tags == ("x", "y", "z")
    # The old commit is still there, and pulls under another name.
    old = b.pull("acme/p1", revision=pushed["acme/p1"]["revision"], name="acme/p1-old", endpoint=live.url)
    assert old.digest == pushed["acme/p1"]["digest"]


def test_a_stale_card_does_not_lend_its_lineage_to_other_weights(live, homes, tmp_path):
    a, b, _, _ = homes
    a.push("acme/child", "acme/stale", endpoint=live.url, token=live.token)
    other = write_random_adapter(tmp_path / "other", seed=77)
    from huggingface_hub import HfApi

    HfApi(endpoint=live.url, token=live.token).upload_file(
        path_or_fileobj=str(other / "adapter_model.safetensors"), path_in_repo="adapter_model.safetensors",
        repo_id="acme/stale",
    )  # the README (with the child's digest and lineage) stays as it was
    record = b.pull("acme/stale", endpoint=live.url)
    assert record.digest == random_adapter(77).digest
    assert b.catalog.lineage("acme/stale") == [] and record.tags == () and record.task is None


def test_pull_refuses_to_replace_an_entry_from_elsewhere(live, homes, tmp_path):
    _, b, _, _ = homes
    b.add(write_random_adapter(tmp_path / "own", seed=30), "acme/own")
    with pytest.raises(AdapterExistsError):
        b.pull("acme/p2", name="acme/own", endpoint=live.url)


def test_hf_endpoint_and_hf_token_are_read_at_call_time(live, homes, monkeypatch):
    a, _, _, _ = homes
    monkeypatch.setenv("HF_ENDPOINT", live.url)
    monkeypatch.setenv("HF_TOKEN", live.token)
    result = a.push("acme/p2", "acme/from-env")
    assert result["url"] == f"{live.url}/acme/from-env"
    assert live.hub.get("acme/from-env").digest == a.get("acme/p2").digest


def test_errors_say_what_to_do(live, homes, monkeypatch, tmp_path):
    a, b, _, _ = homes
    with pytest.raises(HubError, match="not found"):
        b.pull("acme/does-not-exist", endpoint=live.url)
    with pytest.raises(AuthError, match="HF_TOKEN"):
        a.push("acme/p2", "acme/no-token", endpoint=live.url, token=None)
    with pytest.raises(AuthError, match="refused"):
        a.push("acme/p2", "acme/bad-token", endpoint=live.url, token="ah_wrong")
    assert not live.hub.catalog.exists("acme/no-token") and not live.hub.catalog.exists("acme/bad-token")
    with pytest.raises(HubError, match="cannot reach"):
        b.pull("acme/p2", name="acme/x", endpoint="http://127.0.0.1:9")


def test_private_repos_need_a_token(live, homes):
    a, b, _, _ = homes
    a.push("acme/p2", "acme/secret", endpoint=live.url, token=live.token, private=True)
    with pytest.raises(HubError, match="private"):  # answered as a missing repo (404), so names cannot be probed
        b.pull("acme/secret", endpoint=live.url)
    assert b.pull("acme/secret", endpoint=live.url, token=live.read_token).digest == a.get("acme/p2").digest


def test_offline_pull_uses_the_cache_and_says_so_otherwise(live, homes, monkeypatch):
    a, b, pushed, _ = homes
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    record = b.pull("acme/p2", name="acme/p2-offline", endpoint=live.url)  # cached by the module's pull
    assert record.digest == a.get("acme/p2").digest and record.source_revision == pushed["acme/p2"]["revision"]
    with pytest.raises(HubError, match="offline"):
        b.pull("acme/never-downloaded", endpoint=live.url)
    with pytest.raises(HubError, match="offline"):
        a.push("acme/p2", "acme/p2", endpoint=live.url, token=live.token)


def _http_error(cls: type, status: int) -> Exception:
    request = httpx2.Request("GET", "https://hub.example/api/models/org/repo")
    return cls("boom", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize(
    ("error", "expected", "needle"),
    [
        (_http_error(hf_errors.GatedRepoError, 403), AuthError, "gated"),
        (_http_error(hf_errors.RepositoryNotFoundError, 404), HubError, "not found"),
        (_http_error(hf_errors.RevisionNotFoundError, 404), HubError, "no such revision"),
        (_http_error(hf_errors.HfHubHTTPError, 401), AuthError, "HF_TOKEN"),
        (_http_error(hf_errors.HfHubHTTPError, 403), AuthError, "HF_TOKEN"),
        (_http_error(hf_errors.HfHubHTTPError, 500), HubError, "HTTP 500"),
        (hf_errors.OfflineModeIsEnabled("off"), HubError, "offline"),
        (hf_errors.LocalEntryNotFoundError("not cached"), HubError, "offline"),
    ],
)
def test_every_hub_error_is_translated(error, expected, needle):
    translated = HubClient(endpoint="https://hub.example")._translate(error, "org/repo", None)
    assert type(translated) is expected and needle in str(translated)


def test_cli_push_and_pull(live, homes, tmp_path, monkeypatch):
    from adapterhub.cli.main import app

    runner = CliRunner()
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "cli-home"))
    added = runner.invoke(app, ["add", str(write_random_adapter(tmp_path / "c", seed=40)), "--name", "cli/one"])
    assert added.exit_code == 0, added.output
    pushed = runner.invoke(
        app, ["push", "cli/one", "cli/one", "--endpoint", live.url, "--token", live.token, "--json"]
    )
    assert pushed.exit_code == 0, pushed.output
    sha = json.loads(pushed.stdout)["revision"]
    pulled = runner.invoke(app, ["pull", "cli/one", "--name", "cli/again", "--endpoint", live.url, "--json"])
    assert pulled.exit_code == 0, pulled.output
    assert json.loads(pulled.stdout)["source_revision"] == sha
    missing = runner.invoke(app, ["pull", "cli/missing", "--endpoint", live.url])
    assert missing.exit_code == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: repository 'cli/missing' on ") and "not found" in missing.stderr
