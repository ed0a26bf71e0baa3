"""``adapterhub merge`` / ``methods`` through the CLI: stored result, lineage, errors."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from adapterhub.lora import LoraAdapter
from tests.helpers import store_state, write_random_adapter


def _add_two(cli, tmp_path: Path) -> None:
    assert cli("add", write_random_adapter(tmp_path / "a", 1), "--name", "acme/a", "--task", "t1").exit_code == 0
    assert cli("add", write_random_adapter(tmp_path / "b", 2, rank=3), "--name", "acme/b", "--task", "t2").exit_code == 0


def test_cat_merge_is_exact_weighted_sum_and_records_lineage(cli, tmp_path: Path) -> None:
    _add_two(cli, tmp_path)
    result = cli("merge", "acme/a", "acme/b", "--method", "cat", "--weights", "0.3,0.7", "--name", "acme/ab", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["adapter"]["name"] == "acme/ab" and out["adapter"]["rank"] == 5
    assert out["weights"] == [0.3, 0.7] and out["report"]["rel_error"] < 1e-6
    assert cli("export", "acme/ab", tmp_path / "ab").exit_code == 0
    merged = LoraAdapter.load(tmp_path / "ab")
    a, b = LoraAdapter.load(tmp_path / "a"), LoraAdapter.load(tmp_path / "b")
    for path in a.module_paths:
        expected = 0.3 * a.module(path).delta() + 0.7 * b.module(path).delta()
        torch.testing.assert_close(merged.module(path).delta(), expected, rtol=1e-5, atol=1e-6)
    shown = json.loads(cli("show", "acme/ab", "--json").stdout)
    parents = [(p["parent_name"], p["weight"], p["operation"]) for p in shown["lineage"]]
    assert parents == [("acme/a", 0.3, "merge:cat"), ("acme/b", 0.7, "merge:cat")]
    assert all(p["parent_digest"] for p in shown["lineage"])
    assert json.loads(cli("show", "acme/a", "--json").stdout)["children"] == ["acme/ab"]
    tree = json.loads(cli("lineage", "acme/ab", "--json").stdout)
    assert [p["name"] for p in tree["parents"]] == ["acme/a", "acme/b"]


def test_lego_default_rank_k_and_default_name(cli, tmp_path: Path) -> None:
    _add_two(cli, tmp_path)
    result = cli("merge", "acme/a", "acme/b", "--k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["method"] == "lego" and out["adapter"]["rank"] == 3
    assert out["adapter"]["name"].startswith("merged/lego-")
    assert out["weights"] == [0.5, 0.5]
    assert 0.0 <= out["report"]["mixing_share"] <= 1.0


def test_merge_errors_change_nothing(cli, tmp_path: Path, home: Path) -> None:
    _add_two(cli, tmp_path)
    before = store_state(home)
    cases = [
        (["merge", "acme/a", "acme/nope"], "no adapter named 'acme/nope'"),
        (["merge", "acme/a", "acme/b", "--method", "svd", "--density", "0.3"], "valid parameters: k"),
        (["merge", "acme/a", "acme/b", "--method", "bogus"], "lego"),
        (["merge", "acme/a", "acme/b", "--weights", "1,x"], "--weights"),
        (["merge", "acme/a", "acme/b", "--weights", "1,2,3"], "weight"),
        (["merge", "acme/a", "acme/b", "--name", "acme/a"], "already exists"),
        (["merge", "acme/a", "acme/a"], "only once"),
        (["merge", "acme/a", "acme/b", "--k", "0"], "k"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("error: ") and message in result.stderr, (args, result.stderr)
    assert store_state(home) == before


def test_base_model_mismatch_needs_force(cli, tmp_path: Path) -> None:
    assert cli("add", write_random_adapter(tmp_path / "a", 1), "--name", "acme/a").exit_code == 0
    other = write_random_adapter(tmp_path / "b", 2, base_model="another-model")
    assert cli("add", other, "--name", "acme/b").exit_code == 0
    refused = cli("merge", "acme/a", "acme/b", "--method", "linear")
    assert refused.exit_code == 1 and "base model" in refused.stderr
    forced = cli("merge", "acme/a", "acme/b", "--method", "linear", "--force", "--json")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["report"]["warnings"]


def test_methods_lists_registry(cli) -> None:
    listed = json.loads(cli("methods", "--json").stdout)
    names = {m["name"] for m in listed}
    assert {"linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude", "lego"} <= names
    lego = next(m for m in listed if m["name"] == "lego")
    assert {p["name"] for p in lego["parameters"]} >= {"k", "cluster", "param_reweight", "output_reweight"}
    assert all(m["reference_url"].startswith("https://") for m in listed)


def test_method_flags_are_typed_in_help_and_checked_before_any_work(cli, tmp_path: Path, home: Path) -> None:
    page = cli("merge", "--help").stdout
    for shown in ("--density FLOAT", "--max-iter INTEGER", "--cluster [kmeans|kmedoids]",
                  "--param-reweight / --no-param-reweight", "--k INTEGER", "--tag TEXT"):
        assert f"  {shown} " in page or f"  {shown}\n" in page, shown
    _add_two(cli, tmp_path)
    before = store_state(home)
    for bad in (["--density", "abc"], ["--max-iter", "1.5"], ["--restarts", "two"], ["--cluster", "bogus"],
                ["--k", "x"]):
        result = cli("merge", "acme/a", "acme/b", *bad)
        assert result.exit_code == 2, (bad, result.stderr)
        assert f"Invalid value for '{bad[0]}'" in result.stderr, (bad, result.stderr)
    assert store_state(home) == before


def test_method_flags_reach_the_method_as_plain_values(cli, tmp_path: Path) -> None:
    _add_two(cli, tmp_path)
    ties = cli("merge", "acme/a", "acme/b", "--method", "ties", "--density", "0.3", "--majority-sign", "frequency",
               "--k", "2", "--json")
    assert ties.exit_code == 0, ties.stderr
    params = json.loads(ties.stdout)["params"]
    assert params["density"] == 0.3 and params["majority_sign"] == "frequency"
    lego = cli("merge", "acme/a", "acme/b", "--cluster", "kmedoids", "--no-param-reweight", "--max-iter", "7",
               "--k", "2", "--json")
    assert lego.exit_code == 0, lego.stderr
    params = json.loads(lego.stdout)["params"]
    assert params["cluster"] == "kmedoids" and params["param_reweight"] is False and params["max_iter"] == 7


def test_merge_of_one_adapter_is_refused(cli, tmp_path: Path, home: Path) -> None:
    _add_two(cli, tmp_path)
    before = store_state(home)
    result = cli("merge", "acme/a")
    assert result.exit_code == 1 and result.stderr.startswith("error: "), result.stderr
    assert store_state(home) == before
