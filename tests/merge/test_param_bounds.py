"""Every merge parameter is bounded (issue 9, item 7): a request cannot buy unbounded work, and a
seed out of the 64-bit range is a clear 4xx / exit 1, never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from adapterhub.errors import InvalidParameterError
from adapterhub.merge import merge_adapters
from adapterhub.merge.methods import REGISTRY
from adapterhub.merge.params import MAX_SEED, is_numeric
from adapterhub.merge.registry import MergeMethod, MethodRegistry
from tests.helpers import store_state, toy_adapter, write_random_adapter

# the attack's values (restarts=1e6 kept a core busy after the client left) and each bound's maximum
TOO_MUCH = [
    ("lego", "restarts", 10**6, 64),
    ("lego", "max_iter", 10**7, 1000),
    ("lego", "k", 10**9, 4096),
    ("ties", "power_iters", 10**6, 32),
    ("ties", "oversample", 10**9, 512),
    ("svd", "k", 10**9, 4096),
    ("linear", "k", 10**9, 4096),
]


def test_every_numeric_parameter_has_both_bounds_and_shows_them() -> None:
    for info in REGISTRY.describe():
        for p in info.parameters:
            field = REGISTRY.get(info.name).params.model_fields[p.name]
            if is_numeric(field):
                assert p.range and p.range in p.help, f"{info.name}.{p.name} is unbounded"
                assert p.to_dict()["range"] == p.range


@pytest.mark.parametrize(("method", "name", "value", "maximum"), TOO_MUCH)
def test_values_past_the_maximum_are_refused_and_the_maximum_is_allowed(method, name, value, maximum) -> None:
    with pytest.raises(InvalidParameterError, match=name):
        REGISTRY.parse_params(method, {name: value})
    assert getattr(REGISTRY.parse_params(method, {name: maximum}), name) == maximum


def test_a_method_with_an_unbounded_parameter_cannot_be_registered() -> None:
    class Unbounded(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        rounds: int = Field(3, ge=1, description="no maximum")

    method = MergeMethod("x", "x", "https://example.org", Unbounded, "uniform", REGISTRY.get("cat").merge_module)
    with pytest.raises(ValueError, match="rounds"):
        MethodRegistry([method])


@pytest.mark.parametrize("seed", [2**63, 2**64 + 5, -1])
def test_out_of_range_seeds_are_refused_before_any_work(seed: int) -> None:
    a, b = toy_adapter(1), toy_adapter(2)
    with pytest.raises(InvalidParameterError, match="seed must be between 0 and"):
        merge_adapters([a, b], "dare_linear", seed=seed)


def test_the_largest_seed_merges() -> None:
    result = merge_adapters([toy_adapter(1), toy_adapter(2)], "dare_linear", seed=MAX_SEED)
    assert result.seed == MAX_SEED


def test_cli_seed_past_2_63_exits_1_and_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapterhub.cli.main import app

    home = tmp_path / "home"
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    monkeypatch.delenv("ADAPTERHUB_DATABASE_URL", raising=False)
    runner = CliRunner()
    for i in (1, 2):
        folder = write_random_adapter(tmp_path / f"a{i}", i)
        assert runner.invoke(app, ["add", str(folder), "--name", f"acme/a{i}"]).exit_code == 0
    before = store_state(home)
    result = runner.invoke(app, ["merge", "acme/a1", "acme/a2", "--seed", str(2**63)])
    assert result.exit_code == 1 and "seed must be between" in result.stderr
    result = runner.invoke(app, ["merge", "acme/a1", "acme/a2", "--restarts", "1000000"])
    assert result.exit_code == 1 and "restarts" in result.stderr
    assert store_state(home) == before
    listed = {m["name"]: m for m in json.loads(runner.invoke(app, ["methods", "--json"]).stdout)}
    assert {p["name"]: p["range"] for p in listed["lego"]["parameters"]}["restarts"] == "[1, 64]"
    assert "restarts=4 [1, 64]" in runner.invoke(app, ["methods"], env={"COLUMNS": "300"}).stdout


def test_live_server_answers_4xx_for_the_attack(live, tmp_path: Path) -> None:
    for i in (1, 2):
        live.hub.add(write_random_adapter(tmp_path / f"a{i}", i), f"bounds/a{i}")
    headers = {"Authorization": f"Bearer {live.token}"}
    names = ["bounds/a1", "bounds/a2"]
    before = store_state(live.home)
    for spec in (
        {"names": names, "method": "lego", "params": {"restarts": 10**6}},
        {"names": names, "method": "ties", "params": {"power_iters": 10**6, "oversample": 10**9}},
        {"names": names, "method": "dare_linear", "seed": 2**63},
        {"names": names, "method": "dare_linear", "seed": 2**70},
    ):
        response = httpx.post(f"{live.url}/v1/merge", json=spec, headers=headers, timeout=30)
        assert 400 <= response.status_code < 500, (spec, response.status_code, response.text)
    assert store_state(live.home) == before
