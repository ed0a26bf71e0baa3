"""Synthetic LoRA adapters for the benchmarks: Llama-7B shapes, written as real PEFT folders.

Shared by ``merge_memory.py``, ``merge_bench.py`` and ``hub_load.py`` (its big adapter) so that
they measure the same kind of adapter. Random A scaled like Kaiming init and small random B give
magnitudes like a trained LoRA; the files are written with safetensors directly (no model, no
adapterhub import), so writing 8 full adapters takes seconds. Tests do not import benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, INTER, LAYERS = 4096, 11008, 32
MODULES = {
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (HIDDEN, HIDDEN),
    "self_attn.v_proj": (HIDDEN, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (INTER, HIDDEN),
    "mlp.up_proj": (INTER, HIDDEN),
    "mlp.down_proj": (HIDDEN, INTER),
}


def module_paths(layers: int = LAYERS, names: list[str] | None = None) -> list[tuple[str, tuple[int, int]]]:
    """``(path, (d_out, d_in))`` of every adapted Llama module."""
    chosen = {k: v for k, v in MODULES.items() if names is None or k.rsplit(".", 1)[-1] in names}
    return [(f"model.layers.{i}.{name}", shape) for i in range(layers) for name, shape in chosen.items()]


def write_adapter(folder: Path, seed: int, *, r: int = 16, alpha: float = 32.0, layers: int = LAYERS,
                  names: list[str] | None = None, task_type: str | None = "CAUSAL_LM") -> Path:
    """A PEFT folder with Kaiming-like A and small random B (magnitudes like a trained LoRA)."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for path, (d_out, d_in) in module_paths(layers, names):
        tensors[f"base_model.model.{path}.lora_A.weight"] = torch.randn(r, d_in, generator=g) / d_in**0.5
        tensors[f"base_model.model.{path}.lora_B.weight"] = torch.randn(d_out, r, generator=g) * 0.01
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    targets = sorted({name.rsplit(".", 1)[-1] for name in MODULES if names is None or name.rsplit(".", 1)[-1] in names})
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
        "r": r,
        "lora_alpha": alpha,
        "target_modules": targets,
        "lora_dropout": 0.0,
        "bias": "none",
        "task_type": task_type,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder


def write_adapters(root: Path, n: int, **kwargs) -> list[Path]:
    folders = []
    for i in range(n):
        folder = root / f"lora{i}"
        if not (folder / "adapter_model.safetensors").exists():
            write_adapter(folder, seed=i, **kwargs)
        folders.append(folder)
    return folders
