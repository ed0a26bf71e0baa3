"""Base model loading and pooling."""

from __future__ import annotations

import pytest
import torch

from adapterhub.models.base import (
    DEFAULT_BASE_MODEL,
    BaseModelNotFoundError,
    load_base_model,
    mean_pool,
    tiny_random_bert,
)


def test_mean_pool_ignores_padding_and_normalises():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    pooled = mean_pool(hidden, mask)
    expected = torch.tensor([[2.0, 2.0]]) / (8**0.5)
    torch.testing.assert_close(pooled, expected)


def test_encode_is_order_independent_and_unit_norm():
    model = tiny_random_bert(seed=3)
    texts = ["a much longer text than the others, with words", "b", "middle sized text"]
    emb = model.encode(texts, batch_size=2)
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    for i, text in enumerate(texts):
        torch.testing.assert_close(emb[i], model.encode([text])[0], rtol=0, atol=1e-5)
    assert model.encode([]).shape == (0, 32)


def test_tiny_bert_is_seeded():
    a, b, c = tiny_random_bert(seed=1), tiny_random_bert(seed=1), tiny_random_bert(seed=2)
    assert torch.equal(a.encode(["x y"]), b.encode(["x y"]))
    assert not torch.equal(a.encode(["x y"]), c.encode(["x y"]))


def test_missing_folder_says_what_to_pass(tmp_path):
    with pytest.raises(BaseModelNotFoundError, match="not a local folder"):
        load_base_model(tmp_path / "nope")
    with pytest.raises(BaseModelNotFoundError, match="no config.json"):
        load_base_model(tmp_path)


def test_packaged_minilm_loads_offline_and_matches_reference_pooling(monkeypatch):
    """The packaged MiniLM: BERT, 6 layers, 384 hidden; our pooling equals a manual reference."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_base_model()
    assert model.base_model_id == DEFAULT_BASE_MODEL
    cfg = model.model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("bert", 6, 384)
    texts = ["a small domesticated carnivorous mammal", "move fast"]
    tok = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.model(**tok).last_hidden_state
    ref = []
    for i in range(len(texts)):
        n = int(tok["attention_mask"][i].sum())
        v = hidden[i, :n].mean(dim=0)
        ref.append(v / v.norm())
    torch.testing.assert_close(model.encode(texts), torch.stack(ref), rtol=0, atol=1e-5)
    # the two texts are related but distinct
    emb = model.encode(texts)
    assert 0.0 < float(emb[0] @ emb[1]) < 0.9
