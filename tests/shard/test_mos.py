"""MoS adapters on the tiny random BERT and Llama: exact PEFT export, the plain-LoRA special case,
the parameter budget, determinism, training, and the compact pool form."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapterhub.errors import InvalidAdapterError, InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import BaseModel, mean_pool, tiny_random_bert
from adapterhub.models.causal import LLAMA_TARGET_MODULES, tiny_random_llama
from adapterhub.models.lora_layers import LoraLinear, inject_lora, lora_attached, lora_layers
from adapterhub.shard.mos import (
    MosConfig,
    MosLinear,
    MosPools,
    attach_pools,
    export_lora,
    install_mos,
    lora_parameter_count,
    mos_installed,
    mos_layers,
    mos_parameters,
    pools_from_model,
)
from adapterhub.shard.mos_train import train_mos_adapter

TEXTS = ["the cat sat", "a dog ran far away", "x"]
LLAMA = MosConfig(target_modules=LLAMA_TARGET_MODULES)


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Move every MoS parameter off its init (B starts at zero, which would hide a wrong export)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mos_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _embed(base: BaseModel) -> torch.Tensor:
    batch = base.tokenize(TEXTS)
    with torch.no_grad():
        return mean_pool(base.model(**batch).last_hidden_state, batch["attention_mask"])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[1, 5, 9, 12, 7, 3], [4, 4, 8, 2, 6, 11]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_export_matches_mos_forward_and_loads_in_peft(tmp_path):
    from peft import PeftModel

    base = tiny_random_bert(seed=0)
    pristine = copy.deepcopy(base.model)
    with mos_installed(base.model, MosConfig(seed=3)) as paths:
        assert len(paths) == 12 and all(isinstance(base.model.get_submodule(p), MosLinear) for p in paths)
        _randomise(base.model)
        ours = _embed(base)
        adapter = export_lora(base.model, base_model=base.base_model_id)
    assert not list(mos_layers(base.model))  # restored
    assert (ours - _embed(base)).abs().max() > 1e-2  # the adapter does something
    assert set(adapter.ranks().values()) == {8} and adapter.config.raw["exclude_modules"] == ["pooler.dense"]
    with lora_attached(base.model, [adapter]):
        torch.testing.assert_close(_embed(base), ours, rtol=0, atol=1e-5)
    adapter.save(tmp_path / "mos")
    peft_model = PeftModel.from_pretrained(pristine, str(tmp_path / "mos")).eval()
    assert sum(1 for n, _ in peft_model.named_modules() if n.endswith(".lora_A.default")) == 12
    batch = base.tokenize(TEXTS)
    with torch.no_grad():
        theirs = mean_pool(peft_model(**batch).last_hidden_state, batch["attention_mask"])
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_export_matches_mos_forward_on_llama():
    lm = tiny_random_llama(seed=0)
    with mos_installed(lm.model, LLAMA):
        _randomise(lm.model)
        ours = _logits(lm.model)
        adapter = export_lora(lm.model, base_model=lm.base_model_id, task_type="CAUSAL_LM")
    assert adapter.config.raw["task_type"] == "CAUSAL_LM" and len(adapter.module_paths) == 14
    assert (ours - _logits(lm.model)).abs().max() > 1e-3
    with lora_attached(lm.model, [adapter]):
        torch.testing.assert_close(_logits(lm.model), ours, rtol=0, atol=1e-5)


def test_all_private_is_plain_lora_of_the_budget_rank():
    """The paper's consistency check: p = r = R_eq leaves empty pools and one LoRA per layer."""
    base = tiny_random_bert(seed=0)
    config = MosConfig(budget_rank=2, rank=2, shards_per_vector=2, private_rank=2, alpha=4)
    x = torch.randn(3, 5, 64)
    with mos_installed(base.model, config):
        _randomise(base.model)
        layers = list(mos_layers(base.model))
        for _, layer in layers:
            assert layer.pool.A.numel() == 0 and layer.pool.B.numel() == 0
            A, B = layer.factors()
            torch.testing.assert_close(A, layer.private_A.reshape(2, -1))  # two shards make one rank vector
            plain = LoraLinear(layer.base)
            plain.add_adapter(A, B, 4 / 2, slot=0, trainable=False)
            xi = x[..., : layer.in_features]
            with torch.no_grad():
                torch.testing.assert_close(layer(xi), plain(xi), rtol=0, atol=1e-6)
        mos_count = sum(p.numel() for p in mos_parameters(base.model))
    with torch.no_grad():
        inject_lora(base.model, rank=2)
    lora_count = sum(p.numel() for _, m in lora_layers(base.model) for p in [*m.lora_A, *m.lora_B])
    assert mos_count == lora_count == lora_parameter_count([(m.in_features, m.out_features) for _, m in layers], 2)


@pytest.mark.parametrize(
    ("budget", "rank", "shards", "private"), [(2, 8, 2, 1), (2, 8, 1, 0), (1, 4, 4, 0), (4, 16, 8, 3), (3, 3, 2, 3)]
)
def test_parameter_count_equals_lora_of_the_budget_rank(budget, rank, shards, private):
    lm = tiny_random_llama(seed=0)
    config = MosConfig(budget_rank=budget, rank=rank, shards_per_vector=shards, private_rank=private,
                       target_modules=LLAMA_TARGET_MODULES)
    with mos_installed(lm.model, config):
        layers = list(mos_layers(lm.model))
        actual = sum(p.numel() for p in mos_parameters(lm.model))
        pools = pools_from_model(lm.model)
        assert all(layer.factors()[0].shape == (rank, layer.in_features) for _, layer in layers)
    shapes = [(m.in_features, m.out_features) for _, m in layers]
    assert actual == pools.parameter_count() == config.parameter_count(shapes) == lora_parameter_count(shapes, budget)
    assert {name: len(g.paths) for name, g in pools.groups.items()} == {t: 2 for t in LLAMA_TARGET_MODULES}


def test_indices_and_init_are_deterministic_under_a_seed():
    lm = tiny_random_llama(seed=0)

    def tensors(seed):
        with mos_installed(lm.model, MosConfig(seed=seed, target_modules=LLAMA_TARGET_MODULES)):
            return pools_from_model(lm.model).to_tensors()[0]

    a, b, c = tensors(0), tensors(0), tensors(1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["q_proj.index_A"], c["q_proj.index_A"])
    assert not torch.equal(a["q_proj.index_A"], a["q_proj.index_B"])  # pair dissociation
    assert torch.count_nonzero(a["q_proj.pool_B"]) == 0 and torch.count_nonzero(a["q_proj.private_B"]) == 0
    n_shared = a["q_proj.pool_A"].shape[0]  # 4 shards for 14 draws: every shard before any repeat
    for row in a["q_proj.index_A"]:
        assert set(torch.bincount(row, minlength=n_shared).tolist()) <= {14 // n_shared, 14 // n_shared + 1}


def test_training_lowers_the_loss_and_restores_the_model():
    base = tiny_random_bert(seed=0)
    flags = {n: p.requires_grad for n, p in base.model.named_parameters()}
    before = _embed(base)
    result = train_mos_adapter(base, "wn_pos", MosConfig(), epochs=10, lr=1e-2, batch_size=32, max_examples=32)
    assert result.metrics["steps"] == len(result.losses) == 10
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.metrics["mos_parameters"] == result.metrics["lora_budget_parameters"] == 1792
    assert result.metrics["lora_rank_parameters"] == 4 * 1792
    assert not list(mos_layers(base.model)) and not base.model.training
    assert {n: p.requires_grad for n, p in base.model.named_parameters()} == flags
    torch.testing.assert_close(_embed(base), before, rtol=0, atol=0)
    assert result.adapter.base_model == base.base_model_id
    with mos_installed(base.model, result.pools, trainable=False):  # the pools carry the trained adapter
        ours = _embed(base)
    with lora_attached(base.model, [result.adapter]):
        torch.testing.assert_close(_embed(base), ours, rtol=0, atol=1e-5)


def test_causal_training_exports_a_causal_lm_adapter():
    lm = tiny_random_llama(seed=0)
    result = train_mos_adapter(lm, "wn_pos", MosConfig(), epochs=1, lr=1e-2, batch_size=4, max_examples=8)
    assert result.metrics["steps"] == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert result.adapter.config.raw["task_type"] == "CAUSAL_LM" and result.pools.task_type == "CAUSAL_LM"
    assert sorted(result.pools.groups) == sorted(LLAMA_TARGET_MODULES)


def test_pools_round_trip_through_safetensors(tmp_path):
    lm = tiny_random_llama(seed=0)
    with mos_installed(lm.model, LLAMA):
        _randomise(lm.model)
        ours = _logits(lm.model)
        pools = pools_from_model(lm.model, base_model=lm.base_model_id, task_type="CAUSAL_LM")
    tensors, meta = pools.to_tensors()
    save_file(tensors, str(tmp_path / "pools.safetensors"), metadata={"mos": json.dumps(meta)})
    again = MosPools.from_tensors(load_file(str(tmp_path / "pools.safetensors")), json.loads(json.dumps(meta)))
    assert again.config == pools.config and again.task_type == "CAUSAL_LM"
    back, meta_back = again.to_tensors()
    assert meta_back == meta and all(torch.equal(back[k], tensors[k]) for k in tensors)
    attach_pools(lm.model, again)
    torch.testing.assert_close(_logits(lm.model), ours, rtol=0, atol=1e-6)
    adapter = again.assemble()
    assert isinstance(adapter, LoraAdapter) and adapter.base_model == lm.base_model_id


def test_bad_pool_tensors_are_rejected():
    lm = tiny_random_llama(seed=0)
    with mos_installed(lm.model, LLAMA):
        tensors, meta = pools_from_model(lm.model).to_tensors()
    n_shared = tensors["k_proj.pool_A"].shape[0]
    for bad in (n_shared, -1):
        broken = dict(tensors)
        broken["k_proj.index_B"] = broken["k_proj.index_B"].clone()
        broken["k_proj.index_B"][1, 0] = bad
        with pytest.raises(InvalidAdapterError, match="out of range|valid: 0"):
            MosPools.from_tensors(broken, meta)
    with pytest.raises(InvalidAdapterError, match="lack"):
        MosPools.from_tensors({k: v for k, v in tensors.items() if k != "o_proj.pool_B"}, meta)
    with pytest.raises(InvalidAdapterError, match="integer"):
        MosPools.from_tensors({**tensors, "q_proj.index_A": tensors["q_proj.index_A"].float()}, meta)
    with pytest.raises(InvalidAdapterError, match="format"):
        MosPools.from_tensors(tensors, {**meta, "format": "other"})


def test_bad_configs_are_rejected_and_the_model_is_untouched():
    base = tiny_random_bert(seed=0)
    with pytest.raises(InvalidParameterError, match="shards_per_vector=3"):
        install_mos(base.model, MosConfig(shards_per_vector=3))  # 32 is not divisible by 3
    assert not list(mos_layers(base.model))
    for kwargs in ({"budget_rank": 0}, {"rank": -1}, {"private_rank": 3}, {"budget_rank": 1, "private_rank": 1},
                   {"alpha": 0}):
        with pytest.raises(InvalidParameterError):
            MosConfig(**kwargs)
    with pytest.raises(InvalidParameterError, match="selects no linear"):
        install_mos(base.model, MosConfig(target_modules=("nope",)))
    with pytest.raises(RuntimeError, match="boom"), mos_installed(base.model, MosConfig()):
        raise RuntimeError("boom")
    assert not list(mos_layers(base.model))
