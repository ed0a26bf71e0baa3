"""The packed form's value types, shared by ``pack`` and ``pack_io`` (kept apart to avoid an import cycle)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from adapterhub.lora.config import AdapterConfig

FORMAT = "adapterhub.shard.pack/1"


def pool_key(path: str, side: str, d: int) -> str:
    """Pool of a module side: module type, side and vector length (``dense`` layers differ in shape)."""
    return f"{path.rsplit('.', 1)[-1]}.{side}{d}"


def index_dtype(pool_len: int) -> torch.dtype:
    return torch.uint16 if pool_len <= 65536 else torch.int32


@dataclass
class PackedModule:
    """One module of a packed adapter: pooled units (indices + coefficients) and private units.

    ``verbatim`` holds the original ``(A, B)`` when every unit is private; then nothing else is used.
    """

    d_out: int
    d_in: int
    scale: float = 1.0
    verbatim: tuple[torch.Tensor, torch.Tensor] | None = None
    idx_B: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 1, dtype=torch.long))
    coef_B: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 1))
    idx_A: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 1, dtype=torch.long))
    coef_A: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 1))
    priv_B: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # (r_priv, d_out)
    priv_A: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # (r_priv, d_in)


@dataclass
class PackedAdapter:
    config: AdapterConfig
    modules: dict[str, PackedModule]
    extras: dict[str, torch.Tensor]
    factor_bytes: int  # bytes of the original A and B tensors
    error: float = 0.0
