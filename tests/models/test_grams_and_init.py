"""Input Grams of adapted modules (RegMean's statistics) and continued training from an adapter."""

from __future__ import annotations

import pytest
import torch

from adapterhub.eval.library import load_library
from adapterhub.models.base import cached_base_model
from adapterhub.models.grams import input_grams
from adapterhub.models.lora_layers import LoraLinear
from adapterhub.models.train import train_adapter

TEXTS = ["a small brown dog", "to run quickly", "very happy indeed"]


@pytest.fixture(scope="module")
def base():
    return cached_base_model()


@pytest.fixture(scope="module")
def adapter():
    return load_library()["wn_pos"][0]


def test_first_layer_gram_is_the_embeddings_gram(base, adapter):
    """Layer 0's query sees the embedding output whatever the adapter: an independent X^T X."""
    batches = [base.tokenize([t]) for t in TEXTS]
    grams = input_grams(base.model, adapter, batches)
    assert set(grams) == set(adapter.module_paths)
    expected = torch.zeros(base.hidden_size, base.hidden_size, dtype=torch.float64)
    with torch.no_grad():
        for batch in batches:
            x = base.model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
            x = x.reshape(-1, x.shape[-1]).double()
            expected += x.T @ x
    got = grams["encoder.layer.0.attention.self.query"]
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-3 * float(expected.abs().max()))
    assert torch.equal(grams["encoder.layer.0.attention.self.key"], got)  # same input, same Gram


def test_deeper_grams_depend_on_the_adapter_and_the_model_is_restored(base, adapter):
    batches = [base.tokenize([t]) for t in TEXTS]
    other = load_library()["chat_topic"][0]
    a, b = input_grams(base.model, adapter, batches), input_grams(base.model, other, batches)
    path = "encoder.layer.3.attention.self.query"
    assert not torch.allclose(a[path], b[path])
    assert not any(isinstance(m, LoraLinear) for m in base.model.modules())


def test_training_starts_from_init(base, adapter):
    """With a zero learning rate, continued training returns the init's delta exactly."""
    run = train_adapter(base, "wn_pos", rank=8, alpha=16, epochs=1, max_steps=1, lr=0.0, init=adapter)
    out = dict(run.adapter.modules())
    for path, module in adapter.modules():
        assert torch.allclose(out[path].delta(), module.delta().float(), atol=1e-4)
