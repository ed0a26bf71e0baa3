"""merge_adapters: compatibility checks, weights, streaming order, passthrough, dtype, I/O."""

from __future__ import annotations

import json

import pytest
import torch

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.merge import merge_adapters
from tests.helpers import dense_sum, rel, toy_adapter


def test_base_model_mismatch_is_refused_unless_forced():
    a, b = toy_adapter(1, base_model="llama-7b"), toy_adapter(2, base_model="mistral-7b")
    with pytest.raises(IncompatibleAdaptersError, match=r"different base models \(llama-7b, mistral-7b\).*force") as e:
        merge_adapters([a, b], "cat")
    assert "--force (force=True in Python)" in str(e.value)  # CLI users read it too
    result = merge_adapters([a, b], "cat", force=True)
    assert any("different base models" in w for w in result.report.warnings)
    assert result.adapter.base_model == "llama-7b"


def test_missing_base_model_is_assumed_with_a_warning():
    result = merge_adapters([toy_adapter(1, base_model=None), toy_adapter(2, base_model="m")], "cat")
    assert result.adapter.base_model == "m"
    assert any("assumed" in w for w in result.report.warnings)


def test_shape_mismatch_is_refused_even_when_forced():
    a = toy_adapter(1, paths=("layer.0.q",))
    b = toy_adapter(2, paths=("layer.0.up",))
    # rename b's module so the same path has another shape
    from adapterhub.lora import AdapterConfig
    from adapterhub.lora.tensorfile import DictSource

    m = b.module("layer.0.up")
    tensors = {"base_model.model.layer.0.q.lora_A.weight": m.A, "base_model.model.layer.0.q.lora_B.weight": m.B}
    bad = LoraAdapter(AdapterConfig({**b.config.raw, "target_modules": ["q"]}), DictSource(tensors))
    with pytest.raises(IncompatibleAdaptersError, match=r"'layer.0.q' is 24x16 in input 1 but 40x16 in input 2"):
        merge_adapters([a, bad], "cat", force=True)
    with pytest.raises(IncompatibleAdaptersError, match=r"'layer.0.q' is 24x16 in acme/a but 40x16 in acme/bad"):
        merge_adapters([a, bad], "cat", force=True, names=["acme/a", "acme/bad"])


@pytest.mark.parametrize(
    "weights, fragment",
    [
        ([1.0], "got 1 weights for 2 adapters"),
        ([0, 0], "all weights are zero"),
        ([1, float("nan")], "finite"),
        (["a", 1], "numbers"),
    ],
)
def test_bad_weights(weights, fragment):
    with pytest.raises(InvalidParameterError, match=fragment):
        merge_adapters([toy_adapter(1), toy_adapter(2)], "cat", weights=weights)


def test_no_adapters_and_bad_seed():
    with pytest.raises(InvalidParameterError, match="at least one"):
        merge_adapters([], "cat")
    with pytest.raises(InvalidParameterError, match="seed"):
        merge_adapters([toy_adapter(1)], "cat", seed="0")  # type: ignore[arg-type]


def test_progress_is_reported_per_module_in_path_order():
    calls = []
    adapters = [toy_adapter(1), toy_adapter(2, paths=("layer.1.q",))]
    merge_adapters(adapters, "svd", progress=lambda done, total, path: calls.append((done, total, path)))
    assert calls == [(1, 4, "layer.0.q"), (2, 4, "layer.0.up"), (3, 4, "layer.0.v"), (4, 4, "layer.1.q")]


def test_passthrough_tensors_are_averaged_or_dropped():
    head1, head2 = torch.ones(3, 24), torch.full((3, 24), 4.0)
    a = toy_adapter(1, extra={"classifier.weight": head1, "pooler.weight": torch.ones(2, 2)})
    b = toy_adapter(2, extra={"classifier.weight": head2})
    result = merge_adapters([a, b], "cat", weights=[1.0, 3.0])
    assert result.report.passthrough == {"classifier.weight": "averaged", "pooler.weight": "dropped"}
    assert torch.allclose(result.adapter.extra_tensors()["classifier.weight"], torch.full((3, 24), 3.25))
    assert any(w.startswith("'pooler.weight' (a full weight") and w.endswith("left out of the merge because input 2 "
               "does not have it") for w in result.report.warnings), result.report.warnings
    assert "1 full weight saved beside the LoRA factors (such as task heads) was averaged" in result.report.warnings[-1]
    assert result.adapter.config.modules_to_save == ["classifier", "pooler"]
    named = merge_adapters([a, b], "cat", weights=[1.0, 3.0], names=["acme/a", "acme/b"])
    assert any(w.endswith("because acme/b does not have it") for w in named.report.warnings)
    three = merge_adapters([b, a, b], "cat")
    assert any(w.endswith("because input 1 and input 3 do not have it") for w in three.report.warnings)

    c = toy_adapter(3, extra={"classifier.weight": torch.ones(5, 24)})
    mismatch = merge_adapters([a, c], "cat", names=["acme/a", "acme/c"])
    assert mismatch.report.passthrough["classifier.weight"] == "dropped"
    assert "classifier.weight" not in mismatch.adapter.extra_tensors()
    assert any(w.endswith("because its shape is (3, 24) in acme/a but (5, 24) in acme/c")
               for w in mismatch.report.warnings)
    with pytest.raises(InvalidParameterError, match="one name per adapter"):
        merge_adapters([a, c], "cat", names=["acme/a"])


def test_output_dtype_follows_the_inputs():
    adapters = [toy_adapter(1, dtype=torch.bfloat16), toy_adapter(2, dtype=torch.bfloat16)]
    result = merge_adapters(adapters, "svd", params={"k": 4})
    assert result.adapter.module("layer.0.q").A.dtype == torch.bfloat16


def test_float_inputs_give_float_outputs():
    adapters = [toy_adapter(1, dtype=torch.bfloat16), toy_adapter(2, dtype=torch.bfloat16)]
    mixed = merge_adapters([toy_adapter(1, dtype=torch.bfloat16), toy_adapter(2)], "cat")
    assert mixed.adapter.module("layer.0.q").A.dtype == torch.float32
    forced = merge_adapters(adapters, "cat", dtype=torch.float32)
    assert forced.adapter.module("layer.0.q").A.dtype == torch.float32
    assert forced.report.rel_error < 1e-5


def test_report_is_json_and_saved_adapter_round_trips(tmp_path):
    adapters = [toy_adapter(1, r=4), toy_adapter(2, r=2, paths=("layer.0.q", "layer.1.q"))]
    for method in ("lego", "ties", "svd"):
        result = merge_adapters(adapters, method)
        json.dumps(result.report.to_dict())
        json.dumps(result.params)
        folder = result.adapter.save(tmp_path / method)
        loaded = LoraAdapter.load(folder)
        assert loaded.module_paths == result.adapter.module_paths
        for path in loaded.module_paths:
            assert torch.allclose(loaded.module(path).delta(), result.adapter.module(path).delta(), atol=1e-6)
    cat = merge_adapters(adapters, "cat").adapter.save(tmp_path / "cat")
    loaded = LoraAdapter.load(cat)  # mixed ranks go to rank_pattern
    assert rel(loaded.module("layer.1.q").delta(torch.float64), dense_sum(adapters, [1, 1], "layer.1.q")) < 1e-5


def test_inputs_are_not_mutated():
    adapters = [toy_adapter(1), toy_adapter(2)]
    before = {(i, p): (m.A.clone(), m.B.clone()) for i, a in enumerate(adapters) for p, m in a.modules()}
    for method in ("lego", "ties", "dare_ties", "svd", "cat", "magnitude"):
        merge_adapters(adapters, method)
    for (i, p), (A, B) in before.items():
        assert torch.equal(adapters[i].module(p).A, A) and torch.equal(adapters[i].module(p).B, B)


def test_threads_are_scoped_to_the_merge():
    before = torch.get_num_threads()
    adapters = [toy_adapter(1), toy_adapter(2)]
    a = merge_adapters(adapters, "lego", threads=1)
    b = merge_adapters(adapters, "lego")
    assert torch.get_num_threads() == before
    for path in a.adapter.module_paths:
        assert torch.allclose(a.adapter.module(path).delta(), b.adapter.module(path).delta(), atol=1e-5)
    with pytest.raises(InvalidParameterError, match="threads"):
        merge_adapters(adapters, "lego", threads=0)
