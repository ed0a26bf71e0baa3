"""``merge --method auto``, ``regmean`` through the hub, cancelling inputs and negative head shares.

Uses shipped library adapters (real MiniLM LoRAs with their labelled example files) on the real
base, in one catalog shared by the module: ``auto`` on examples builds and scores eight candidate
merges (~15 s), so it runs once through the facade and once through the CLI (the determinism check).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from adapterhub.app import AdapterHub
from adapterhub.app.ingest import load
from adapterhub.errors import InvalidParameterError
from adapterhub.eval.library import library_dir
from adapterhub.eval.merge_select import AUTO_CANDIDATES, data_free_choice

POS, ADJ = "lib/wn_pos", "lib/wn_adj_kind"
COPY = "lib/wn_pos_copy"  # the same weights as POS under a second name (a and a2)
UNLABELLED = "lib/wn_pos_unlabelled"  # examples with texts only
NO_EXAMPLES = "lib/wn_pos_no_examples"  # no examples file at all
EXAMPLES = "adapterhub_examples.jsonl"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdapterHub]:
    root = tmp_path_factory.mktemp("merge_auto")
    home = root / "home"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTERHUB_HOME", str(home))
        mp.delenv("ADAPTERHUB_DATABASE_URL", raising=False)
        mp.delenv("ADAPTERHUB_DEBUG", raising=False)
        with AdapterHub(home) as hub:
            hub.add(library_dir() / "wn_pos", POS, task="wn_pos")
            hub.add(library_dir() / "wn_adj_kind", ADJ, task="wn_adj_kind")
            hub.add(_copy(library_dir() / "wn_pos", root / "copy"), COPY, task="wn_pos")
            unlabelled = _copy(library_dir() / "wn_pos", root / "unlabelled")
            rows = [json.loads(line) for line in (unlabelled / EXAMPLES).read_text().splitlines()]
            (unlabelled / EXAMPLES).write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
            hub.add(unlabelled, UNLABELLED, task="wn_pos")
            bare = _copy(library_dir() / "wn_pos", root / "bare")
            (bare / EXAMPLES).unlink()
            hub.add(bare, NO_EXAMPLES, task="wn_pos")
            yield hub
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cli(hub: AdapterHub):
    """The CLI in-process on the module's catalog (ADAPTERHUB_HOME is set while ``hub`` lives)."""
    from adapterhub.cli.main import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def auto_outcome(hub: AdapterHub):
    return hub.merge([POS, ADJ], method="auto", k=4, name="merged/auto-1")


def _flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- auto on labelled examples
@pytest.mark.slow
def test_auto_scores_every_candidate_on_the_examples_and_records_the_choice(hub, auto_outcome):
    auto = auto_outcome.auto
    keys = [f"{m}/{c}" for m, c in AUTO_CANDIDATES]
    assert auto["basis"] == "examples"
    assert sorted(auto["scores"]) == sorted(keys)  # one score per candidate (regmean included: grams exist)
    chosen = f"{auto['method']}/{auto['convention']}"
    assert chosen in keys and auto_outcome.method == auto["method"] in {m for m, _ in AUTO_CANDIDATES}
    assert auto["scores"][chosen] == max(auto["scores"].values())
    first_best = next(k for k in keys if auto["scores"][k] == max(auto["scores"].values()))
    assert chosen == first_best  # ties go to the earlier candidate
    assert auto_outcome.record.rank <= 4
    assert "labelled examples" in auto["reason"] and auto["method"] in auto["reason"]
    lineage = hub.show("merged/auto-1")["lineage"]
    assert [row["parent_name"] for row in lineage] == [POS, ADJ]
    for row in lineage:
        assert row["operation"] == f"merge:{auto_outcome.method}"
        assert row["params"]["auto"] == auto and row["params"]["auto"]["reason"] == auto["reason"]
    tree = hub.lineage("merged/auto-1")
    assert all(p["params"]["auto"]["basis"] == "examples" for p in tree["parents"])


@pytest.mark.slow
def test_cli_auto_prints_the_choice_and_repeats_the_facades_choice_exactly(hub, cli, auto_outcome):
    result = cli("merge", POS, ADJ, "--method", "auto", "--k", "4")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    auto_lines = [line for line in lines if line.startswith("auto:")]
    assert len(auto_lines) == 1
    assert "chosen by" in result.output and "auto (examples)" in result.output
    assert _flat(auto_outcome.auto["reason"]) in _flat(result.output)  # same choice, same scores
    # deterministic: the second run stored the very same weights under the default name
    again = hub.get(f"merged/{auto_outcome.method}-{auto_outcome.record.digest[:12]}")
    assert again.digest == auto_outcome.record.digest
    params = hub.show(again.name)["lineage"][0]["params"]
    assert params["auto"] == auto_outcome.auto


# ---------------------------------------------------------------- auto without labels: the rule
def test_auto_without_labels_falls_back_to_the_data_free_rule(hub):
    outcome = hub.merge([UNLABELLED, ADJ], method="auto", k=4, name="merged/auto-rule")
    rule = data_free_choice(2)
    auto = outcome.auto
    assert auto["basis"] == "rule" and auto["scores"] == {}
    assert (auto["method"], auto["convention"]) == (rule.method, rule.convention)
    assert outcome.method == rule.method and outcome.weights == pytest.approx(rule.weights(2))
    assert UNLABELLED in auto["reason"] and "labelled" in auto["reason"]
    assert auto["reason"].endswith(rule.reason)
    assert hub.show("merged/auto-rule")["lineage"][0]["params"]["auto"]["basis"] == "rule"


def test_auto_without_an_examples_file_names_the_adapter_in_the_reason(hub):
    outcome = hub.merge([NO_EXAMPLES, ADJ], method="auto", k=4, name="merged/auto-bare")
    assert outcome.auto["basis"] == "rule"
    assert f"'{NO_EXAMPLES}' has no stored examples" in outcome.auto["reason"]


# ---------------------------------------------------------------- auto refuses what it chooses
def test_auto_refuses_weights_and_method_parameters(hub):
    with pytest.raises(InvalidParameterError, match="weights"):
        hub.merge([POS, ADJ], method="auto", k=4, weights=[0.5, 0.5])
    with pytest.raises(InvalidParameterError, match="density"):
        hub.merge([POS, ADJ], method="auto", k=4, params={"density": 0.3})


def test_cli_auto_with_weights_exits_with_a_one_line_error(cli):
    result = cli("merge", POS, ADJ, "--method", "auto", "--weights", "1,1")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "weights" in lines[0]


# ---------------------------------------------------------------- regmean needs every parent's examples
@pytest.mark.slow
def test_regmean_runs_on_stored_examples_and_refuses_a_parent_without_them(hub):
    outcome = hub.merge([POS, ADJ], method="regmean", k=4, name="merged/regmean")
    assert outcome.method == "regmean" and outcome.record.rank <= 4
    with pytest.raises(InvalidParameterError, match="examples") as caught:
        hub.merge([NO_EXAMPLES, ADJ], method="regmean", k=4)
    assert NO_EXAMPLES in str(caught.value)


# ---------------------------------------------------------------- inputs that cancel
def _delta_norms(adapter: Any) -> dict[str, float]:
    return {p: float(adapter.module(p).delta().norm()) for p in adapter.module_paths}


def test_a_copy_shares_the_digest_under_a_second_name(hub):
    assert hub.get(COPY).digest == hub.get(POS).digest


def test_lego_of_an_adapter_minus_its_copy_is_zero_and_says_so(hub):
    outcome = hub.merge([POS, COPY], weights=[0.5, -0.5], k=4, method="lego", name="merged/cancel")
    report = outcome.report
    inputs = _delta_norms(load(hub, POS))
    merged = load(hub, "merged/cancel")
    assert set(merged.module_paths) == set(inputs)
    for path, norm in _delta_norms(merged).items():
        assert norm < 1e-4 * inputs[path], path
    assert report["cancelled_modules"] == len(report["modules"]) == len(inputs)
    assert any("cancel" in w for w in report["warnings"])


def test_lego_without_output_reweighting_reports_an_infinite_error_when_inputs_cancel(hub):
    outcome = hub.merge([POS, COPY], weights=[0.5, -0.5], k=4, method="lego",
                        params={"output_reweight": "none"}, name="merged/cancel-none")
    report = outcome.report
    assert report["rel_error"] is None  # undefined (JSON has no infinity): the sum is zero, the merge is not
    assert report["cancelled_modules"] == len(report["modules"])
    assert any("cancel" in w and "not zero" in w for w in report["warnings"])


def test_cli_merge_of_cancelling_inputs_prints_the_warning(cli):
    result = cli("merge", POS, COPY, "--weights", "0.5,-0.5", "--k", "4")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert any("cancel" in line for line in warnings)  # a 0.0000 error never stands alone
    result = cli("merge", POS, COPY, "--weights", "0.5,-0.5", "--k", "4", "--output-reweight", "none")
    assert result.exit_code == 0, result.output
    assert "rel. error vs weighted sum" in result.output
    row = next(line for line in result.output.splitlines() if "rel. error vs weighted sum" in line)
    assert "inf" in row and "0.0000" not in row
    assert any("not zero" in line for line in result.output.splitlines() if line.startswith("warning:"))


# ---------------------------------------------------------------- heads under negative weights
def test_negative_weights_on_heads_warn_of_extrapolation(hub):
    outcome = hub.merge([POS, COPY], weights=[1.5, -0.5], k=4, method="lego", name="merged/extrapolate")
    passthrough = outcome.report["passthrough"]
    assert "heads.wn_pos.weight" in passthrough and set(passthrough.values()) == {"averaged"}
    assert any("extrapolates" in w for w in outcome.report["warnings"])


def test_weights_summing_to_zero_average_heads_with_equal_shares(hub):
    outcome = hub.merge([POS, COPY], weights=[1.0, -1.0], k=4, method="lego", name="merged/zero-sum")
    assert any("equal shares" in w for w in outcome.report["warnings"])
