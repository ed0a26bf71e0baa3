"""``adapterhub train --method mos``: a MoS adapter stored as its plain-LoRA export plus its pool form.

Training runs on a tiny random BERT saved as a local checkpoint (``--base-model``) and on a tiny
random Llama standing in for SmolLM2 (as ``test_train_smollm2``), a couple of steps each: the
wiring is what is tested here; the engine's exactness is ``tests/shard/test_mos.py``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adapterhub.models.causal import SMOLLM2_ID

TASK = "wn_adj_kind"  # the smallest shipped task: scoring the tiny model takes a fraction of a second


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT checkpoint folder (hidden 32, intermediate 64)."""
    from adapterhub.models.base import tiny_random_bert

    tiny = tiny_random_bert(seed=0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return folder




def _train_mos(cli, folder: Path, name: str, *extra: str) -> dict:
    result = cli("train", "--task", TASK, "--name", name, "--base-model", folder, "--method", "mos", "--rank", "4",
                 "--budget-rank", "2", "--steps", "2", "--batch-size", "4", "--seed", "1", *extra, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _hub():
    from adapterhub.app import AdapterHub

    return AdapterHub()


def test_train_mos_stores_the_export_with_metrics_params_and_a_description(cli, tiny_bert_dir: Path) -> None:
    out = _train_mos(cli, tiny_bert_dir, "acme/adj-mos")
    assert out["method"] == "mos" and out["protocol"] == "similarity"
    assert out["adapter"]["rank"] == 4 and out["adapter"]["task"] == TASK
    params = out["params"]
    assert params["method"] == "mos" and (params["budget_rank"], params["rank"]) == (2, 4)
    assert (params["shards_per_vector"], params["private_rank"], params["seed"]) == (2, 1, 1)
    assert params["mos_parameters"] == params["lora_budget_parameters"] == params["lora_rank_parameters"] // 2
    assert "fixed random index" in params["router"]
    description = out["adapter"]["description"]
    assert "fixed random index" in description and "not a learned router" in description
    assert out["metrics"]["train"]["steps"] == 2
    assert 0.0 <= out["metrics"]["test"]["accuracy"] <= 1.0 and "zero_shot_accuracy" in out["metrics"]["test"]
    shown = json.loads(cli("show", "acme/adj-mos", "--json").stdout)
    recorded = {(m["split"], m["metric"]): m for m in shown["metrics"]}
    assert recorded[("test", "accuracy")]["value"] == out["metrics"]["test"]["accuracy"]
    assert recorded[("test", "accuracy")]["extra"]["params"]["method"] == "mos"
    assert ("validation", "accuracy") in recorded and ("test", "zero_shot_accuracy") in recorded
    assert shown["revisions"][0]["message"] == "train: mos"
    mos = out["mos"]
    assert mos["form"] == "mos-pools" and mos["exported"] == {"form": "peft-lora", "digest": shown["digest"], "rank": 4}
    assert mos["parameters"] == params["mos_parameters"] and mos["layers"] == 12  # 2 layers x q, k, v, 3 dense


def test_the_stored_entry_is_the_export_of_the_stored_pool_form(cli, tiny_bert_dir: Path) -> None:
    from adapterhub.app.mos_training import MOS_POOLS_KIND, mos_form, pool_form, pools_from_bytes, pools_to_bytes
    from adapterhub.shard.mos import export_lora
    from adapterhub.store import artifacts

    _train_mos(cli, tiny_bert_dir, "acme/adj-mos")
    with _hub() as hub:
        record = hub.get("acme/adj-mos")
        pools = pool_form(hub, "acme/adj-mos")
        assert pools is not None and pools.config.budget_rank == 2 and pools.config.rank == 4
        export = export_lora(pools)
        assert export.digest == record.digest  # the same weights bytes
        exported, stored = dict(export.modules()), dict(hub.load("acme/adj-mos").modules())
        assert sorted(exported) == sorted(stored)
        for path, module in stored.items():
            torch.testing.assert_close(module.delta(), exported[path].delta(), atol=1e-6, rtol=0)
        found = artifacts.find_artifact(hub.catalog, MOS_POOLS_KIND, record.digest)
        assert found is not None and found.source_digest == record.digest and hub.blobs.verify(found.digest)
        data = pools_to_bytes(pools)  # deterministic bytes: re-serialising gives the stored blob
        assert len(data) == found.size and __import__("hashlib").sha256(data).hexdigest() == found.digest
        again = pools_from_bytes(data)
        for name, tensor in pools.to_tensors()[0].items():
            assert torch.equal(again.to_tensors()[0][name], tensor)
        assert mos_form(hub, record)["digest"] == found.digest and mos_form(hub, record)["bytes"] == found.size


def test_the_stored_entry_loads_in_peft_and_gives_the_mos_forward(cli, tiny_bert_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModel

    from adapterhub.app.mos_training import pool_form
    from adapterhub.shard.mos import mos_installed

    _train_mos(cli, tiny_bert_dir, "acme/adj-mos")
    assert cli("export", "acme/adj-mos", tmp_path / "peft").exit_code == 0
    with _hub() as hub:
        pools = pool_form(hub, "acme/adj-mos")
    ids = torch.tensor([[2, 7, 12, 9, 30, 3]])
    base = AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad(), mos_installed(base, pools, trainable=False):
        expected = base(input_ids=ids).last_hidden_state
    with torch.no_grad():
        plain = base(input_ids=ids).last_hidden_state
        got = PeftModel.from_pretrained(base, tmp_path / "peft").eval()(input_ids=ids).last_hidden_state
    assert not torch.allclose(expected, plain, atol=1e-4)  # trained: the adapter does something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_gc_keeps_the_pool_form_while_the_adapter_lives_and_drops_it_after_rm(cli, tiny_bert_dir: Path) -> None:
    from adapterhub.app.mos_training import MOS_POOLS_KIND, pool_form
    from adapterhub.store import artifacts

    out = _train_mos(cli, tiny_bert_dir, "acme/adj-mos")
    digest, pool_blob = out["adapter"]["digest"], out["mos"]["digest"]
    with _hub() as hub:
        hub.gc(grace_seconds=0)
        assert hub.blobs.has(pool_blob) and pool_form(hub, "acme/adj-mos") is not None
    assert cli("rm", "acme/adj-mos").exit_code == 0
    with _hub() as hub:
        hub.gc(grace_seconds=0)
        assert artifacts.find_artifact(hub.catalog, MOS_POOLS_KIND, digest) is None
        assert not hub.blobs.has(pool_blob)


def test_train_mos_on_the_causal_lm_exports_a_causal_lm_lora(cli, tiny_smollm2) -> None:
    result = cli("train", "--base", "smollm2", "--task", "wn_pos", "--name", "acme/pos-mos", "--method", "mos",
                 "--steps", "2", "--batch-size", "2", "--limit", "6", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["protocol"] == "generative" and out["adapter"]["base_model"] == SMOLLM2_ID
    assert out["adapter"]["config"]["task_type"] == "CAUSAL_LM" and out["adapter"]["rank"] == 8
    assert out["params"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"]
    assert out["mos"]["layers"] == 14 and out["mos"]["parameters"] == out["params"]["lora_budget_parameters"]


def test_method_lora_keeps_the_plain_train_and_stores_no_pool_form(cli, tiny_bert_dir: Path) -> None:
    result = cli("train", "--task", TASK, "--name", "acme/adj", "--base-model", tiny_bert_dir, "--method", "lora",
                 "--rank", "2", "--steps", "2", "--batch-size", "4", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert "mos" not in out and "method" not in out and out["adapter"]["rank"] == 2
    from adapterhub.app.mos_training import mos_form

    with _hub() as hub:
        assert mos_form(hub, hub.get("acme/adj")) is None
        assert hub.catalog.revisions("acme/adj")[0].message == "train"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "mos", "--budget-rank", "0"], "budget_rank, rank, shards_per_vector and alpha must be positive"),
        (["--method", "mos", "--rank", "1", "--private-rank", "2"],
         "private_rank must be in 0..min(budget_rank, rank)"),
        (["--method", "mos", "--shards-per-vector", "3"], "not divisible into shards_per_vector=3 shards"),
        (["--budget-rank", "2"], "--budget-rank applies to --method mos only; add --method mos or drop it"),
        (["--method", "lora", "--private-rank", "1", "--shards-per-vector", "2"],
         "--shards-per-vector, --private-rank apply to --method mos only; add --method mos or drop them"),
        (["--method", "bogus"], "unknown training method 'bogus'; choose one of lora, mos"),
        (["--method", "mos", "--protocol", "head"], "drop --protocol head"),
    ],
)
def test_bad_mos_input_is_one_line_exit_1_and_stores_nothing(cli, tiny_bert_dir: Path, args: list[str],
                                                            message: str) -> None:
    result = cli("train", "--task", TASK, "--name", "acme/bad", "--base-model", tiny_bert_dir, "--steps", "1", *args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr  # no progress line
    assert message in result.stderr and "Traceback" not in result.stderr
    with _hub() as hub:
        assert hub.list() == [] and list(hub.blobs.digests()) == []


def test_a_refused_store_leaves_no_pool_blob(cli, tiny_bert_dir: Path) -> None:
    """The tag is checked when the entry is written, after training: the pool blob, written first, goes again."""
    result = cli("train", "--task", TASK, "--name", "acme/adj-mos", "--base-model", tiny_bert_dir, "--method", "mos",
                 "--steps", "1", "--batch-size", "4", "--tag", "x" * 300)
    assert result.exit_code == 1 and "longer than 255 characters" in result.stderr
    with _hub() as hub:
        assert hub.list() == [] and list(hub.blobs.digests()) == []


def test_a_missing_or_corrupt_pool_blob_is_reported_not_served(cli, tiny_bert_dir: Path) -> None:
    from adapterhub.app.mos_training import mos_form, pool_form
    from adapterhub.errors import BlobCorruptError

    out = _train_mos(cli, tiny_bert_dir, "acme/adj-mos")
    with _hub() as hub:
        record, blob = hub.get("acme/adj-mos"), hub.blobs.path(out["mos"]["digest"])
        blob.chmod(0o600)
        blob.write_bytes(blob.read_bytes()[:-4] + b"\0\0\0\0")
        with pytest.raises(BlobCorruptError, match="does not hash"):
            pool_form(hub, record)
        blob.unlink()
        with pytest.raises(BlobCorruptError, match="missing"):
            pool_form(hub, record)
        shown = mos_form(hub, record)  # show still works, and says what is wrong
        assert shown is not None and "missing" in shown["error"] and shown["digest"] == out["mos"]["digest"]
