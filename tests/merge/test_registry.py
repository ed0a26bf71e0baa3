"""Methods are declared data: listed with parameters, validated at parse time, unique names."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict, Field

from adapterhub.errors import InvalidParameterError
from adapterhub.merge import MERGE_METHODS, REGISTRY, MergeMethod, MethodRegistry, list_methods, merge_adapters, resolve_params
from adapterhub.merge.methods import _cat, NoParams
from tests.helpers import toy_adapter

EXPECTED = {
    "linear", "linear_factors", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude", "lego",
    "tsv", "iso_c", "iso_cts", "knots", "regmean",
}


def test_list_methods_describes_every_method():
    infos = {m.name: m for m in list_methods()}
    assert set(infos) == EXPECTED
    for info in infos.values():
        assert info.reference_url.startswith("https://")
        assert info.description
        assert ("1/n" in info.description) == (info.default_weights == "uniform")
        for p in info.parameters:
            assert p.help, f"{info.name}.{p.name} has no help"
        json.dumps(info.to_dict())  # the HTTP schema must serialise
    lego = {p.name: p for p in infos["lego"].parameters}
    assert lego["k"].default == 8 and lego["k"].type == "int"
    assert lego["output_reweight"].choices == ("norm", "mean", "sum", "none")
    assert lego["cluster"].choices == ("kmeans", "kmedoids")
    assert {p.name: p.type for p in infos["linear"].parameters} == {"k": "int | None"}
    assert infos["cat"].parameters == ()


def test_unknown_method_lists_choices():
    with pytest.raises(InvalidParameterError, match="unknown merge method 'tie'.*cat, dare_linear, dare_ties"):
        resolve_params("tie", {})
    with pytest.raises(InvalidParameterError, match="choose one of"):
        merge_adapters([toy_adapter(0)], "nope")


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(InvalidParameterError, match=r"unknown parameter 'rank' for merge method 'svd'; valid parameters: k"):
        resolve_params("svd", {"rank": 4})
    with pytest.raises(InvalidParameterError, match="takes no parameters"):
        resolve_params("cat", {"k": 4})
    with pytest.raises(InvalidParameterError, match="'densty'.*valid parameters: k, refit"):
        merge_adapters([toy_adapter(0)], "ties", params={"densty": 0.3})


@pytest.mark.parametrize(
    "method, params, fragment",
    [
        ("svd", {"k": 0}, "greater than or equal to 1"),
        ("lego", {"k": -3}, "greater than or equal to 1"),
        ("linear", {"k": 0}, "greater than or equal to 1"),
        ("ties", {"density": 1.5}, "less than or equal to 1"),
        ("dare_linear", {"density": 0}, "greater than 0"),
        ("lego", {"output_reweight": "max"}, "'norm', 'mean', 'sum' or 'none'"),
        ("ties", {"majority_sign": "vote"}, "'total' or 'frequency'"),
        ("svd", {"k": "eight"}, "valid integer"),
    ],
)
def test_bad_values_fail_at_parse_time(method, params, fragment):
    with pytest.raises(InvalidParameterError, match=f"invalid parameters for merge method '{method}'.*{fragment}"):
        resolve_params(method, params)


def test_defaults_are_resolved():
    assert resolve_params("svd") == {"k": 8}
    assert resolve_params("linear") == {"k": None}
    lego = resolve_params("lego", {"k": 4})
    assert lego["k"] == 4 and lego["output_reweight"] == "mean" and lego["param_reweight"] is True
    from adapterhub.merge.lego import DEFAULT_OUTPUT_REWEIGHT

    assert lego["output_reweight"] == DEFAULT_OUTPUT_REWEIGHT  # the registry and the engine agree
    assert resolve_params("ties")["density"] == 0.2


def test_registering_a_name_twice_raises():
    registry = MethodRegistry(MERGE_METHODS)
    with pytest.raises(ValueError, match="'cat' is already registered"):
        registry.register(MERGE_METHODS[2])
    assert len(registry) == len(REGISTRY) == len(EXPECTED)


def test_registry_requires_reference_and_strict_params():
    class Loose(BaseModel):
        model_config = ConfigDict(frozen=True)
        k: int = Field(1, description="k")

    registry = MethodRegistry()
    with pytest.raises(ValueError, match="extra='forbid'"):
        registry.register(MergeMethod("loose", "d", "https://x", Loose, "ones", _cat))
    with pytest.raises(ValueError, match="reference_url"):
        registry.register(MergeMethod("nourl", "d", "", NoParams, "ones", _cat))


def test_methods_declare_seed_use_and_weight_conventions():
    from adapterhub.merge import WEIGHT_CONVENTIONS, convention_weights

    infos = {m.name: m for m in list_methods()}
    assert {n for n, i in infos.items() if i.seeded == "always"} == {"dare_linear", "dare_ties", "knots"}
    knots = REGISTRY.get("knots")  # random only when its coefficients are merged with DARE
    assert not knots.uses_seed(8, 56) and not knots.uses_seed(8, 56, {"combine": "ties"})
    assert knots.uses_seed(8, 56, {"combine": "dare_ties"})
    assert infos["lego"].seeded == "below_total_rank" and infos["svd"].seeded == "never"
    assert infos["lego"].to_dict()["seeded"] == "below_total_rank"
    lego, svd, dare = REGISTRY.get("lego"), REGISTRY.get("svd"), REGISTRY.get("dare_ties")
    assert lego.uses_seed(4, 8) and not lego.uses_seed(8, 8) and not lego.uses_seed(None, 8)
    assert dare.uses_seed(None, 1) and not svd.uses_seed(2, 8)
    assert lego.default_convention == "avg" and svd.default_convention == "sum"
    assert list(WEIGHT_CONVENTIONS) == ["avg", "sqrt", "sum"]
    assert convention_weights("avg", 4) == [0.25] * 4 and convention_weights("sqrt", 4) == [0.5] * 4
    assert convention_weights("sum", 3) == [1.0] * 3 == svd.default_weight_values(3)
    assert lego.default_weight_values(2) == [0.5, 0.5]
    with pytest.raises(InvalidParameterError, match="unknown weight convention 'mean'; choose one of avg, sqrt, sum"):
        convention_weights("mean", 2)
