"""Synthetic Llama-7B-layer adapters for ``shard_bench.py``: generated once into a folder cache, read lazily.

Each adapter is one Llama-7B decoder layer at rank 16: q, k, v, o (4096x4096), gate, up
(4096 -> 11008), down (11008 -> 4096), fp16 factors: 1,249,280 values, 2.5 MB of safetensors
(5 MB in float32). The adapters share low-rank structure, so pooling has something to find: per
projection and side there are ``atoms`` shared unit vectors, and each rank vector of an adapter is a
sparse random mix of 2 of them plus Gaussian noise (``noise``, relative to the signal). Adapter ``i``
depends only on ``i`` (its own seed), so the first 100 of a 1,000-adapter cache are the 100-adapter
library.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from adapterhub.lora.adapter import LoraAdapter
from adapterhub.lora.module import LoraModule
from adapterhub.merge.factors import fro_norm

SHAPES = {  # name: (d_out, d_in)
    "q_proj": (4096, 4096),
    "k_proj": (4096, 4096),
    "v_proj": (4096, 4096),
    "o_proj": (4096, 4096),
    "gate_proj": (11008, 4096),
    "up_proj": (11008, 4096),
    "down_proj": (4096, 11008),
}
RANK = 16
BASE = "meta-llama/Llama-2-7b-hf"


def _atoms(d: int, atoms: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(atoms, d, generator=g)
    return basis / basis.norm(dim=1, keepdim=True)


def module_path(kind: str) -> str:
    return f"model.layers.0.self_attn.{kind}" if kind[0] in "qkvo" else f"model.layers.0.mlp.{kind}"


class LazyLibrary(Mapping[str, LoraAdapter]):
    """name -> adapter, built on every read from the name's seed; nothing is kept."""

    def __init__(self, n: int, *, atoms: int, noise: float) -> None:
        self.names = [f"synthetic/a{i:04d}" for i in range(n)]
        self.noise = noise
        self.bases = {
            (kind, side): _atoms(d, atoms, seed=100 * j + (side == "A"))
            for j, (kind, (d_out, d_in)) in enumerate(SHAPES.items())
            for side, d in (("B", d_out), ("A", d_in))
        }

    def __getitem__(self, name: str) -> LoraAdapter:
        i = int(name.rsplit("a", 1)[1])
        g = torch.Generator().manual_seed(1000 + i)
        modules = {}
        for kind, (d_out, d_in) in SHAPES.items():
            factors = {}
            for side, d in (("B", d_out), ("A", d_in)):
                basis = self.bases[(kind, side)]
                pick = torch.randint(0, basis.shape[0], (RANK, 2), generator=g)
                mix = torch.randn(RANK, 2, generator=g)
                vec = (basis[pick] * mix[:, :, None]).sum(1)
                vec += self.noise * torch.randn(RANK, d, generator=g) / d**0.5
                factors[side] = (vec * 0.05).half()
            modules[module_path(kind)] = LoraModule(A=factors["A"], B=factors["B"].T.contiguous(), scale=2.0)
        return LoraAdapter.from_modules(modules, base_model=BASE)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


class FolderLibrary(Mapping[str, LoraAdapter]):
    """name -> adapter loaded from ``root/<name>`` (PEFT folder) on every read; nothing is kept."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root, self.names = root, names

    def folder(self, name: str) -> Path:
        return self.root / name

    def __getitem__(self, name: str) -> LoraAdapter:
        return LoraAdapter.load(self.folder(name), validate=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def ensure_cache(root: Path, n: int, *, atoms: int, noise: float) -> tuple[FolderLibrary, float]:
    """The first ``n`` synthetic adapters as PEFT folders under ``root/atoms{a}-noise{x}``, writing missing ones.

    Returns ``(library, seconds spent generating now)``.
    """
    root = root / f"atoms{atoms}-noise{noise:g}"
    lazy = LazyLibrary(n, atoms=atoms, noise=noise)
    start = time.perf_counter()
    for name in lazy.names:
        folder = root / name
        if not (folder / "adapter_model.safetensors").is_file():
            lazy[name].save(folder)
    return FolderLibrary(root, lazy.names), time.perf_counter() - start


def relative_error(original: LoraAdapter, approx: LoraAdapter) -> float:
    """``sqrt(Σ ||ΔW - ΔŴ||²) / sqrt(Σ ||ΔW||²)`` over the modules, in factor space (float64 Grams)."""
    err_sq = norm_sq = 0.0
    for path, m in original.modules():
        B, A = m.folded()
        B_hat, A_hat = approx.module(path).folded()
        err_sq += fro_norm(torch.cat([B.double(), -B_hat.double()], 1), torch.cat([A.double(), A_hat.double()], 0)) ** 2
        norm_sq += fro_norm(B.double(), A.double()) ** 2
    return math.sqrt(err_sq / norm_sq) if norm_sq > 0 else 0.0


def truncation_rank(adapter: LoraAdapter, budget: float, *, value_bytes: float, overhead: float = 0.0) -> int:
    """The largest rank whose factors (``value_bytes`` per value, ``overhead`` per rank vector) fit in ``budget``."""
    per_rank = sum((d_out + d_in) * value_bytes + 2 * overhead for d_out, d_in, _ in map(adapter.module_shape, adapter.module_paths))
    return int(budget // per_rank)
