"""Merged adapters load in PEFT and do what the math says; PEFT's own cat/svd agree with ours."""

from __future__ import annotations

import pytest
import torch

from adapterhub.lora import LoraAdapter
from adapterhub.merge import merge_adapters
from tests.helpers import make_peft_adapter, tiny_bert


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft-inputs")
    m1, f1 = make_peft_adapter(root / "a1", seed=1, r=4, alpha=8, rank_pattern={"layer.1.attention.self.value": 2})
    m2, f2 = make_peft_adapter(root / "a2", seed=2, r=3, alpha=4, use_rslora=True, target_modules=("query", "value"))
    return [(m1, f1), (m2, f2)]


def _peft_deltas(peft_model) -> dict[str, torch.Tensor]:
    """PEFT's own get_delta_weight for every LoRA layer, keyed by normalised path."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            out[name] = module.get_delta_weight("default").detach()
    return out


def _with_deltas(deltas: dict[str, torch.Tensor]):
    model = tiny_bert(0)
    with torch.no_grad():
        for path, delta in deltas.items():
            model.get_submodule(path).weight += delta
    return model


@pytest.mark.parametrize("method, params", [("lego", {"k": 3}), ("svd", {"k": 3}), ("ties", {"k": 4}), ("cat", {})])
def test_merged_adapter_loads_in_peft_and_gives_the_manual_logits(inputs, input_ids, tmp_path, method, params):
    from peft import PeftModel

    adapters = [LoraAdapter.load(folder) for _, folder in inputs]
    result = merge_adapters(adapters, method, weights=[0.6, 1.4], params=params)
    folder = result.adapter.save(tmp_path / "merged")
    peft_model = PeftModel.from_pretrained(tiny_bert(0), folder).eval()
    manual = _with_deltas({p: m.delta() for p, m in result.adapter.modules()}).eval()
    with torch.no_grad():
        got = peft_model(input_ids).last_hidden_state
        expected = manual(input_ids).last_hidden_state
        base = tiny_bert(0)(input_ids).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-3)  # the merge changed something
    if method == "cat":
        # independent of adapterhub's scale handling: PEFT's own deltas of each input, summed
        weighted: dict[str, torch.Tensor] = {}
        for (model, _), w in zip(inputs, [0.6, 1.4]):
            for path, delta in _peft_deltas(model).items():
                weighted[path] = weighted.get(path, 0) + w * delta
        reference = _with_deltas(weighted).eval()
        with torch.no_grad():
            assert torch.allclose(got, reference(input_ids).last_hidden_state, atol=1e-5)


@pytest.fixture(scope="module")
def equal_rank_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft-equal")
    return [
        make_peft_adapter(root / "b1", seed=3, r=4, alpha=8),
        make_peft_adapter(root / "b2", seed=4, r=4, alpha=16, target_modules=("query", "value")),
    ]


@pytest.mark.parametrize(
    "combination, method, peft_kwargs, params",
    [
        ("cat", "cat", {}, {}),
        ("svd", "svd", {"svd_rank": 3}, {"k": 3}),
        ("ties_svd", "ties", {"svd_rank": 3, "density": 0.5}, {"k": 3, "density": 0.5}),
        ("ties_svd", "ties", {"svd_rank": 2, "density": 0.3, "majority_sign_method": "frequency"},
         {"k": 2, "density": 0.3, "majority_sign": "frequency"}),
        ("magnitude_prune_svd", "magnitude", {"svd_rank": 3, "density": 0.4}, {"k": 3, "density": 0.4}),
        ("linear", "linear_factors", {}, {}),
    ],
)
def test_agrees_with_peft_add_weighted_adapter(inputs, equal_rank_inputs, combination, method, peft_kwargs, params):
    from peft import PeftModel

    # PEFT's "linear" needs equal ranks; the other inputs also differ in rank (rank_pattern) and rsLoRA
    (_, f1), (_, f2) = equal_rank_inputs if combination == "linear" else inputs
    model = PeftModel.from_pretrained(tiny_bert(0), f1, adapter_name="a1")
    model.load_adapter(f2, adapter_name="a2")
    weights = [0.6, 1.4]
    model.add_weighted_adapter(["a1", "a2"], weights, "m", combination_type=combination, **peft_kwargs)
    ours = merge_adapters([LoraAdapter.load(f1), LoraAdapter.load(f2)], method, weights=weights, params=params)

    from peft.tuners.lora import LoraLayer

    checked = 0
    for name, module in model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and "m" in module.lora_A:
            theirs = module.get_delta_weight("m").detach()
            mine = ours.adapter.module(name).delta()
            assert torch.allclose(mine, theirs, atol=1e-5, rtol=1e-4), name
            checked += 1
    assert checked == len(ours.adapter.module_paths)
