"""Shared fixtures: tiny random models and PEFT adapters made on them (offline, CPU, seeded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )


def tiny_bert(seed: int = 0):
    """A tiny random BertModel (deterministic for a seed), in eval mode."""
    from transformers import BertModel

    torch.manual_seed(seed)
    return BertModel(tiny_bert_config()).eval()


def make_peft_adapter(
    folder: Path,
    *,
    seed: int = 0,
    r: int = 4,
    alpha: float = 8,
    use_rslora: bool = False,
    rank_pattern: dict | None = None,
    alpha_pattern: dict | None = None,
    target_modules=("query", "value", "dense"),
    modules_to_save=None,
    base_model: str = "tiny-bert",
):
    """Save a PEFT LoRA adapter with random (non-zero) factors; returns (peft_model, folder)."""
    from peft import LoraConfig, get_peft_model

    model = tiny_bert(0)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(target_modules),
        use_rslora=use_rslora,
        rank_pattern=rank_pattern or {},
        alpha_pattern=alpha_pattern or {},
        modules_to_save=modules_to_save,
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    torch.manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    peft_model.peft_config["default"].base_model_name_or_path = base_model
    peft_model.save_pretrained(folder)
    return peft_model.eval(), folder


@pytest.fixture
def peft_adapter_dir(tmp_path: Path) -> Path:
    _, folder = make_peft_adapter(tmp_path / "adapter", rank_pattern={"layer.1.attention.self.value": 2})
    return folder


@pytest.fixture
def input_ids() -> torch.Tensor:
    torch.manual_seed(123)
    return torch.randint(0, 99, (3, 11))
