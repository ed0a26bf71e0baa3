"""``adapterhub train`` / ``eval`` / ``quality`` / ``demo`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import write_random_adapter

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _meta(task: str) -> dict:
    return json.loads((EXAMPLES / task / "adapterhub_meta.json").read_text())


def _one_example(n: int) -> float:
    """Recorded with one thread and rounded to 4 decimals: allow one example of difference."""
    return 1.0 / n + 1e-4


@pytest.mark.parametrize("command", ["train", "eval", "quality", "demo"])
def test_every_command_has_help_with_an_example(cli, command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0 and "Example" in result.stdout


def test_eval_errors_say_what_to_do(cli, tmp_path: Path) -> None:
    assert cli("add", write_random_adapter(tmp_path / "a", 1), "--name", "acme/a").exit_code == 0
    cases = [
        (["eval", "acme/a"], "records no task; pass --task"),
        (["eval", "acme/nope"], "no adapter named 'acme/nope'"),
        (["eval", "acme/a", "--task", "wn_pos", "--protocol", "bogus"], "unknown protocol 'bogus'"),
        (["eval", "acme/a", "--task", "wn_pos", "--split", "train"], "'test' or 'validation'"),
        (["eval", "acme/a", "--task", "no_such_task"], "known tasks: "),
        (["train", "--task", "no_such_task", "--name", "acme/t"], "known tasks: "),
        (["train", "--task", "wn_pos", "--name", "acme/a"], "already exists"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 1, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_eval_of_a_shipped_adapter_reproduces_its_recorded_accuracy(cli) -> None:
    """Real MiniLM on the smallest shipped task (135 test examples): a few seconds."""
    meta = _meta("wn_adj_kind")
    assert cli("add", EXAMPLES / "wn_adj_kind", "--name", "lib/adj", "--task", "wn_adj_kind").exit_code == 0
    result = cli("eval", "lib/adj", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    (row,) = out["tasks"]
    test = meta["metrics"]["test"]
    one = _one_example(row["n"])
    assert not out["merged"] and row["task"] == "wn_adj_kind" and row["n"] == test["adapter"]["n"]
    assert row["accuracy"] == pytest.approx(test["adapter"]["accuracy"], abs=one)
    assert row["macro_f1"] == pytest.approx(test["adapter"]["macro_f1"], abs=0.02)
    assert row["zero_shot_accuracy"] == pytest.approx(test["zero_shot"]["accuracy"], abs=one)
    assert row["gain_over_zero_shot"] == pytest.approx(row["accuracy"] - row["zero_shot_accuracy"])
    shown = json.loads(cli("show", "lib/adj", "--json").stdout)["metrics"]
    recorded = {(m["split"], m["metric"]): m for m in shown}
    assert recorded[("test", "accuracy")]["value"] == row["accuracy"]
    assert recorded[("test", "accuracy")]["extra"]["protocol"] == "similarity"
    assert recorded[("test", "zero_shot_accuracy")]["value"] == row["zero_shot_accuracy"]


@pytest.mark.slow
def test_eval_of_a_merge_scores_each_parent_task_with_normalised_and_retained_gain(cli) -> None:
    for task in ("wn_adj_kind", "wn_pos"):
        assert cli("add", EXAMPLES / task, "--name", f"lib/{task.replace('_', '-')}", "--task", task).exit_code == 0
    merged = cli("merge", "lib/wn-adj-kind", "lib/wn-pos", "--method", "svd", "--k", "8", "--name", "acme/m")
    assert merged.exit_code == 0, merged.stderr
    result = cli("eval", "acme/m", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["merged"] and [(r["task"], r["parent"]) for r in out["tasks"]] == [
        ("wn_adj_kind", "lib/wn-adj-kind"), ("wn_pos", "lib/wn-pos")]
    for r in out["tasks"]:
        recorded = _meta(r["task"])["metrics"]["test"]
        # the parent had no metrics: its own accuracy was measured, and it is the recorded one
        assert r["own_accuracy"] == pytest.approx(recorded["adapter"]["accuracy"], abs=_one_example(r["n"]))
        assert r["normalised_accuracy"] == pytest.approx(r["accuracy"] / r["own_accuracy"], abs=1e-12)
        assert r["retained_gain"] == pytest.approx(
            (r["accuracy"] - r["zero_shot_accuracy"]) / (r["own_accuracy"] - r["zero_shot_accuracy"]), abs=1e-12)
    assert out["mean"]["normalised_accuracy"] == pytest.approx(
        sum(r["normalised_accuracy"] for r in out["tasks"]) / 2, abs=1e-12)
    shown = json.loads(cli("show", "acme/m", "--json").stdout)["metrics"]
    assert {(m["task"], m["metric"]) for m in shown} >= {
        ("wn_pos", "normalised_accuracy"), ("wn_pos", "retained_gain"), ("wn_adj_kind", "accuracy")}
    parent = json.loads(cli("show", "lib/wn-pos", "--json").stdout)["metrics"]
    assert [(m["metric"], m["value"]) for m in parent] == [("accuracy", out["tasks"][1]["own_accuracy"])]
    # one task only; the head protocol reads the merge through the parent's head
    head = json.loads(cli("eval", "acme/m", "--task", "wn_pos", "--protocol", "head", "--no-record", "--json").stdout)
    assert [r["task"] for r in head["tasks"]] == ["wn_pos"] and 0.25 < head["tasks"][0]["accuracy"] <= 1.0
    assert head["tasks"][0]["own_accuracy"] == pytest.approx(
        _meta("wn_pos")["metrics"]["test"]["adapter_head"]["accuracy"], abs=_one_example(240))


@pytest.mark.slow
def test_train_stores_the_adapter_with_task_labels_and_metrics(cli, tmp_path: Path) -> None:
    """Training on a tiny random BERT saved as a local checkpoint (the real MiniLM takes minutes)."""
    from adapterhub.models.base import tiny_random_bert

    tiny = tiny_random_bert(seed=0)
    folder = tmp_path / "tiny-bert"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    result = cli("train", "--task", "wn_adj_kind", "--name", "acme/adj", "--base-model", folder, "--rank", "2",
                 "--epochs", "1", "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["adapter"]["task"] == "wn_adj_kind" and out["adapter"]["rank"] == 2
    assert out["adapter"]["base_model"] == str(folder.resolve())
    assert "adj.pert: a relational adjective" in out["adapter"]["description"]
    test = out["metrics"]["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and "zero_shot_accuracy" in test
    assert "accuracy" in out["metrics"]["validation"]
    shown = json.loads(cli("show", "acme/adj", "--json").stdout)
    metrics = {(m["split"], m["metric"]): m for m in shown["metrics"]}
    assert metrics[("test", "accuracy")]["value"] == test["accuracy"]
    assert sorted(metrics[("test", "accuracy")]["extra"]["labels"]) == ["adj.all", "adj.pert", "adj.ppl"]
    assert ("validation", "accuracy") in metrics
    # the routers' examples are recorded at train time: 32 of the task's TRAIN texts, as shipped
    from adapterhub.app import AdapterHub
    from adapterhub.app.examples import examples_of
    from adapterhub.eval.library import library_dir
    from adapterhub.route.base import parse_examples

    with AdapterHub() as hub:
        shipped = parse_examples((library_dir() / "wn_adj_kind" / "adapterhub_examples.jsonl").read_bytes())
        assert examples_of(hub, "acme/adj") == shipped and len(shipped) == 32
    # eval on the same local base model reproduces the recorded test accuracy exactly
    again = json.loads(cli("eval", "acme/adj", "--no-record", "--json").stdout)
    assert again["tasks"][0]["accuracy"] == test["accuracy"]


@pytest.mark.slow
def test_demo_quick_runs_end_to_end(cli, tmp_path: Path) -> None:
    home = tmp_path / "demo"
    result = cli("demo", "--home", home, "--quick", "--threads", "2", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["home"] == str(home.resolve()) and len(out["tasks"]) == 3
    assert [r["method"] for r in out["rows"]] == ["linear", "lego"]
    for row in out["rows"]:
        assert set(row["accuracy"]) == set(out["tasks"])
        assert 0.5 < row["normalised_accuracy"] < 1.2
        own = {t: out["references"][t]["own"] for t in out["tasks"]}
        assert row["normalised_accuracy"] == pytest.approx(sum(row["accuracy"][t] / own[t] for t in own) / 3)
    assert Path(out["files"]["png"]).read_bytes()[:4] == b"\x89PNG"
    assert "LoRA-LEGO" in Path(out["files"]["markdown"]).read_text()
    routing = out["routing"]  # the routing section: a mixed stream, no task names
    assert set(routing["tasks"]) == set(out["tasks"]) and routing["per_task"] == 10
    for row in routing["tasks"].values():
        assert 0 <= row["routed_to_own"] <= 1 and 0 < row["oracle"] <= 1 and 0 < row["top1"] <= 1 and 0 < row["hedged"] <= 1
    pack, mos = out["shard"]["pack"], out["shard"]["mos"]  # the shard section: a packed library, one MoS adapter
    assert pack["stats"]["adapters"] == 3 and pack["stats"]["ratio"] > 1.5  # fixed-size pools: 3.4x at 7 adapters
    assert len(pack["adapters"]) == 3 and all(0 < r["packed"] <= 1 for r in pack["adapters"].values())
    assert mos["parameters"] * 4 == mos["lora_rank_parameters"] and 0 < mos["accuracy"] <= 1
    moved = out["transfer"]  # the transfer section: wn_adj_kind's adapter moved to MPNet, 32 kept of 64 sampled
    assert moved["generated"] == 64 and moved["accepted"] == 32 and 0 < moved["accuracy"] <= 1
    assert moved["target"] == "transferred/wn-adj-kind-mpnet" and 0 < moved["zero_shot"] <= 1
    served = out["serve"]  # the serve section: requests for different adapters share batches
    assert served["batches"] < served["requests"] and served["max_diff_vs_alone"] < 1e-5
    ran = out["jobs"]  # the jobs section: two merges as one job, on the local backend
    assert ran["status"] == "succeeded" and ran["attempts"] == 1 and ran["backend"] == "local"
    assert ran["stored"] == ["demo/job-lego-first3", "demo/job-lego-last3"]
    assert all(len(parents) == 3 for parents in ran["parents"].values())
    from adapterhub.app import AdapterHub

    with AdapterHub(home, database_url=f"sqlite:///{home / 'catalog.db'}") as hub:
        names = [r.name for r in hub.list()]
        assert sum(n.startswith("library/") for n in names) == 3 and "demo/lego-k8" in names
        parents = {p.parent_name for p in hub.catalog.lineage("demo/lego-k8")}
        assert parents == {n for n in names if n.startswith("library/")}
        [moved_from] = hub.catalog.lineage("transferred/wn-adj-kind-mpnet")
        assert moved_from.parent_name == "library/wn-adj-kind" and moved_from.operation == "transfer:trans-lora"


def test_train_reports_progress_only_after_its_inputs_are_checked(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = cli("train", "--task", "no_such_task", "--name", "acme/t")
    assert refused.exit_code == 1 and refused.stderr.startswith("error: "), refused.stderr
    assert "training" not in refused.stderr

    from adapterhub.app import AdapterHub

    def fake_train(self, task, *, name, progress=None, **kwargs):  # noqa: ANN001, ANN202
        progress(f"training {name}...")
        metrics = {"accuracy": 0.5, "macro_f1": 0.5, "zero_shot_accuracy": 0.25}
        return {"adapter": {"name": name}, "task": task, "protocol": "similarity",
                "metrics": {"test": metrics, "validation": metrics, "train": {"seconds": 1.0}}}

    monkeypatch.setattr(AdapterHub, "train", fake_train)
    trained = cli("train", "--task", "wn_pos", "--name", "acme/t")
    assert trained.exit_code == 0, trained.stderr
    assert trained.stderr.startswith("training acme/t...\n")
