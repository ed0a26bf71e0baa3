"""adapterhub's LoRA injection against independent references: dense weights and PEFT itself."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.models.base import BaseModel, mean_pool, tiny_random_bert
from adapterhub.models.lora_layers import (
    LoraLinear,
    attach_adapters,
    extract_adapter,
    find_target_linears,
    inject_lora,
    lora_attached,
    lora_layers,
    num_adapters,
    remove_lora,
    set_mixture_weights,
)
from tests.helpers import random_adapter_for

TEXTS = ["apple pear plum", "a storm with hail and rain!", "drill", "saw the wrench, then the chisel"]


@pytest.fixture
def tiny() -> BaseModel:
    return tiny_random_bert(seed=0)


def embed(model: BaseModel, texts=TEXTS) -> torch.Tensor:
    with torch.no_grad():
        return model.embed(model.tokenize(texts))


def dense_reference(model: nn.Module, adapters, weights) -> nn.Module:
    """A copy of the base model with ``W + Σ wⱼ Δⱼ`` written into each adapted weight."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for adapter, w in zip(adapters, weights):
            for path in adapter.module_paths:
                ref.get_submodule(path).weight += w * adapter.delta_weight(path)
    return ref


def test_lora_linear_matches_formula():
    torch.manual_seed(0)
    base = nn.Linear(5, 4)
    layer = LoraLinear(base)
    A, B = torch.randn(2, 5), torch.randn(4, 2)
    layer.add_adapter(A, B, 1.5, slot=0, trainable=False)
    x = torch.randn(3, 7, 5)
    expected = x @ base.weight.T + base.bias + 1.5 * (x @ A.T @ B.T)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-5)


def test_targets_follow_peft_suffix_rule(tiny: BaseModel):
    paths = find_target_linears(tiny.model)
    assert len(paths) == 2 * 6  # q, k, v, attention out, intermediate, output per layer
    assert "pooler.dense" not in paths
    assert find_target_linears(tiny.model, ["query"], None) == [
        "encoder.layer.0.attention.self.query",
        "encoder.layer.1.attention.self.query",
    ]
    assert "pooler.dense" in find_target_linears(tiny.model, ["dense"], None)
    assert find_target_linears(tiny.model, r".*\.1\.attention\.self\.value", None) == [
        "encoder.layer.1.attention.self.value"
    ]


def test_fresh_injection_leaves_outputs_unchanged(tiny: BaseModel):
    before = embed(tiny)
    paths = inject_lora(tiny.model, rank=4, alpha=8, generator=torch.Generator().manual_seed(0))
    assert len(paths) == 12
    layer = tiny.model.get_submodule(paths[0])
    assert isinstance(layer, LoraLinear) and layer.lora_A[0].requires_grad and layer.lora_B[0].abs().sum() == 0
    assert layer.lora_A[0].abs().sum() > 0  # kaiming-uniform A, zero B: the product is zero
    torch.testing.assert_close(embed(tiny), before, rtol=0, atol=0)


def test_zero_adapter_attached_leaves_outputs_unchanged(tiny: BaseModel):
    before = embed(tiny)
    layers = {p: tiny.model.get_submodule(p) for p in find_target_linears(tiny.model)}
    zero = LoraAdapter.from_modules(
        {p: LoraModule(torch.randn(2, m.in_features), torch.zeros(m.out_features, 2), 2.0) for p, m in layers.items()},
        base_model="x",
    )
    with lora_attached(tiny.model, [zero]):
        torch.testing.assert_close(embed(tiny), before, rtol=0, atol=0)


def test_single_adapter_equals_dense_merge(tiny: BaseModel):
    adapter = random_adapter_for(tiny.model, 1)
    ref = BaseModel(dense_reference(tiny.model, [adapter], [1.0]), tiny.tokenizer, tiny.base_model_id)
    with lora_attached(tiny.model, [adapter]):
        got = embed(tiny)
    expected = embed(ref)
    assert (expected - embed(tiny)).abs().max() > 1e-2  # the adapter does change the output
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_mixture_equals_weighted_sum_of_deltas(tiny: BaseModel, w: float):
    a = random_adapter_for(tiny.model, 1)
    # b adapts only attention, so slots must line up per layer, not per list position
    b = random_adapter_for(tiny.model, 2, rank=2, only=find_target_linears(tiny.model, ["query", "value"], None))
    ref = BaseModel(dense_reference(tiny.model, [a, b], [w, 1 - w]), tiny.tokenizer, tiny.base_model_id)
    with lora_attached(tiny.model, [a, b], weights=[w, 1 - w]):
        got = embed(tiny)
    torch.testing.assert_close(got, embed(ref), rtol=0, atol=1e-5)


def test_per_example_weights_match_static_mixtures(tiny: BaseModel):
    a, b = random_adapter_for(tiny.model, 1), random_adapter_for(tiny.model, 2)
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.25, 0.75], [0.5, -0.5]])
    batch = tiny.tokenize(TEXTS)
    with lora_attached(tiny.model, [a, b]), torch.no_grad():
        set_mixture_weights(tiny.model, rows)
        per_example = tiny.embed(batch)
        for i, row in enumerate(rows):
            set_mixture_weights(tiny.model, row)
            torch.testing.assert_close(per_example[i], tiny.embed(batch)[i], rtol=0, atol=1e-6)
        assert not torch.allclose(per_example[0], per_example[1])
        set_mixture_weights(tiny.model, rows[:2])  # 2 rows for a batch of 4
        with pytest.raises(InvalidParameterError, match="rows"):
            tiny.embed(batch)


def test_encode_slices_per_example_weights_by_batch(tiny: BaseModel):
    a, b = random_adapter_for(tiny.model, 1), random_adapter_for(tiny.model, 2)
    rows = torch.rand(len(TEXTS), 2, generator=torch.Generator().manual_seed(0))
    with lora_attached(tiny.model, [a, b]):
        chunked = tiny.encode(TEXTS, batch_size=3, per_example=rows)  # sorted by length, 2 batches
        for i, text in enumerate(TEXTS):
            set_mixture_weights(tiny.model, rows[i])
            torch.testing.assert_close(chunked[i], tiny.encode([text])[0], rtol=0, atol=1e-5)


def test_bad_weights_are_rejected(tiny: BaseModel):
    a = random_adapter_for(tiny.model, 1)
    with lora_attached(tiny.model, [a]):
        with pytest.raises(InvalidParameterError, match=r"\(1,\)"):
            set_mixture_weights(tiny.model, [0.5, 0.5])
        with pytest.raises(InvalidParameterError, match="NaN"):
            set_mixture_weights(tiny.model, [float("nan")])


def test_lora_attached_restores_the_model_even_on_error(tiny: BaseModel):
    before = embed(tiny)
    a = random_adapter_for(tiny.model, 1)
    with pytest.raises(RuntimeError, match="boom"):
        with lora_attached(tiny.model, [a]):
            assert num_adapters(tiny.model) == 1
            raise RuntimeError("boom")
    assert not list(lora_layers(tiny.model))
    torch.testing.assert_close(embed(tiny), before, rtol=0, atol=0)


def test_nested_attach_keeps_outer_adapters(tiny: BaseModel):
    a, b = random_adapter_for(tiny.model, 1), random_adapter_for(tiny.model, 2)
    with lora_attached(tiny.model, [a]):
        only_a = embed(tiny)
        with lora_attached(tiny.model, [b], weights=[0.5]) as slots:
            assert slots == [1] and num_adapters(tiny.model) == 2
        assert num_adapters(tiny.model) == 1
        torch.testing.assert_close(embed(tiny), only_a, rtol=0, atol=0)


def test_incompatible_adapter_is_rejected_and_model_untouched():
    small = tiny_random_bert(seed=0)
    wide = tiny_random_bert(seed=0, hidden_size=48, num_heads=4)
    adapter = random_adapter_for(wide.model, 1)
    with pytest.raises(IncompatibleAdaptersError, match="another base model|trained for this base model"):
        attach_adapters(small.model, [adapter])
    assert not list(lora_layers(small.model))
    missing = LoraAdapter.from_modules(
        {"encoder.layer.9.attention.self.query": LoraModule(torch.ones(1, 32), torch.ones(32, 1), 1.0)},
        base_model="x",
    )
    with pytest.raises(IncompatibleAdaptersError, match="does not have"):
        attach_adapters(small.model, [missing])


def test_remove_lora_puts_linears_back(tiny: BaseModel):
    originals = {p: tiny.model.get_submodule(p) for p in find_target_linears(tiny.model)}
    inject_lora(tiny.model, rank=2, alpha=2)
    remove_lora(tiny.model)
    for path, layer in originals.items():
        assert tiny.model.get_submodule(path) is layer


def test_extract_then_peft_load_gives_the_same_outputs(tiny: BaseModel, tmp_path):
    """Our injected adapter == the same adapter loaded by PEFT on the same AutoModel (1e-5)."""
    from peft import PeftModel

    pristine = copy.deepcopy(tiny.model)
    inject_lora(tiny.model, rank=4, alpha=8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in lora_layers(tiny.model):
            layer.lora_B[0].copy_(torch.randn(layer.lora_B[0].shape, generator=g) * 0.2)
    ours = embed(tiny)
    head = {"heads.toy.weight": torch.randn(3, 32), "heads.toy.bias": torch.zeros(3)}
    adapter = extract_adapter(tiny.model, base_model=tiny.base_model_id, extra_tensors=head)
    assert adapter.module_paths == sorted(find_target_linears(pristine))
    assert adapter.config.raw["exclude_modules"] == ["pooler.dense"]
    assert adapter.base_model == tiny.base_model_id
    adapter.save(tmp_path / "a")
    reloaded = LoraAdapter.load(tmp_path / "a")
    torch.testing.assert_close(reloaded.extra_tensors()["heads.toy.weight"], head["heads.toy.weight"])

    peft_model = PeftModel.from_pretrained(copy.deepcopy(pristine), str(tmp_path / "a")).eval()
    n_peft_layers = sum(1 for n, _ in peft_model.named_modules() if n.endswith(".lora_A.default"))
    assert n_peft_layers == len(adapter.module_paths)  # exclude_modules kept PEFT off the pooler
    batch = tiny.tokenize(TEXTS)
    with torch.no_grad():
        theirs = mean_pool(peft_model(**batch).last_hidden_state, batch["attention_mask"])
    assert (ours - embed(BaseModel(pristine, tiny.tokenizer, tiny.base_model_id))).abs().max() > 1e-2
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)

    # and back: the saved folder attached by us reproduces the trained model's outputs
    remove_lora(tiny.model)
    with lora_attached(tiny.model, [LoraAdapter.load(tmp_path / "a")]):
        torch.testing.assert_close(embed(tiny), ours, rtol=0, atol=1e-5)
