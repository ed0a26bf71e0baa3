"""``adapterhub transfer`` in the catalog: the transfer kit artifact, ``prepare`` then ``run``, the
unfiltered (seeds only) transfer, privacy, and ``train(..., transfer_kit=True)``. The input checks (the
CLI's bad input, file bounds, kit and prepare refusals) are ``tests/app/test_transfer_inputs.py``'s; the
shared fixtures are ``tests/app/transfer_fixtures.py``'s.

No real model loads: the base registry is replaced by tiny random models standing in for MiniLM
(a tiny BERT, seed 0), MPNet (a tiny BERT, seed 1) and SmolLM2 (a tiny random Llama), each with the
real model id, so lineage and records read as they would for the real bases. The wiring is what is
tested here; the engine's numbers are ``tests/transfer/``'s.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from adapterhub.errors import InvalidParameterError
from tests.app.transfer_fixtures import (  # noqa: F401  (pytest fixtures are imported by name)
    CLI_SMALL,
    MINILM,
    MPNET,
    SMALL,
    SMOLLM2,
    SOURCE,
    TASK,
    _prepare,
    _state,
    _texts_file,
    data_file,
    fake,
    hub,
    seeds,
    seeds_file,
    train_texts,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- 1. prepare then run, end to end -------------------------------------------------------------------------


def test_prepare_then_transfer_stores_the_new_adapter_with_metrics_lineage_and_seeds(hub, fake, data_file,
                                                                                     train_texts):
    from adapterhub.app.examples import examples_of
    from adapterhub.app.transfer_kit import KIT_KIND, find_kit
    from adapterhub.eval.bed import score_on_task
    from adapterhub.store import artifacts
    from adapterhub.transfer import texts_digest

    source = hub.get(SOURCE)
    prepared = _prepare(hub, data_file)
    assert prepared["adapter"] == SOURCE and prepared["digest"] == source.digest and prepared["seeds"] == 5
    assert prepared["discriminator_base"] == MINILM
    assert prepared["stats"]["discriminator_real"] == 16 and prepared["stats"]["generator"] == SMOLLM2
    row = artifacts.find_artifact(hub.catalog, KIT_KIND, source.digest)
    assert row is not None and row.digest == prepared["kit"] and row.source_digest == source.digest
    kit, meta = find_kit(hub, source)
    assert kit.seeds == train_texts[:5] and meta["task"] == TASK  # default seeds: the first 5 real inputs

    stages: list[tuple[str, int, int]] = []
    out = hub.transfer(SOURCE, to_base="mpnet", progress=lambda *a: stages.append(a), **SMALL)
    name = "acme/adj-mpnet"  # the default name: source + target's short name
    assert out["source"] == SOURCE and out["to_base"] == MPNET and out["filtered"] is True
    assert out["adapter"]["name"] == name
    assert {s for s, _, _ in stages} >= {"generated", "accepted", "distillation"}

    record = hub.get(name)
    assert record.base_model == MPNET and record.task == TASK and "transferred" in record.tags
    assert record.rank == 8 and set(record.target_modules) == {"query", "key", "value", "dense"}
    shown = hub.show(name)
    metrics = {(m["split"], m["metric"]): m["value"] for m in shown["metrics"]}
    assert ("test", "accuracy") in metrics and ("test", "zero_shot_accuracy") in metrics
    assert metrics[("test", "accuracy")] == out["metrics"]["test"]["accuracy"]
    assert metrics[("test", "zero_shot_accuracy")] == out["metrics"]["test"]["zero_shot_accuracy"]
    # the metric is the stored adapter's, scored independently on the (stand-in) target base
    from adapterhub.tasks import load_task

    rescored = score_on_task(hub.load(name), load_task(TASK), fake._get("mpnet"))
    assert rescored.accuracy == pytest.approx(metrics[("test", "accuracy")])
    assert score_on_task(None, load_task(TASK), fake._get("mpnet")).accuracy == pytest.approx(
        metrics[("test", "zero_shot_accuracy")])

    # lineage complete: exactly one row, to the exact source content
    lineage = hub.catalog.lineage(name)
    assert len(lineage) == 1
    (parent,) = lineage
    assert parent.parent_name == SOURCE and parent.operation == "transfer:trans-lora"
    assert parent.parent_digest == source.digest
    params = parent.params
    assert params["source"] == SOURCE and params["source_base"] == MINILM and params["to_base"] == MPNET
    assert params["seeds_digest"] == texts_digest(kit.seeds)
    assert len(params["synthetic_digest"]) == 64 and params["synthetic_digest"] != params["seeds_digest"]
    assert 1 <= params["accepted"] <= SMALL["samples"] and params["accepted"] <= params["generated"] <= 24
    assert params["acceptance_rate"] == round(params["judged_real"] / params["generated"], 4)
    assert params["settings"]["filter_rule"] == "top"  # the default: the `samples` most real-looking are kept
    assert params["accepted"] == min(SMALL["samples"], params["generated"])
    assert params["generator"] == SMOLLM2
    assert params["transfer_kit"] == prepared["kit"] and params["filtered"] is True
    assert params["settings"]["samples"] == 6 and params["settings"]["max_candidates"] == 24
    assert params["settings"]["filter"] is True and params["settings"]["epochs"] == 1
    assert out["stats"]["seeds_digest"] == params["seeds_digest"]
    tree = hub.lineage(name)
    assert [(p["name"], p["operation"]) for p in tree["parents"]] == [(SOURCE, "transfer:trans-lora")]

    # the new entry keeps the seeds as its example inputs
    assert examples_of(hub, name) == kit.seeds
    # the source is untouched
    assert hub.get(SOURCE).digest == source.digest and hub.get(SOURCE).revision == source.revision


def test_a_named_result_with_explicit_seeds_overrides_the_kits_seeds(hub, data_file, seeds):
    from adapterhub.app.examples import examples_of
    from adapterhub.transfer import texts_digest

    _prepare(hub, data_file)
    out = hub.transfer(SOURCE, to_base="mpnet", new_name="acme/adj-seeded", seeds=seeds, **SMALL)
    assert out["adapter"]["name"] == "acme/adj-seeded" and out["filtered"] is True
    (parent,) = hub.catalog.lineage("acme/adj-seeded")
    assert parent.params["seeds_digest"] == texts_digest(seeds) and parent.params["transfer_kit"] is not None
    assert examples_of(hub, "acme/adj-seeded") == seeds


# -- 2. the kit artifact --------------------------------------------------------------------------------------


def test_the_kit_round_trips_through_bytes_and_the_blob_store(hub, fake, data_file, train_texts):
    import torch

    from adapterhub.app.transfer_kit import find_kit, kit_from_bytes, kit_to_bytes
    from adapterhub.transfer import p_real

    _prepare(hub, data_file)
    record = hub.get(SOURCE)
    kit, meta = find_kit(hub, record)
    data = kit_to_bytes(kit, TASK)
    again, meta2 = kit_from_bytes(data)
    assert again.seeds == kit.seeds and again.discriminator_base == kit.discriminator_base == MINILM
    assert again.stats == kit.stats and meta2 == meta and meta2["task"] == TASK
    assert kit_to_bytes(again, TASK) == data  # deterministic
    from adapterhub.store import artifacts

    row = artifacts.find_artifact(hub.catalog, "transfer-kit", record.digest)
    with hub.blobs.open(row.digest) as f:
        assert f.read() == data  # the stored blob is exactly the kit's bytes
    base = fake._get("minilm")
    texts = train_texts[:3] + ["zzzz qqqq xxxx", "1234 5678"]
    a = p_real(base, kit.discriminator.adapter, texts)
    b = p_real(base, again.discriminator.adapter, texts)
    assert torch.equal(a, b) and a.shape == (5,)


def test_the_kit_follows_the_exact_content_a_new_revision_has_none(hub, fake, data_file, seeds):
    from adapterhub.app.ingest import store_revision
    from adapterhub.app.transfer_kit import find_kit
    from adapterhub.models.train import train_adapter

    _prepare(hub, data_file)
    old = hub.get(SOURCE)
    assert find_kit(hub, old) is not None
    retrained = train_adapter(fake._get("minilm"), TASK, max_steps=2, rank=4, alpha=8, batch_size=8, seed=7).adapter
    store_revision(hub, SOURCE, retrained, message="retrain")
    new = hub.get(SOURCE)
    assert new.digest != old.digest
    assert find_kit(hub, new) is None
    assert find_kit(hub, old) is not None  # the old content's kit is still keyed by the old digest
    with pytest.raises(InvalidParameterError, match="no transfer kit"):
        hub.transfer_check(SOURCE, to_base="mpnet")
    assert hub.transfer_check(SOURCE, to_base="mpnet", seeds=seeds) == {"name": "acme/adj-mpnet", "filtered": False}


# -- 3. the CLI: prepare then transfer (its bad input is tests/app/test_transfer_inputs.py's) ------------


def test_cli_prepare_then_transfer(cli, hub, data_file):
    from adapterhub.app.transfer_kit import find_kit

    result = cli("transfer", "prepare", SOURCE, "--data", str(data_file), "--json")
    assert result.exit_code == 0, result.stderr
    prepared = json.loads(result.stdout)
    assert prepared["adapter"] == SOURCE and prepared["seeds"] == 5
    assert find_kit(hub, hub.get(SOURCE)) is not None
    result = cli("transfer", SOURCE, "--to-base", "mpnet", *CLI_SMALL, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["adapter"]["name"] == "acme/adj-mpnet" and out["filtered"] is True
    assert out["adapter"]["base_model"] == MPNET
    (parent,) = hub.catalog.lineage("acme/adj-mpnet")
    assert parent.params["transfer_kit"] == prepared["kit"]
    # the table form runs too (second transfer under another name)
    result = cli("transfer", SOURCE, "--to-base", "mpnet", "--name", "acme/adj-table", *CLI_SMALL)
    assert result.exit_code == 0, result.stderr
    assert "acme/adj-table" in result.stdout and "unfiltered" not in result.stderr


# -- 4. unfiltered transfer: seeds, no kit -------------------------------------------------------------------


def test_cli_transfer_without_a_kit_but_with_seeds_is_unfiltered(cli, hub, fake, seeds_file, seeds):
    from adapterhub.app.examples import examples_of
    from adapterhub.app.transfer_kit import find_kit
    from adapterhub.transfer import texts_digest

    assert find_kit(hub, hub.get(SOURCE)) is None
    result = cli("transfer", SOURCE, "--to-base", "mpnet", "--seeds", str(seeds_file), *CLI_SMALL, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["filtered"] is False
    # unfiltered: every candidate is kept, so the first round fills the samples
    assert out["stats"]["accepted"] == SMALL["samples"]
    (parent,) = hub.catalog.lineage("acme/adj-mpnet")
    assert parent.params["filtered"] is False and parent.params["transfer_kit"] is None
    assert parent.params["settings"]["filter"] is False
    assert parent.params["seeds_digest"] == texts_digest(seeds)
    assert examples_of(hub, "acme/adj-mpnet") == seeds
    assert "minilm" in fake.loads  # the teacher; no discriminator was needed
    result = cli("transfer", SOURCE, "--to-base", "mpnet", "--seeds", str(seeds_file), "--name", "acme/adj-2",
                 *CLI_SMALL)
    assert result.exit_code == 0, result.stderr
    assert "unfiltered" in result.stderr


def test_seeds_digest_matches_the_stored_examples_for_untidy_seeds(hub, tmp_path):
    from adapterhub.app.examples import examples_of
    from adapterhub.transfer import texts_digest

    untidy = _texts_file(tmp_path / "untidy.jsonl", ["  very   large ", "of\tthe sea", "made by hand"])
    hub.transfer(SOURCE, to_base="mpnet", seeds=untidy, **SMALL)
    (parent,) = hub.catalog.lineage("acme/adj-mpnet")
    assert parent.params["seeds_digest"] == texts_digest(examples_of(hub, "acme/adj-mpnet"))


# -- 5. privacy ------------------------------------------------------------------------------------------------


def test_a_private_source_gives_a_private_result(hub, seeds):
    from adapterhub.store import hub_catalog

    hub_catalog.create_repo(hub.catalog, SOURCE, private=True)  # as a private hub repo would be
    out = hub.transfer(SOURCE, to_base="mpnet", seeds=seeds, **SMALL)
    assert out["adapter"]["name"] in hub_catalog.private_repo_names(hub.catalog)
    assert hub.hub_repo_private("acme/adj-mpnet") is True
    public = hub.transfer(SOURCE, to_base="mpnet", seeds=seeds, new_name="acme/adj-2",
                          **SMALL)
    assert public["adapter"]["name"] in hub_catalog.private_repo_names(hub.catalog)


def test_a_public_source_gives_a_public_result(hub, seeds):
    from adapterhub.store import hub_catalog

    hub.transfer(SOURCE, to_base="mpnet", seeds=seeds, **SMALL)
    assert "acme/adj-mpnet" not in hub_catalog.private_repo_names(hub.catalog)


def test_a_failed_store_of_a_private_result_leaves_no_repo_row(hub, seeds, monkeypatch):
    import adapterhub.app.transfer as transfer_app
    from adapterhub.store import hub_catalog

    hub_catalog.create_repo(hub.catalog, SOURCE, private=True)
    before = _state(hub.settings.home)

    def broken(*args, **kwargs):
        raise InvalidParameterError("the store refused")

    monkeypatch.setattr(transfer_app, "add_adapter", broken)
    with pytest.raises(InvalidParameterError, match="the store refused"):
        hub.transfer(SOURCE, to_base="mpnet", seeds=seeds, **SMALL)
    assert _state(hub.settings.home) == before
    assert hub_catalog.get_repo(hub.catalog, "acme/adj-mpnet") is None


def test_a_failure_inside_the_engine_writes_nothing(hub, data_file, monkeypatch):
    import adapterhub.transfer as engine

    _prepare(hub, data_file)
    before = _state(hub.settings.home)

    def nothing_survives(*args, **kwargs):
        raise InvalidParameterError("no synthetic input survived the filter (24 generated); raise --max-candidates")

    monkeypatch.setattr(engine, "transfer_adapter", nothing_survives)
    with pytest.raises(InvalidParameterError, match="survived"):
        hub.transfer(SOURCE, to_base="mpnet", **SMALL)
    assert _state(hub.settings.home) == before
    assert not list(hub.settings.home.glob(".transfer-*"))


# -- 6. train keeps a kit ----------------------------------------------------------------------------------------


def test_train_with_transfer_kit_stores_a_kit_that_a_transfer_then_uses(hub, fake, monkeypatch):
    import adapterhub.models.base as base_mod
    from adapterhub.app.transfer_kit import find_kit
    from adapterhub.route.base import draw_examples

    # _train_encoder loads a fresh encoder (training changes it): a fresh MiniLM stand-in each time
    monkeypatch.setattr(base_mod, "load_base_model", lambda *a, **k: dataclasses.replace(
        base_mod.tiny_random_bert(seed=0), base_model_id=MINILM))
    out = hub.train(TASK, name="acme/trained", rank=4, max_steps=1, batch_size=8, transfer_kit=True)
    record = hub.get("acme/trained")
    assert out["adapter"]["name"] == "acme/trained" and record.base_model == MINILM
    found = find_kit(hub, record)
    assert found is not None
    kit, meta = found
    assert kit.seeds == draw_examples(TASK)[:5] and meta["task"] == TASK
    assert kit.discriminator_base == MINILM and kit.stats["discriminator_real"] == 128
    # without the flag no kit is made, and no generator is loaded (another seed: other weights, since a
    # kit belongs to content and the same content trained twice would find it)
    loads = dict(fake.loads)
    hub.train(TASK, name="acme/trained-nokit", rank=4, max_steps=1, batch_size=8, seed=5)
    assert hub.get("acme/trained-nokit").digest != record.digest
    assert find_kit(hub, hub.get("acme/trained-nokit")) is None and fake.loads == loads
    # the kit is used by a transfer: filtered, lineage names it
    out = hub.transfer("acme/trained", to_base="mpnet", **SMALL)
    assert out["filtered"] is True
    (parent,) = hub.catalog.lineage("acme/trained-mpnet")
    assert parent.params["transfer_kit"] is not None and parent.params["filtered"] is True


def test_store_transfer_kit_directly(hub):
    from adapterhub.app.evaluation import _store_transfer_kit
    from adapterhub.app.transfer_kit import find_kit
    from adapterhub.tasks import load_task

    record = hub.get(SOURCE)
    lines: list[str] = []
    _store_transfer_kit(hub, record, load_task(TASK), lines.append)
    assert lines and "transfer kit" in lines[0]
    assert find_kit(hub, record) is not None


def test_prepare_with_explicit_seeds_keeps_them(cli, hub, data_file, seeds_file, seeds):
    from adapterhub.app.transfer_kit import find_kit

    result = cli("transfer", "prepare", SOURCE, "--data", str(data_file), "--seeds", str(seeds_file))
    assert result.exit_code == 0, result.stderr
    assert "transfer kit of acme/adj stored" in result.stderr
    kit, _ = find_kit(hub, hub.get(SOURCE))
    assert kit.seeds == seeds


def test_gc_keeps_a_kit_while_its_adapter_lives_and_drops_it_after(hub, data_file):
    from adapterhub.app.transfer_kit import KIT_KIND
    from adapterhub.store import artifacts

    prepared = _prepare(hub, data_file)
    digest = hub.get(SOURCE).digest
    hub.gc(grace_seconds=0)
    assert artifacts.find_artifact(hub.catalog, KIT_KIND, digest) is not None
    assert hub.blobs.has(prepared["kit"])
    hub.remove(SOURCE)
    hub.gc(grace_seconds=0)
    assert artifacts.find_artifact(hub.catalog, KIT_KIND, digest) is None
    assert not hub.blobs.has(prepared["kit"])
