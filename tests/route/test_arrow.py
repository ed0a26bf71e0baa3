"""Arrow routing: prototypes against a dense SVD, outputs against PEFT's Arrow, exactness, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.models import tiny_random_bert
from adapterhub.models.lora_layers import LoraLinear, lora_attached, lora_layers
from adapterhub.route.arrow import (
    arrow_attached,
    arrow_prototypes,
    arrow_weights_summary,
    prototypes_from_bytes,
    prototypes_to_bytes,
    top_right_singular_vector,
)
from tests.helpers import (
    edited_weights,
    make_peft_adapter,
    random_adapter,
    random_adapter_for,
    sample_input_ids,
    tiny_bert,
)

TARGETS = ("query", "value", "dense")


@pytest.fixture(scope="module")
def peft_folders(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Four PEFT adapters (alpha/r scale kept in the config) on tiny_bert(0), with a clear gap
    between the top two singular values of every ΔW: PEFT finds its prototypes by 15 steps of
    power iteration, which converges to 1e-4 only when that gap is there."""
    root = tmp_path_factory.mktemp("arrow")
    folders = []
    for seed in range(4):
        _, folder = make_peft_adapter(root / f"task{seed}", seed=seed, r=4, alpha=8 + 4 * seed, target_modules=TARGETS)
        with edited_weights(folder) as tensors:
            for key, tensor in tensors.items():
                if "lora_A" in key:
                    tensor[0] *= 10.0  # one dominant rank-1 direction
        folders.append(str(folder))
    return folders


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    ids = sample_input_ids()
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 9:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _peft_arrow(folders: list[str], top_k: int, temperature: float):  # type: ignore[no-untyped-def]
    from peft import ArrowConfig, create_arrow_model

    config = ArrowConfig(top_k=top_k, router_temperature=temperature, rng_seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_arrow_model(tiny_bert(0), folders, config).eval()


def _peft_prototypes(peft_model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {
        name.removeprefix("base_model.model."): module.lora_arrow["arrow_router"].prototypes
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_arrow")
    }


# ----------------------------------------------------------------------------- prototypes


@pytest.mark.parametrize(("d_out", "d_in", "r"), [(7, 5, 3), (5, 9, 2), (4, 6, 8), (40, 33, 4), (1, 5, 1)])
def test_prototype_is_the_dense_top_right_singular_vector(d_out: int, d_in: int, r: int) -> None:
    g = torch.Generator().manual_seed(d_out * 100 + d_in * 10 + r)
    module = LoraModule(torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g), -0.7)
    v = top_right_singular_vector(module)
    dense = torch.linalg.svd(module.delta(torch.float64))[2][0]
    assert v.shape == (d_in,) and v.dtype == torch.float32
    assert abs(float(v.norm()) - 1) < 1e-6
    assert abs(float(v.double() @ dense)) == pytest.approx(1.0, abs=1e-6)
    assert float(v[v.abs().argmax()]) > 0  # the deterministic sign


def test_prototypes_of_a_zero_update_are_zero_and_round_trip_as_safetensors() -> None:
    zero = LoraModule(torch.randn(2, 6), torch.zeros(5, 2), 1.0)
    assert torch.equal(top_right_singular_vector(zero), torch.zeros(6))
    protos = arrow_prototypes(random_adapter(3, d=32))
    back = prototypes_from_bytes(prototypes_to_bytes(protos))
    assert back.keys() == protos.keys() and all(torch.equal(back[k], protos[k]) for k in protos)


# ----------------------------------------------------------------------------- against PEFT


@pytest.mark.parametrize(("top_k", "temperature"), [(1, 1.0), (2, 0.5), (3, 1.0), (4, 2.0)])
def test_outputs_equal_peft_arrow(
    peft_folders: list[str], batch: dict[str, torch.Tensor], top_k: int, temperature: float
) -> None:
    adapters = [LoraAdapter.load(f) for f in peft_folders]
    peft_model = _peft_arrow(peft_folders, top_k, temperature)
    base = tiny_bert(0)
    with torch.no_grad():
        expected = peft_model(**batch).last_hidden_state  # builds PEFT's prototypes
        with arrow_attached(base, adapters, top_k=top_k, temperature=temperature):
            got = base(**batch).last_hidden_state
        plain = base(**batch).last_hidden_state
    ours = [arrow_prototypes(a) for a in adapters]
    for path, theirs in _peft_prototypes(peft_model).items():
        cos = (torch.stack([p[path] for p in ours]) * theirs).sum(-1).abs()
        assert torch.all(cos > 1 - 1e-6), path
    assert (got - expected).abs().max() < 1e-4
    assert (got - plain).abs().max() > 1e-2  # the adapters do change the output


def test_stored_prototypes_give_the_same_outputs(peft_folders: list[str], batch: dict[str, torch.Tensor]) -> None:
    adapters = [LoraAdapter.load(f) for f in peft_folders]
    stored = [prototypes_from_bytes(prototypes_to_bytes(arrow_prototypes(a))) for a in adapters]
    base = tiny_bert(0)
    with torch.no_grad():
        with arrow_attached(base, adapters, top_k=2):
            fresh = base(**batch).last_hidden_state
        with arrow_attached(base, adapters, [stored[0], None, stored[2], stored[3]], top_k=2):
            again = base(**batch).last_hidden_state
    assert torch.equal(fresh, again)


# ----------------------------------------------------------------------------- exactness and restore


def test_one_adapter_top1_is_that_adapters_plain_output(batch: dict[str, torch.Tensor]) -> None:
    base = tiny_bert(0)
    adapter = random_adapter_for(base, seed=1)
    with torch.no_grad():
        with lora_attached(base, [adapter]):
            plain = base(**batch).last_hidden_state
        with arrow_attached(base, [adapter], top_k=1):
            routed = base(**batch).last_hidden_state
    assert torch.equal(routed, plain)


def test_each_layer_routes_among_the_adapters_that_adapt_it(batch: dict[str, torch.Tensor]) -> None:
    base = tiny_bert(0)
    queries = [p for p, _ in base.named_modules() if p.endswith("self.query")]
    values = [p for p, _ in base.named_modules() if p.endswith("self.value")]
    a = random_adapter_for(base, seed=2, only=queries)
    b = random_adapter_for(base, seed=3, only=values)
    with torch.no_grad():
        with lora_attached(base, [a, b]):  # disjoint layers: each layer has one adapter, weight 1
            plain = base(**batch).last_hidden_state
        with arrow_attached(base, [a, b], top_k=3):
            routed = base(**batch).last_hidden_state
        summary = arrow_weights_summary(base, [a, b], batch, top_k=3)
    assert torch.equal(routed, plain)
    assert torch.allclose(summary, torch.full((3, 2), 0.5))  # half the layers each


def test_model_is_restored_after_the_block_and_after_an_error(batch: dict[str, torch.Tensor]) -> None:
    base = tiny_bert(0)
    adapters = [random_adapter_for(base, seed=s) for s in (4, 5)]
    with torch.no_grad():
        before = base(**batch).last_hidden_state
        with arrow_attached(base, adapters, top_k=1):
            assert len(list(lora_layers(base))) > 0
        with pytest.raises(RuntimeError), arrow_attached(base, adapters):
            raise RuntimeError("boom")
        after = base(**batch).last_hidden_state
    assert not any(isinstance(m, LoraLinear) for m in base.modules())
    assert torch.equal(before, after)


def test_summary_averages_over_layers_and_real_tokens(batch: dict[str, torch.Tensor]) -> None:
    base = tiny_bert(0)
    adapters = [random_adapter_for(base, seed=s) for s in (6, 7, 8)]
    summary = arrow_weights_summary(base, adapters, batch, top_k=2, temperature=0.5)
    assert summary.shape == (3, 3)
    assert torch.allclose(summary.sum(-1), torch.ones(3), atol=1e-6)
    with torch.no_grad(), arrow_attached(base, adapters, top_k=2, temperature=0.5, record=True) as routing:
        base(**batch)
        per_layer = [r.last for r in routing.routers.values()]
    assert per_layer[0] is not None and per_layer[0].shape == (3, 11, 3)
    assert all(int((w > 0).sum(-1).max()) == 2 for w in per_layer if w is not None)
    real = batch["attention_mask"][1].bool()
    manual = torch.stack([w[1][real].mean(0) for w in per_layer if w is not None]).mean(0)
    assert torch.allclose(summary[1], manual, atol=1e-6)


def test_summary_of_texts_on_a_base_model_matches_the_tokenized_batch() -> None:
    base = tiny_random_bert(seed=1)
    adapters = [random_adapter_for(base.model, seed=s) for s in (9, 10)]
    texts = ["a short query", "a somewhat longer query about fruit", "x"]
    by_text = arrow_weights_summary(base, adapters, texts, top_k=1, batch_size=2)
    by_batch = arrow_weights_summary(base.model, adapters, base.tokenize(texts), top_k=1)
    assert by_text.shape == (3, 2)
    assert torch.allclose(by_text, by_batch, atol=1e-6)
    with pytest.raises(InvalidParameterError, match="tokenizer"):
        arrow_weights_summary(base.model, adapters, texts)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"top_k": 0}, "top_k"), ({"top_k": -1}, "top_k"), ({"temperature": 0.0}, "temperature")],
)
def test_bad_parameters_are_refused(kwargs: dict, message: str) -> None:
    base = tiny_bert(0)
    adapters = [random_adapter_for(base, 1)]
    with pytest.raises(InvalidParameterError, match=message), arrow_attached(base, adapters, **kwargs):
        pass


def test_bad_inventories_are_refused(tmp_path: Path) -> None:
    base = tiny_bert(0)
    good = random_adapter_for(base, 1)
    with pytest.raises(InvalidParameterError, match="inventory is empty"), arrow_attached(base, []):
        pass
    with pytest.raises(IncompatibleAdaptersError, match="another base model|trained for this base"):
        with arrow_attached(base, [good, random_adapter(0, d=16)]):
            pass
    with pytest.raises(InvalidParameterError, match="prototype sets"), arrow_attached(base, [good], [{}, {}]):
        pass
    wrong = arrow_prototypes(random_adapter(0, d=32))
    with pytest.raises(IncompatibleAdaptersError, match="recompute"), arrow_attached(base, [good], [wrong]):
        pass
    with lora_attached(base, [good]):
        with pytest.raises(InvalidParameterError, match="bare base model"), arrow_attached(base, [good]):
            pass
    assert not any(isinstance(m, LoraLinear) for m in base.modules())
