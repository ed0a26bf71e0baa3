"""Random adapters for merge tests: arbitrary ranks, scales and module sets, and the dense
reference ``sum_i w_i s_i B_i A_i`` computed independently of adapterhub.merge."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adapterhub.lora import AdapterConfig, LoraAdapter
from adapterhub.lora.keys import lora_key
from adapterhub.lora.tensorfile import DictSource

SHAPES = {"layer.0.q": (24, 16), "layer.0.v": (24, 16), "layer.0.up": (40, 16), "layer.1.q": (24, 16)}


def make_adapter(
    seed: int,
    *,
    r: int = 4,
    alpha: float = 8.0,
    paths: Sequence[str] = ("layer.0.q", "layer.0.v", "layer.0.up"),
    base_model: str | None = "base",
    use_rslora: bool = False,
    dtype: torch.dtype = torch.float32,
    extra: dict[str, torch.Tensor] | None = None,
) -> LoraAdapter:
    """An in-memory adapter with PEFT semantics (scale alpha/r or alpha/sqrt(r), not folded)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for path in paths:
        d_out, d_in = SHAPES[path]
        tensors[lora_key(path, "A")] = torch.randn(r, d_in, generator=g).to(dtype)
        tensors[lora_key(path, "B")] = torch.randn(d_out, r, generator=g).to(dtype)
    for name, tensor in (extra or {}).items():
        tensors[f"base_model.model.{name}"] = tensor
    raw = {
        "peft_type": "LORA",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": alpha,
        "target_modules": sorted({p.rsplit(".", 1)[-1] for p in paths}),
        "use_rslora": use_rslora,
        "modules_to_save": sorted({n.rsplit(".", 1)[0] for n in extra}) if extra else None,
    }
    return LoraAdapter(AdapterConfig(raw), DictSource(tensors))


def dense_sum(adapters: Sequence[LoraAdapter], weights: Sequence[float], path: str) -> torch.Tensor:
    """``sum_i w_i s_i B_i A_i`` in float64, from the raw config (alpha/r) and tensors."""
    total = None
    for adapter, w in zip(adapters, weights):
        if path not in adapter.module_paths:
            continue
        m = adapter.module(path)
        r = m.rank
        alpha = adapter.config.alpha_for(path)
        scale = alpha / r**0.5 if adapter.config.use_rslora else alpha / r
        term = w * scale * (m.B.double() @ m.A.double())
        total = term if total is None else total + term
    assert total is not None
    return total


def dense_delta(adapter: LoraAdapter, path: str) -> torch.Tensor:
    m = adapter.module(path)
    return m.scale * (m.B.double() @ m.A.double())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())
