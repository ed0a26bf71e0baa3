"""The alternatives packing is compared with at equal bytes: rank truncation and int8 factors.

Each returns the adapter a consumer would load (a plain PEFT LoRA) and the bytes it takes to store.
"""

from __future__ import annotations

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.lora.adapter import LoraAdapter
from adapterhub.lora.module import LoraModule
from adapterhub.merge.factors import truncated_svd
from adapterhub.shard.pack import adapter_like


def _extras_bytes(adapter: LoraAdapter) -> int:
    return sum(t.numel() * t.element_size() for t in adapter.extra_tensors().values())


def truncate_rank(adapter: LoraAdapter, rank: int) -> tuple[LoraAdapter, int]:
    """Best rank-``rank`` approximation of every module (factor-space SVD), in the adapter's dtype.

    Returns:
        ``(adapter, bytes)``: bytes of its factors (``(d_out + d_in)·rank`` values per module) + extras.
    """
    if rank < 1:
        raise InvalidParameterError(f"rank must be >= 1, got {rank}")
    modules, size = {}, _extras_bytes(adapter)
    for path, m in adapter.modules():
        B, A = m.folded()
        Bk, Ak, _ = truncated_svd(B, A, rank)
        modules[path] = LoraModule(A=Ak.to(m.A.dtype), B=Bk.to(m.B.dtype), scale=1.0)
        size += (Ak.numel() + Bk.numel()) * m.A.element_size()
    return adapter_like(adapter.config, modules, adapter.extra_tensors()), size


def int8_quantise(adapter: LoraAdapter) -> tuple[LoraAdapter, int]:
    """Absmax int8 of each rank vector (rows of A, columns of B), dequantised back to the adapter's dtype.

    One float32 scale per rank vector, not per row of B: a row of B has only ``r`` entries, so a scale
    per row would cost as much as the int8 values themselves at ``r = 4``.

    Returns:
        ``(adapter, bytes)``: int8 values + float32 scales + extras.
    """
    modules, size = {}, _extras_bytes(adapter)
    for path, m in adapter.modules():
        B, A = m.folded()
        sa = A.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127
        sb = B.abs().amax(dim=0, keepdim=True).clamp_min(1e-30) / 127
        Aq = torch.round(A / sa).clamp(-127, 127) * sa
        Bq = torch.round(B / sb).clamp(-127, 127) * sb
        modules[path] = LoraModule(A=Aq.to(m.A.dtype), B=Bq.to(m.B.dtype), scale=1.0)
        size += A.numel() + B.numel() + 4 * (sa.numel() + sb.numel())
    return adapter_like(adapter.config, modules, adapter.extra_tensors()), size
