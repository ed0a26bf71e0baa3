"""Small adapter factories for tests that do not need a real model."""

from __future__ import annotations

from pathlib import Path

import torch

from adapterhub.lora import LoraAdapter, LoraModule


def random_adapter(
    seed: int = 0,
    *,
    rank: int = 2,
    base_model: str = "tiny-bert",
    layers: int = 2,
    d: int = 32,
) -> LoraAdapter:
    """A rank-``rank`` adapter on BERT-shaped query/value modules with random factors."""
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for layer in range(layers):
        for name in ("query", "value"):
            path = f"encoder.layer.{layer}.attention.self.{name}"
            modules[path] = LoraModule(torch.randn(rank, d, generator=g), torch.randn(d, rank, generator=g), 0.5)
    return LoraAdapter.from_modules(modules, base_model=base_model)


def write_random_adapter(folder: Path, seed: int = 0, **kwargs) -> Path:
    """Save ``random_adapter(seed)`` as a PEFT folder."""
    random_adapter(seed, **kwargs).save(folder)
    return folder
