"""``train``/``eval``/``merge`` on the causal-LM base, through the CLI, with a tiny stand-in model.

The registry's ``smollm2`` entry loads ``cached_smollm2``; here it returns a tiny random Llama that
carries SmolLM2's id, so the wiring (prompts, protocol, metrics, subsets, merges of LLM adapters)
is tested in seconds. The real base is exercised by the slow tests in ``tests/models``.
"""

from __future__ import annotations

import json

import pytest

from adapterhub.models.causal import SMOLLM2_ID




def _train(cli, task: str, name: str, seed: int) -> dict:
    result = cli("train", "--base", "smollm2", "--task", task, "--name", name, "--steps", "2", "--batch-size", "2",
                 "--limit", "6", "--seed", str(seed), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_train_on_smollm2_records_the_generative_protocol_and_a_causal_lm_config(cli, tiny_smollm2) -> None:
    out = _train(cli, "wn_pos", "acme/pos-smol", seed=1)
    assert out["protocol"] == "generative"
    assert out["params"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"]
    assert out["metrics"]["train"]["steps"] == 2
    test = out["metrics"]["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and 0.0 <= test["zero_shot_accuracy"] <= 1.0
    shown = json.loads(cli("show", "acme/pos-smol", "--json").stdout)
    assert shown["base_model"] == SMOLLM2_ID and shown["task"] == "wn_pos"
    recorded = {(m["split"], m["metric"]): m for m in shown["metrics"]}
    assert recorded[("test", "accuracy")]["extra"]["n"] == 6  # the --limit subset, recorded as such
    assert recorded[("test", "accuracy")]["extra"]["protocol"] == "generative"


def test_generation_tasks_train_on_the_llm_and_are_refused_on_the_encoder(cli, tiny_smollm2) -> None:
    out = _train(cli, "wn_antonym", "acme/antonym-smol", seed=2)
    assert out["task"] == "wn_antonym" and 0.0 <= out["metrics"]["test"]["accuracy"] <= 1.0
    refused = cli("train", "--task", "wn_antonym", "--name", "acme/antonym-minilm")
    assert refused.exit_code != 0 and "generation task" in refused.stderr and "smollm2" in refused.stderr


def test_merge_of_llm_adapters_is_scored_on_each_parent_task_on_the_same_subset(cli, tiny_smollm2) -> None:
    _train(cli, "wn_pos", "acme/a", seed=1)
    _train(cli, "chat_topic", "acme/b", seed=2)
    merged = cli("merge", "acme/a", "acme/b", "--method", "lego", "--k", "4", "--name", "acme/ab", "--json")
    assert merged.exit_code == 0, merged.stderr
    result = cli("eval", "acme/ab", "--limit", "6", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["protocol"] == "generative" and data["merged"]
    assert sorted(r["task"] for r in data["tasks"]) == ["chat_topic", "wn_pos"]
    for row in data["tasks"]:
        assert row["n"] == 6  # merged, zero-shot and own adapter all on the same 6-example subset
        assert 0.0 <= row["own_accuracy"] <= 1.0 and 0.0 <= row["zero_shot_accuracy"] <= 1.0


def test_encoder_only_options_are_refused_on_the_llm(cli, tiny_smollm2) -> None:
    for extra in (["--protocol", "head"], ["--base-model", "/tmp"]):
        refused = cli("train", "--base", "smollm2", "--task", "wn_pos", "--name", "acme/x", *extra)
        assert refused.exit_code == 1 and "drop --base-model and --protocol" in refused.stderr
    assert cli("list", "--json").stdout.strip() in ("[]", "")
