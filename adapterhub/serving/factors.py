"""``ServedAdapter``: one adapter's factors as the serving kernels read them.

A request names an adapter (or a mixture of them); the batch kernel (``gathered``) needs, for every
adapted linear layer, ``A (r, d_in)`` and ``(s·B)ᵀ (r, d_out)`` in the compute dtype, so the
per-row LoRA term is two batched matmuls with no transposes or scales at run time. They are made
once per adapter when it enters the cache (``cache``) and shared by every batch that uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from adapterhub.errors import IncompatibleAdaptersError, UnsupportedAdapterError
from adapterhub.lora import LoraAdapter

__all__ = ["ServedAdapter", "served_adapter"]


@dataclass(frozen=True)
class ServedAdapter:
    """An adapter ready for the batch kernel.

    Attributes:
        key: what the cache knows it by (the weights digest: equal content is loaded once).
        factors: per adapted layer path, ``(A (r, d_in), Bt (r, d_out))`` with the scale folded in.
        nbytes: memory the factors hold (what the cache budget counts).
    """

    key: str
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.factors.values())

    @property
    def max_rank(self) -> int:
        return max((a.shape[0] for a, _ in self.factors.values()), default=0)


def served_adapter(key: str, adapter: LoraAdapter, linears: Mapping[str, nn.Linear], dtype: torch.dtype) -> ServedAdapter:
    """Check ``adapter`` against the served model's linear layers and make its kernel factors.

    Args:
        key: cache key (the adapter's weights digest).
        adapter: the PEFT adapter.
        linears: the served model's ``nn.Linear`` layers by path (paths relative to the base
            model, as PEFT and ``adapterhub.models`` write them).
        dtype: the compute dtype of the served model.

    Raises:
        UnsupportedAdapterError: ``fan_in_fan_out`` adapters (Conv1D layers).
        IncompatibleAdaptersError: a layer the model lacks, or of another shape (another base).
    """
    if adapter.config.fan_in_fan_out:
        raise UnsupportedAdapterError("adapters with fan_in_fan_out=true (Conv1D layers) cannot be served")
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for path, module in adapter.modules():
        layer = linears.get(path)
        if layer is None:
            raise IncompatibleAdaptersError(
                f"the adapter adapts '{path}', which this base model does not have; it was trained for another base"
            )
        if (module.d_out, module.d_in) != (layer.out_features, layer.in_features):
            raise IncompatibleAdaptersError(
                f"the adapter has '{path}' as {module.d_in} -> {module.d_out} but the base model's layer is "
                f"{layer.in_features} -> {layer.out_features}; it was trained for another base"
            )
        B, A = module.folded()
        factors[path] = (A.to(dtype).contiguous(), B.t().to(dtype).contiguous())
    return ServedAdapter(key, factors)
