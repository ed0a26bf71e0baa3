"""The merge-quality table on a tiny random BERT with two synthetic tasks, checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adapterhub.eval.evaluate import evaluate
from adapterhub.eval.quality import (
    NOTES_MARKER,
    MergeSpec,
    QualityPlan,
    baseline_specs,
    cap_split,
    fixed_subsets,
    lego_specs,
    plot_task_accuracy,
    reference_rows,
    relative,
    render_markdown,
    run_merge_quality,
    select_conventions,
    write_report,
)
from adapterhub.merge import merge_adapters
from adapterhub.models.base import tiny_random_bert
from adapterhub.models.train import train_adapter
from adapterhub.tasks import Task
from tests.helpers import synthetic_task, word_task

OTHER_WORDS = {
    "animal": ["cat", "dog", "horse", "sheep", "goat", "mouse"],
    "colour": ["red", "blue", "green", "yellow", "black", "white"],
}


def other_task(n_per_class: int = 24, seed: int = 1) -> Task:
    """A second word-class task (two classes) with the same 2:1:1 splits as ``synthetic_task``."""
    return word_task(OTHER_WORDS, "synthetic2", "animals or colours", n_per_class=n_per_class, seed=seed)


@pytest.fixture(scope="module")
def setting():
    model = tiny_random_bert(seed=0)
    tasks = {"synthetic": synthetic_task(), "synthetic2": other_task()}
    adapters = {
        name: train_adapter(model, task, rank=2, alpha=4, epochs=4, lr=1e-2, batch_size=8, seed=i).adapter
        for i, (name, task) in enumerate(tasks.items())
    }
    return model, tasks, adapters


SPECS = (
    MergeSpec("linear/avg", "linear (average)", "linear", weights="avg", uses_k=False, role="linear"),
    MergeSpec("svd/sqrt", "svd", "svd", weights="sqrt"),
    MergeSpec("lego", "lego", "lego", params={"output_reweight": "mean"}, role="lego"),
)


@pytest.fixture(scope="module")
def report(setting):
    model, tasks, adapters = setting
    plan = QualityPlan(ks=(2,), seeds=(0, 1), subset_sizes=(), specs=SPECS, select_on_validation=False)
    return run_merge_quality(adapters, tasks, model=model, plan=plan)


def _by_hand(setting, spec: MergeSpec, k: int | None, seeds: list[int]) -> dict:
    """Merge, score each task, normalise: the table's arithmetic redone from scratch."""
    model, tasks, adapters = setting
    names = sorted(tasks)
    own = {t: evaluate(adapters[t], tasks[t], model=model).accuracy for t in names}
    zero = {t: evaluate(None, tasks[t], model=model).accuracy for t in names}
    norms, gains, accs = [], [], {t: [] for t in names}
    for seed in seeds:
        params = {**spec.params, **({"k": k} if k is not None else {})}
        merged = merge_adapters([adapters[t] for t in names], spec.method, weights=spec.weight_values(2),
                                params=params, seed=seed).adapter
        acc = {t: evaluate(merged, tasks[t], model=model).accuracy for t in names}
        for t in names:
            accs[t].append(acc[t])
        norms.append(sum(acc[t] / own[t] for t in names) / 2)
        gains.append(sum((acc[t] - zero[t]) / (own[t] - zero[t]) for t in names) / 2)
    return {"normalised": sum(norms) / len(norms), "retained_gain": sum(gains) / len(gains), "norms": norms,
            "accuracy": {t: sum(v) / len(v) for t, v in accs.items()}, "own": own, "zero": zero}


@pytest.mark.slow  # builds and trains on a tiny BERT once per module (~10 s on 2 busy cores)
def test_table_columns_and_arithmetic_match_a_hand_computation(setting, report):
    data = report.to_dict()
    assert [g["name"] for g in data["groups"]] == ["all tasks"]
    rows = {(r["key"], r["k"]): r for r in data["rows"]["all tasks"]}
    assert set(rows) == {("linear/avg", None), ("svd/sqrt", 2), ("lego", 2)}
    expected_columns = {"label", "weights", "k", "rank", "accuracy", "normalised", "retained_gain", "se", "gain_se",
                        "seeds", "deterministic"}
    assert expected_columns <= set(rows[("lego", 2)])
    own_zero = _by_hand(setting, SPECS[0], None, [0])
    assert own_zero["own"]["synthetic"] != own_zero["zero"]["synthetic"]  # retained gain is defined
    for spec, k, seeds in ((SPECS[0], None, [0]), (SPECS[1], 2, [0]), (SPECS[2], 2, [0, 1])):
        hand = _by_hand(setting, spec, k, seeds)
        row = rows[(spec.key, k)]
        assert row["seeds"] == seeds
        assert row["normalised"] == pytest.approx(hand["normalised"], abs=1e-12)
        assert row["retained_gain"] == pytest.approx(hand["retained_gain"], abs=1e-12)
        for t, acc in hand["accuracy"].items():
            assert row["accuracy"][t] == pytest.approx(acc, abs=1e-12)
    assert rows[("svd/sqrt", 2)]["deterministic"] and not rows[("lego", 2)]["deterministic"]
    assert rows[("svd/sqrt", 2)]["rank"] == 2 and rows[("linear/avg", None)]["rank"] == 4
    refs = data["reference_rows"]["all tasks"]
    assert refs["individual"]["normalised"] == 1.0 and refs["individual"]["retained_gain"] == 1.0
    assert refs["zero-shot"]["retained_gain"] == 0.0
    zero = own_zero["zero"]
    assert refs["zero-shot"]["normalised"] == pytest.approx(
        sum(zero[t] / own_zero["own"][t] for t in zero) / 2, abs=1e-12)


@pytest.mark.slow  # builds and trains on a tiny BERT once per module (~10 s on 2 busy cores)
def test_standard_error_by_hand(setting, report):
    """A deterministic row's SE is the test-sample error alone: per task, the binomial variance of
    the per-example correctness (ddof 1) over n, divided by own^2, averaged over the tasks."""
    model, tasks, adapters = setting
    row = report.row("all tasks", "svd/sqrt", 2)
    merged = merge_adapters([adapters[t] for t in sorted(tasks)], "svd", weights=[2**-0.5] * 2, params={"k": 2}).adapter
    var = 0.0
    for t in sorted(tasks):
        res = evaluate(merged, tasks[t], model=model)
        correct = [float(p == y) for p, y in zip(res.predictions, tasks[t].label_ids("test"))]
        n, p = len(correct), sum(correct) / len(correct)
        own = evaluate(adapters[t], tasks[t], model=model).accuracy
        var += (p * (1 - p) * n / (n - 1)) / n / own**2
    assert row.se_seed == 0.0
    assert row.se == pytest.approx(math.sqrt(var) / 2, abs=1e-12)
    lego = report.row("all tasks", "lego", 2)
    spread = lego.per_seed_normalised
    seed_se = math.sqrt(sum((x - sum(spread) / 2) ** 2 for x in spread) / 1 / 2)
    assert lego.se_seed == pytest.approx(seed_se, abs=1e-12)


@pytest.mark.slow  # builds and trains on a tiny BERT once per module (~10 s on 2 busy cores)
def test_paired_comparison_is_the_difference_of_rows(report):
    cmp = report.compare("all tasks", "lego", "svd/sqrt", 2)
    lego, svd = report.row("all tasks", "lego", 2), report.row("all tasks", "svd/sqrt", 2)
    assert cmp["delta"] == pytest.approx(lego.normalised - svd.normalised, abs=1e-12)
    assert cmp["se"] >= lego.se_seed
    assert cmp["verdict"] in {"win", "loss", "tie"}
    assert (cmp["verdict"] == "tie") == (abs(cmp["delta"]) <= 2 * cmp["se"])
    verdicts = report.lego_vs_best_baseline()
    assert [(v["group"], v["k"], v["best_baseline"]) for v in verdicts] == [("all tasks", 2, "svd/sqrt")]


@pytest.mark.slow  # builds and trains on a tiny BERT once per module (~10 s on 2 busy cores)
def test_report_files(report, tmp_path: Path):
    paths = report.write(tmp_path, "mq")
    markdown = paths["markdown"].read_text()
    for column in ("norm. acc.", "retained gain", "synthetic", "synthetic2", "**zero-shot**", "**individual**",
                   "LoRA-LEGO against the best baseline"):
        assert column in markdown
    data = json.loads(paths["json"].read_text())
    assert data["plan"]["seeds"] == [0, 1] and len(data["cells"]) == 1 + 1 + 2  # lego twice (two seeds)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # hand-written notes after the marker survive a regeneration
    paths["markdown"].write_text(markdown + f"\n{NOTES_MARKER}\n## Reading\nLEGO ties.\n")
    again = report.write(tmp_path, "mq")["markdown"].read_text()
    assert again.startswith(markdown) and again.endswith("## Reading\nLEGO ties.\n") and again.count(NOTES_MARKER) == 1


@pytest.mark.slow  # builds and trains on a tiny BERT once per module (~10 s on 2 busy cores)
def test_validation_picks_the_best_convention(setting):
    model, tasks, adapters = setting
    picked = select_conventions(adapters, tasks, model=model, methods=("magnitude",), k=2)
    scores = picked["scores"]["magnitude"]
    assert picked["split"] == "validation" and set(scores) == {"avg", "sqrt", "sum"}
    assert scores[picked["picked"]["magnitude"]] == max(scores.values())


def test_fixed_subsets_are_windows_of_the_sorted_names():
    names = [f"t{i}" for i in range(7)][::-1]
    assert fixed_subsets(names, 2, 3) == [("t0", "t1"), ("t2", "t3"), ("t4", "t5")]
    assert fixed_subsets(names, 4, 2) == [("t0", "t1", "t2", "t3"), ("t0", "t4", "t5", "t6")]
    assert fixed_subsets(["t2", "t0", "t1"], 4, 2) == [("t0", "t1", "t2")]


def test_cap_split_is_stratified_and_fixed():
    task = synthetic_task(n_per_class=40)  # 10 test examples per class
    capped = cap_split(task, "test", 15)
    assert len(capped.split("test")) == 15 and sorted(capped.counts("test").values()) == [5, 5, 5]
    assert capped.split("train") == task.split("train")
    assert [e.id for e in cap_split(task, "test", 15).split("test")] == [e.id for e in capped.split("test")]
    assert cap_split(task, "test", None) is task


def test_specs_and_relative():
    keys = [s.key for s in baseline_specs({"ties": "sqrt", "magnitude": "sum"})]
    assert keys[:6] == ["linear/avg", "linear/sqrt", "linear/sum", "svd/avg", "svd/sqrt", "svd/sum"]
    assert "ties/sqrt" in keys and "magnitude/sum" not in keys  # weights 1 is magnitude's default already
    lego = {s.key: s for s in lego_specs()}
    assert lego["lego"].params["output_reweight"] == "mean" and not lego["lego"].ablation
    assert not lego["lego/kmedoids"].ablation and not lego["lego/output-norm"].ablation  # every group
    assert "lego/output-mean" not in lego  # the default already
    assert all(lego[k].ablation for k in ("lego/output-sum", "lego/no-param", "lego/no-output", "lego/no-reweight"))
    assert len({json.dumps(dict(s.params), sort_keys=True) for s in lego.values()}) == len(lego)
    assert MergeSpec("x", "x", "svd", weights="sqrt").weight_values(4) == [0.5] * 4
    assert relative(0.8, 0.9, 0.5) == pytest.approx((0.8 / 0.9, 0.75))
    assert math.isnan(relative(0.5, 0.5, 0.5)[1])


def test_seed_use_and_weight_labels_come_from_the_merge_registry():
    svd, lego, dare = MergeSpec("svd", "svd", "svd"), MergeSpec("lego", "lego", "lego"), MergeSpec("d", "d", "dare_ties")
    assert not svd.uses_seed(4, 8) and dare.uses_seed(None, 8)
    assert lego.uses_seed(4, 8) and not lego.uses_seed(8, 8)  # every unit kept: nothing random left
    assert svd.weights_label() == "1 (default)" and lego.weights_label() == "1/n (default)"
    assert MergeSpec("s", "s", "svd", weights="sqrt").weights_label() == "1/√n"


def _single_rank_report() -> dict:
    """A report dict as the demo builds it: one group, one rank, one seed, rows without SEs."""
    tasks = ["a", "b"]
    return {
        "plan": {"split": "test", "ks": [8], "seeds": [0], "max_examples": None, "specs": []},
        "tasks": tasks,
        "groups": [{"name": "all tasks", "subsets": [tasks]}],
        "reference_rows": {"all tasks": reference_rows(tasks, {"a": 0.5, "b": 0.25}, {"a": 1.0, "b": 0.75})},
        "rows": {"all tasks": [{"key": "demo/lego-k8", "label": "LoRA-LEGO", "weights": "1/n (default)", "k": 8,
                                "rank": 8, "normalised": 0.9, "retained_gain": 0.8, "se": None, "gain_se": None,
                                "accuracy": {"a": 0.9, "b": 0.675}, "seeds": [0]}]},
        "lego_vs_best_baseline": [],
        "selection": None,
        "seconds": 12.0,
        "threads": 1,
    }


def test_rows_without_standard_errors_render_without_plus_minus_columns(tmp_path: Path):
    data = _single_rank_report()
    refs = data["reference_rows"]["all tasks"]
    assert refs["zero-shot"]["normalised"] == pytest.approx((0.5 + 0.25 / 0.75) / 2)
    assert refs["zero-shot"]["retained_gain"] == 0.0 and refs["individual"]["normalised"] == 1.0
    markdown = render_markdown(data, title="Demo", intro="Intro.", footer="Footer.")
    lines = markdown.splitlines()
    assert lines[:3] == ["# Demo", "", "Intro."] and lines[-1] == "Footer."
    assert "| method | weights | k | rank | norm. acc. | retained gain | a | b |" in lines
    assert "|---|---|---|---|---|---|---|---|" in lines
    assert "| LoRA-LEGO | 1/n (default) | 8 | 8 | 0.900 | 0.80 | 90.0 | 67.5 |" in lines
    assert "| **individual** | | | | 1.000 | 1.00 | 100.0 | 75.0 |" in lines
    assert "±" not in markdown and "Split:" not in markdown
    paths = write_report(data, tmp_path, "demo", title="Demo", plot=plot_task_accuracy, with_json=False)
    assert sorted(paths) == ["markdown", "png"] and not (tmp_path / "demo.json").exists()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
