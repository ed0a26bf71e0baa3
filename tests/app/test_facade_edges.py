"""The facade's answers at the edges a new user hits: each is a clear error, and nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterhub.app import AdapterHub
from adapterhub.errors import AdapterNotFoundError, InvalidParameterError
from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME
from tests.helpers import write_random_adapter


@pytest.fixture
def hub(tmp_path: Path):
    with AdapterHub(tmp_path / "home") as hub:
        for i, task in enumerate(["wn_pos", "chat_topic"]):
            hub.add(write_random_adapter(tmp_path / f"src{i}", seed=i), f"acme/a{i}", task=task)
        yield hub


def test_export_refuses_a_file_and_a_non_empty_folder(hub, tmp_path):
    target = tmp_path / "out"
    hub.export("acme/a0", target)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(InvalidParameterError, match="not empty"):
        hub.export("acme/a1", target)
    assert (target / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(InvalidParameterError, match="is a file"):
        hub.export("acme/a0", a_file)
    assert a_file.read_text() == "x"
    hub.export("acme/a1", target, force=True)  # replaces the adapter files, keeps the rest
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / WEIGHTS_NAME).read_bytes() == hub.blobs.path(hub.get("acme/a1").digest).read_bytes()
    assert (target / CONFIG_NAME).is_file()


def test_lineage_of_an_unknown_name_is_an_error_and_removed_parents_stay_visible(hub):
    with pytest.raises(AdapterNotFoundError):
        hub.lineage("ns/never-existed")
    hub.merge(["acme/a0", "acme/a1"], method="linear", name="acme/m")
    hub.remove("acme/a0")
    tree = hub.lineage("acme/m")
    assert [(p["name"], p.get("missing", False)) for p in tree["parents"]] == [("acme/a0", True), ("acme/a1", False)]


def test_a_merge_needs_two_adapters(hub):
    with pytest.raises(InvalidParameterError, match="at least two"):
        hub.merge(["acme/a0"], method="linear", name="acme/one")
    assert not hub.catalog.exists("acme/one")


def test_eval_of_a_merge_whose_parent_was_removed_says_so(hub):
    hub.merge(["acme/a0", "acme/a1"], method="linear", name="acme/m")
    hub.remove("acme/a1")
    metrics_before = hub.catalog.metrics("acme/m")
    with pytest.raises(InvalidParameterError, match="acme/a1.*removed.*--task"):
        hub.evaluate_adapter("acme/m")
    assert hub.catalog.metrics("acme/m") == metrics_before
