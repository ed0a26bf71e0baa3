"""``adapterhub route`` over a catalog: state kept as artifacts, add/rm, labels, bad input.

Uses three shipped library adapters (real MiniLM LoRAs with their example files) on the real base.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adapterhub.app import AdapterHub
from adapterhub.eval.library import library_dir

TASKS = ("wn_pos", "wn_noun_supersense", "chat_topic")
NOUN_LABELS = ["noun.animal", "noun.plant", "noun.food", "noun.artifact",
               "noun.person", "noun.location", "noun.body", "noun.substance"]


@pytest.fixture
def hub(home: Path):
    with AdapterHub(home) as hub:
        for task in TASKS:
            hub.add(library_dir() / task, f"lib/{task}", task=task)
        yield hub


def _artifacts(hub: AdapterHub) -> list[tuple[str, str]]:
    with hub.catalog.reading() as reader:
        return sorted((r[0], r[1]) for r in reader.rows("SELECT kind, source_digest FROM artifacts"))


def test_add_keeps_the_folders_examples_and_routing_stores_one_prototype_each(hub):
    from adapterhub.app.examples import examples_of

    expected = [json.loads(line)["text"] for line in (library_dir() / "wn_pos" / "adapterhub_examples.jsonl").read_text().splitlines()]
    assert examples_of(hub, "lib/wn_pos") == expected and 1 <= len(expected) <= 32
    [decision] = hub.route("a large bird that cannot fly", top_k=2, temperature=0.05)
    assert len(decision.adapters) == 2 and abs(sum(w for _, w in decision.adapters) - 1) < 1e-6
    assert [kind for kind, _ in _artifacts(hub)] == ["route.prototype"] * 3


def test_routing_state_survives_add_and_rm_without_recomputing_the_others(hub, monkeypatch):
    from adapterhub.route import prototype

    hub.route("a dog", top_k=1)
    calls: list[int] = []
    real = prototype.embed_examples
    monkeypatch.setattr(prototype, "embed_examples", lambda *a, **k: calls.append(1) or real(*a, **k))
    hub.add(library_dir() / "wn_adj_kind", "lib/wn_adj_kind", task="wn_adj_kind")
    hub.route("a dog", top_k=1)
    assert len(calls) == 1  # only the new adapter's prototype was computed
    hub.remove("lib/wn_pos")
    [decision] = hub.route("a dog", top_k=4)
    assert {n for n, _ in decision.adapters} == {"lib/wn_noun_supersense", "lib/chat_topic", "lib/wn_adj_kind"}
    assert len(calls) == 1
    hub.gc(grace_seconds=0)  # the removed adapter's prototype goes; the others stay
    assert len(_artifacts(hub)) == 3


def test_candidate_labels_of_a_task_route_to_its_adapter_exactly(hub):
    [decision] = hub.route("a small songbird", labels=NOUN_LABELS, run=True)
    assert decision.adapters == [("lib/wn_noun_supersense", 1.0)] and decision.by_labels
    assert decision.prediction == "noun.animal"


def test_top_1_mixture_is_exactly_the_adapter_alone(hub):
    """A one-hot row of per-example weights gives the outputs of that adapter attached alone (to
    float rounding: the mixed layer sums over all attached ranks, zeros included)."""
    from adapterhub.models import cached_base_model, lora_attached

    model = cached_base_model()
    adapters = [hub.load(f"lib/{t}") for t in TASKS]
    texts = ["a small songbird", "run quickly"]
    with lora_attached(model.model, adapters):
        mixed = model.encode(texts, per_example=torch.tensor([[0.0, 1.0, 0.0]] * 2))
    with lora_attached(model.model, [adapters[1]]):
        alone = model.encode(texts)
    torch.testing.assert_close(mixed, alone, rtol=0, atol=1e-6)


def test_learned_router_is_cached_per_inventory(hub):
    first = hub.route(["a dog", "hello there"], router="learned", top_k=1)
    again = hub.route(["a dog", "hello there"], router="learned", top_k=1)
    assert [d.adapters for d in first] == [d.adapters for d in again]
    assert [kind for kind, _ in _artifacts(hub)].count("route.learned") == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["x", "--router", "oracle"], "unknown router"),
        (["x", "--top-k", "0"], "top_k must be"),
        (["x", "--temperature", "0"], "temperature must be"),
        (["x" * 5000], "at most 4096 characters"),
        (["x", "--among", "lib/missing"], "lib/missing"),
        (["x", "--run"], "--labels"),
        (["--top-k", "1"], "give one QUERY or --file"),
    ],
)
def test_bad_route_input_is_one_line_and_exit_1(hub, cli, args, needle):
    result = cli("route", *args)
    assert result.exit_code == 1, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_empty_catalog_and_mixed_bases_are_refused(home, cli, tmp_path):
    assert "at least one adapter" in cli("route", "x").output
    from tests.helpers import write_random_adapter

    with AdapterHub(home) as hub:
        hub.add(library_dir() / "wn_pos", "lib/wn_pos")
        hub.add(write_random_adapter(tmp_path / "bert", seed=1), "other/tiny")  # base "tiny-bert"
    result = cli("route", "x", "--among", "lib/wn_pos", "--among", "other/tiny")
    assert result.exit_code == 1 and "different base models" in result.output
    assert cli("route", "x", "--router", "arrow").exit_code == 1  # the default inventory holds both


def test_route_file_and_json_answer(hub, cli, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"query": "a dog"}\n{"text": "good morning"}\nplain line\n')
    result = cli("route", "--file", queries, "--top-k", "1", "--json")
    assert result.exit_code == 0, result.output
    routes = json.loads(result.output)["routes"]
    assert [r["query"] for r in routes] == ["a dog", "good morning", "plain line"]
    assert all(len(r["adapters"]) == 1 and r["adapters"][0]["weight"] == 1.0 for r in routes)


def test_add_refuses_a_bad_examples_file_and_stores_nothing(home, cli, tmp_path):
    bad = tmp_path / "ex.jsonl"
    bad.write_text('{"text": "ok"}\n["not", "an", "object"]\n')
    result = cli("add", library_dir() / "wn_pos", "--name", "lib/x", "--examples", bad)
    assert result.exit_code == 1 and "line 2" in result.output
    too_many = tmp_path / "many.jsonl"
    too_many.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(33)))
    assert "at most 32" in cli("add", library_dir() / "wn_pos", "--name", "lib/x", "--examples", too_many).output
    assert json.loads(cli("list", "--json").output) == []


def test_export_writes_the_examples_and_add_of_the_export_keeps_them(hub, tmp_path):
    from adapterhub.app.examples import examples_of

    folder = hub.export("lib/wn_pos", tmp_path / "out")
    assert (folder / "adapterhub_examples.jsonl").read_bytes() == (library_dir() / "wn_pos" / "adapterhub_examples.jsonl").read_bytes()
    hub.add(folder, "copy/wn_pos")
    assert examples_of(hub, "copy/wn_pos") == examples_of(hub, "lib/wn_pos")


def test_arrow_routes_without_examples_and_caches_its_vectors(hub):
    first = hub.route(["a dog", "good morning"], router="arrow", top_k=2)
    assert all(abs(sum(w for _, w in d.adapters) - 1) < 1e-5 for d in first)
    kinds = [kind for kind, _ in _artifacts(hub)]
    assert kinds.count("route.arrow") == 3
    again = hub.route(["a dog", "good morning"], router="arrow", top_k=2)
    assert [d.adapters for d in again] == [d.adapters for d in first]
    [decision] = hub.route("a small songbird", router="arrow", labels=["bird", "rock"], run=True)
    assert decision.prediction in ("bird", "rock")


def test_train_mhr_stores_a_plain_lora_with_its_inventory_shots_and_routing(hub, cli):
    record = hub.train_mhr(task="wn_adj_kind", inventory=["lib/wn_pos", "lib/chat_topic"], name="acme/adj-mhr",
                           shots=8, steps=2, seed=1)
    lineage = hub.catalog.lineage("acme/adj-mhr")
    assert [p.parent_name for p in lineage] == ["lib/wn_pos", "lib/chat_topic"]
    params = lineage[0].params
    assert params["variant"] == "z" and params["shots"] == 8 and len(params["shots_digest"]) == 64
    assert hub.blobs.has(params["routing_artifact"])
    adapter = hub.load("acme/adj-mhr")
    assert {p for p, _ in adapter.modules()} == {p for p, _ in hub.load("lib/wn_pos").modules()}
    assert record.task == "wn_adj_kind"
    bad = cli("route", "train-mhr", "--task", "wn_pos", "--inventory", "lib/wn_pos", "--name", "acme/x", "--variant", "q")
    assert bad.exit_code == 1 and "unknown MHR variant" in bad.output


def test_merge_stores_each_mixture_once_and_computes_it_exactly(hub):
    from adapterhub.models import cached_base_model, lora_attached

    [decision] = hub.route("a small songbird", top_k=2, temperature=0.05, merge=True)
    assert decision.merged.startswith("routed/") and len(decision.adapters) == 2
    [again] = hub.route("a small songbird", top_k=2, temperature=0.05, merge=True)
    assert again.merged == decision.merged and len(hub.catalog.list(tag="routed")) == 1
    model = cached_base_model()
    names, weights = zip(*decision.adapters)
    with lora_attached(model.model, [hub.load(n) for n in names], weights=list(weights)):
        mixed = model.encode(["a small songbird"])
    with lora_attached(model.model, [hub.load(decision.merged)]):
        merged = model.encode(["a small songbird"])
    torch.testing.assert_close(merged, mixed, rtol=0, atol=1e-5)
    [single] = hub.route("a small songbird", top_k=1, merge=True)
    assert single.merged == single.adapters[0][0]  # one adapter: itself, nothing stored


def test_mhr_over_a_private_adapter_is_private(hub):
    from adapterhub.store import hub_catalog

    hub_catalog.create_repo(hub.catalog, "lib/wn_pos", private=True)  # as a private hub repo would be
    hub.train_mhr(task="wn_adj_kind", inventory=["lib/wn_pos", "lib/chat_topic"], name="acme/adj-private",
                  shots=4, steps=0)
    assert "acme/adj-private" in hub_catalog.private_repo_names(hub.catalog)


def test_hedged_router_weighs_its_nucleus_by_one_over_sqrt_m(hub):
    for decision in hub.route(["a small songbird", "hello there", "quickly"], router="hedged"):
        m = len(decision.adapters)
        assert 1 <= m <= 3 and all(abs(w - m**-0.5) < 1e-6 for _, w in decision.adapters)
