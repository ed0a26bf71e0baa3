"""``adapterhub transfer`` in the catalog: the transfer kit artifact, ``prepare`` then ``run``, the CLI's
bad input, the unfiltered (seeds only) transfer, privacy, and ``train(..., transfer_kit=True)``.

No real model loads: the base registry is replaced by tiny random models standing in for MiniLM
(a tiny BERT, seed 0), MPNet (a tiny BERT, seed 1) and SmolLM2 (a tiny random Llama), each with the
real model id, so lineage and records read as they would for the real bases. The wiring is what is
tested here; the engine's numbers are ``tests/transfer/test_engine.py``'s.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from adapterhub.errors import InvalidAdapterError, InvalidParameterError
from adapterhub.models import bases
from tests.helpers import random_adapter, store_state

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MPNET = "sentence-transformers/all-mpnet-base-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TASK = "wn_adj_kind"  # the smallest shipped task
SOURCE = "acme/adj"
SMALL = dict(samples=6, max_candidates=24, epochs=1)  # a transfer in well under a second on the tiny models
CLI_SMALL = ("--samples", "6", "--max-candidates", "24", "--epochs", "1")

pytestmark = pytest.mark.usefixtures("one_thread")


# -- fixtures ---------------------------------------------------------------------------------------------


class FakeBases:
    """The tiny stand-ins, built once per test (a loader returns the same object on every call, as the
    real cached loaders do); ``loads`` counts loader calls per base."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.loads: dict[str, int] = {}
        self.missing: set[str] = set()  # bases whose package is "not installed"

    def _get(self, name: str) -> Any:
        from adapterhub.models.base import BaseModelNotFoundError, tiny_random_bert
        from adapterhub.models.causal import tiny_random_llama

        self.loads[name] = self.loads.get(name, 0) + 1
        if name in self.missing:
            raise BaseModelNotFoundError(SMOLLM2 if name == "smollm2" else name, "its package is not installed")
        if name not in self.models:
            if name == "minilm":
                self.models[name] = dataclasses.replace(tiny_random_bert(seed=0), base_model_id=MINILM)
            elif name == "mpnet":
                self.models[name] = dataclasses.replace(tiny_random_bert(seed=1), base_model_id=MPNET)
            else:
                lm = tiny_random_llama()
                lm.base_model_id = SMOLLM2
                self.models[name] = lm
        return self.models[name]

    def registry(self) -> dict[str, bases.BaseSpec]:
        from adapterhub.models.causal import LLAMA_TARGET_MODULES
        from adapterhub.models.lora_layers import DEFAULT_EXCLUDE_MODULES, DEFAULT_TARGET_MODULES

        return {
            "minilm": bases.BaseSpec("minilm", MINILM, "encoder", DEFAULT_TARGET_MODULES, DEFAULT_EXCLUDE_MODULES, None,
                                     lambda: self._get("minilm"), "tiny MiniLM stand-in"),
            "mpnet": bases.BaseSpec("mpnet", MPNET, "encoder", ("query", "key", "value", "dense"),
                                    DEFAULT_EXCLUDE_MODULES, None, lambda: self._get("mpnet"), "tiny MPNet stand-in"),
            "smollm2": bases.BaseSpec("smollm2", SMOLLM2, "causal_lm", LLAMA_TARGET_MODULES, (), "CAUSAL_LM",
                                      lambda: self._get("smollm2"), "tiny SmolLM2 stand-in"),
        }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBases:
    fakes = FakeBases()
    monkeypatch.setattr(bases, "_registry", fakes.registry)
    return fakes


@pytest.fixture
def hub(home: Path, fake: FakeBases):
    """A hub in the CLI's home holding ``acme/adj``: a 2-step LoRA for ``wn_adj_kind`` on the MiniLM stand-in."""
    from adapterhub.app import AdapterHub
    from adapterhub.models.train import train_adapter

    with AdapterHub(home) as h:
        trained = train_adapter(fake._get("minilm"), TASK, max_steps=2, rank=4, alpha=8, batch_size=8, seed=0)
        h.add_adapter(trained.adapter, SOURCE, task=TASK)
        yield h


def _texts_file(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture
def train_texts() -> list[str]:
    from adapterhub.tasks import load_task

    return load_task(TASK).texts("train")[:16]


@pytest.fixture
def data_file(tmp_path: Path, train_texts: list[str]) -> Path:
    return _texts_file(tmp_path / "data.jsonl", train_texts)


@pytest.fixture
def seeds() -> list[str]:
    return ["very large in size", "relating to the sea", "having been broken", "of a bright colour",
            "made by hand"]


@pytest.fixture
def seeds_file(tmp_path: Path, seeds: list[str]) -> Path:
    return _texts_file(tmp_path / "seeds.jsonl", seeds)


def _prepare(hub, data_file: Path) -> dict[str, Any]:
    from adapterhub.app.transfer_kit import prepare

    return prepare(hub, SOURCE, data=data_file, max_real=16)


def _artifact_rows(home: Path) -> list[tuple]:
    from adapterhub.app import AdapterHub

    with AdapterHub(home) as h, h.catalog.reading() as reader:
        return sorted(tuple(r) for r in reader.rows("SELECT kind, key, digest FROM artifacts", {}))


def _state(home: Path) -> tuple:
    """Everything a failed command must leave as it was: entries, blob files, revisions, artifact rows,
    hub repo rows."""
    from adapterhub.app import AdapterHub
    from adapterhub.store import hub_catalog

    with AdapterHub(home) as h:
        repos = sorted((r.name, r.private) for r in hub_catalog.list_repos(h.catalog))
    return store_state(home), _artifact_rows(home), repos


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


def _safetensors(metadata: dict[str, str] | None) -> bytes:
    import torch
    from safetensors.torch import save

    return save({"x": torch.zeros(2)}, metadata=metadata)


@pytest.mark.parametrize("data", [
    b"",
    b"garbage, not a safetensors file",
    b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!",
    b"\xff" * 64,
    _safetensors(None),  # no metadata
    _safetensors({"format": "pt"}),  # metadata, but not the kit's key
    _safetensors({"adapterhub.transfer_kit": "{not json"}),
    _safetensors({"adapterhub.transfer_kit": json.dumps({"task": TASK})}),  # no seeds, no config
    _safetensors({"adapterhub.transfer_kit": json.dumps({"seeds": ["a"], "config": [1, 2]})}),
], ids=["empty", "garbage", "header-not-json", "huge-header-length", "no-metadata", "other-metadata",
        "meta-not-json", "meta-missing-fields", "config-not-a-mapping"])
def test_kit_from_bytes_refuses_what_is_not_a_kit(data: bytes):
    from adapterhub.app.transfer_kit import kit_from_bytes

    with pytest.raises(InvalidAdapterError):
        kit_from_bytes(data)


def test_kit_from_bytes_refuses_a_kit_whose_discriminator_is_not_a_valid_adapter(hub, data_file):
    from adapterhub.app.transfer_kit import find_kit, kit_from_bytes, kit_to_bytes

    _prepare(hub, data_file)
    kit, meta = find_kit(hub, hub.get(SOURCE))
    config = dict(meta["config"], r=meta["config"]["r"] + 3)  # the tensors no longer match the config
    data = _safetensors({"adapterhub.transfer_kit": json.dumps({**meta, "config": config})})
    with pytest.raises(InvalidAdapterError):
        kit_from_bytes(data)
    good = kit_to_bytes(kit, TASK)
    wrong_rank = good.replace(b'\\"r\\": ' + str(meta["config"]["r"]).encode(),
                              b'\\"r\\": ' + str(meta["config"]["r"] + 3).encode(), 1)
    assert wrong_rank != good
    with pytest.raises(InvalidAdapterError):
        kit_from_bytes(wrong_rank)


def test_kit_from_bytes_refuses_a_truncated_kit(hub, data_file):
    from adapterhub.app.transfer_kit import find_kit, kit_from_bytes, kit_to_bytes

    _prepare(hub, data_file)
    kit, _ = find_kit(hub, hub.get(SOURCE))
    good = kit_to_bytes(kit, TASK)
    with pytest.raises(InvalidAdapterError):
        kit_from_bytes(good[:-16])


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


def test_read_texts_file_and_read_seeds_bounds(tmp_path: Path):
    from adapterhub.app.transfer_kit import MAX_SEEDS, read_seeds, read_texts_file

    ok = _texts_file(tmp_path / "ok.jsonl", ["a b c", "d e f"])
    ok.write_text(ok.read_text() + "\n   \n", encoding="utf-8")
    assert read_texts_file(ok, what="data") == ["a b c", "d e f"]  # blank lines skipped
    assert len(read_seeds(_texts_file(tmp_path / "32.jsonl", [f"t {i}" for i in range(MAX_SEEDS)]))) == MAX_SEEDS
    cases = {
        "33.jsonl": ("".join(json.dumps({"text": f"t {i}"}) + "\n" for i in range(MAX_SEEDS + 1)), "more than 32"),
        "empty.jsonl": ("", "no example"),
        "blank.jsonl": ("\n\n  \n", "no example"),
        "notjson.jsonl": ("hello\n", "line 1 is not JSON"),
        "notext.jsonl": ('{"text": "a"}\n{"txt": "b"}\n', "line 2 must be an object with a string"),
        "emptytext.jsonl": ('{"text": "   "}\n', "line 1 must be an object with a string"),
        "list.jsonl": ('["a"]\n', "line 1 must be an object with a string"),
    }
    for file, (body, message) in cases.items():
        (tmp_path / file).write_text(body, encoding="utf-8")
        with pytest.raises(InvalidParameterError, match=message):
            read_seeds(tmp_path / file)
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(InvalidParameterError, match="must be UTF-8"):
        read_seeds(tmp_path / "latin1.jsonl")
    with pytest.raises(InvalidParameterError, match="cannot read"):
        read_seeds(tmp_path / "missing.jsonl")


# -- 3. the CLI: bad input is one line on stderr, exit 1, nothing written -------------------------------------


def _one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error:") or code == 2, err
    assert "\n" not in err and "Traceback" not in err and "Traceback" not in result.stdout, err
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return err


@pytest.mark.parametrize(("case", "message"), [
    ("unknown-base", "unknown base 'nope'"),
    ("no-kit-no-seeds", "has no transfer kit and no seeds"),
    ("empty-seeds", "holds no examples"),
    ("blank-seeds", "holds no examples"),
    ("seeds-not-json", "line 1 is not JSON"),
    ("too-many-seeds", "more than 32"),
    ("generator-missing", "cannot load base model"),
    ("generator-not-causal", "is not a causal LM"),
    ("same-base", "already on minilm"),
    ("same-base-by-id", "already on minilm"),
    ("result-exists", "acme/taken"),
    ("result-is-source", "acme/adj"),
    ("bad-result-name", "name"),
    ("unknown-adapter", "acme/none"),
    ("too-many-samples", "--samples must be between 1 and 5000"),
    ("seeds-file-missing", "cannot read the seeds file"),
    ("source-base-unregistered", "which is not a registered base"),
    ("source-without-task", "records no task"),
    ("source-task-not-shipped", "not a shipped task"),
])
def test_cli_transfer_bad_input_fails_cleanly_and_writes_nothing(cli, hub, fake, tmp_path, seeds_file, case,
                                                                 message):
    from adapterhub.models.train import train_adapter

    taken = train_adapter(fake._get("minilm"), TASK, max_steps=1, rank=2, alpha=4, batch_size=8, seed=3).adapter
    hub.add_adapter(taken, "acme/taken", task=TASK)
    hub.add_adapter(random_adapter(1, base_model="someone/other-base"), "acme/foreign", task=TASK)
    hub.add_adapter(taken.with_config(taken.config.with_updates(lora_alpha=3)), "acme/notask")
    hub.add_adapter(taken.with_config(taken.config.with_updates(lora_alpha=5)), "acme/oddtask", task="my-own-task")
    seeds = ("--seeds", str(seeds_file))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n   \n\t\n")
    notjson = tmp_path / "notjson.jsonl"
    notjson.write_text("just a line of text\n")
    many = _texts_file(tmp_path / "many.jsonl", [f"seed number {i}" for i in range(33)])
    if case == "generator-missing":
        fake.missing.add("smollm2")
    args = {
        "unknown-base": ("acme/adj", "--to-base", "nope", *seeds),
        "no-kit-no-seeds": ("acme/adj", "--to-base", "mpnet"),
        "empty-seeds": ("acme/adj", "--to-base", "mpnet", "--seeds", str(empty)),
        "blank-seeds": ("acme/adj", "--to-base", "mpnet", "--seeds", str(blank)),
        "seeds-not-json": ("acme/adj", "--to-base", "mpnet", "--seeds", str(notjson)),
        "too-many-seeds": ("acme/adj", "--to-base", "mpnet", "--seeds", str(many)),
        "generator-missing": ("acme/adj", "--to-base", "mpnet", *seeds),
        "generator-not-causal": ("acme/adj", "--to-base", "mpnet", "--generator", "minilm", *seeds),
        "same-base": ("acme/adj", "--to-base", "minilm", *seeds),
        "same-base-by-id": ("acme/adj", "--to-base", MINILM, *seeds),
        "result-exists": ("acme/adj", "--to-base", "mpnet", "--name", "acme/taken", *seeds),
        "result-is-source": ("acme/adj", "--to-base", "mpnet", "--name", "acme/adj", *seeds),
        "bad-result-name": ("acme/adj", "--to-base", "mpnet", "--name", "no slash here!", *seeds),
        "unknown-adapter": ("acme/none", "--to-base", "mpnet", *seeds),
        "too-many-samples": ("acme/adj", "--to-base", "mpnet", "--samples", "5001", *seeds),
        "seeds-file-missing": ("acme/adj", "--to-base", "mpnet", "--seeds", str(tmp_path / "nope.jsonl")),
        "source-base-unregistered": ("acme/foreign", "--to-base", "mpnet", *seeds),
        "source-without-task": ("acme/notask", "--to-base", "mpnet", *seeds),
        "source-task-not-shipped": ("acme/oddtask", "--to-base", "mpnet", *seeds),
    }[case]
    before = _state(hub.settings.home)
    result = cli("transfer", *CLI_SMALL, *args)  # later options win: "too-many-samples" overrides --samples
    err = _one_line_error(result)
    assert message in err, err
    assert _state(hub.settings.home) == before
    if case not in ("generator-missing", "generator-not-causal"):
        assert "smollm2" not in fake.loads and "mpnet" not in fake.loads  # refused before any model loads


def test_cli_usage_errors_exit_2(cli, hub, tmp_path, seeds_file):
    before = _state(hub.settings.home)
    for args in [("transfer", "prepare", SOURCE),  # no --data
                 ("transfer", "prepare"),
                 ("transfer", SOURCE),  # no --to-base
                 ("transfer", SOURCE, "extra", "--to-base", "mpnet"),
                 ("transfer", SOURCE, "--to-base", "mpnet", "--data", str(seeds_file)),
                 ("transfer", SOURCE, "--to-base", "mpnet", "--samples", "0")]:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
    assert "needs --data FILE" in cli("transfer", "prepare", SOURCE).stderr
    assert _state(hub.settings.home) == before


@pytest.mark.parametrize(("texts", "message"), [
    (["one text", "two texts", "three", "four"], "has 4 texts; the discriminator needs at least 5"),
    ([], "holds no examples"),
])
def test_cli_prepare_refuses_too_little_data(cli, hub, fake, tmp_path, texts, message):
    data = _texts_file(tmp_path / "few.jsonl", texts)
    before = _state(hub.settings.home)
    err = _one_line_error(cli("transfer", "prepare", SOURCE, "--data", str(data)))
    assert message in err
    assert _state(hub.settings.home) == before
    assert "smollm2" not in fake.loads  # refused before any model loads


def test_cli_prepare_of_an_unknown_adapter_or_a_missing_generator(cli, hub, fake, data_file):
    before = _state(hub.settings.home)
    assert "acme/none" in _one_line_error(cli("transfer", "prepare", "acme/none", "--data", str(data_file)))
    fake.missing.add("smollm2")
    assert "cannot load base model" in _one_line_error(cli("transfer", "prepare", SOURCE, "--data", str(data_file)))
    assert _state(hub.settings.home) == before


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
