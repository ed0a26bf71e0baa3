"""Heterogeneous LoRA batches: one base forward pass, each row's own adapter mixture gathered in.

Punica's BGMV and S-LoRA compute ``y = x W + x Aᵢ Bᵢ`` for a batch whose rows use different adapters
without merging weights or looping over adapters. Here the same idea is done with batched
matmuls in torch. Every served linear layer becomes a :class:`GatheredLinear`. For a batch, the
:class:`BatchPlan` holds each row's mixture as ``M`` slots, each an index into the batch's pool of
distinct adapters and a weight. On its first use in a batch, a layer stacks the pool's factors for
that layer:

    A_pool  (U + 1, r, d_in)        row U is zeros: an empty slot, or "base"
    Bt_pool (U + 1, r, d_out)       (s·B)ᵀ

It gathers them per row into ``A (batch, M·r, d_in)`` and ``Bt (batch, M·r, d_out)``, with the slot
weights folded into ``Bt``, and adds ``bmm(bmm(x, Aᵀ), Bt)``. A mixture is a rank-``M·r`` LoRA, so
mixtures, single adapters and the bare base share one batch and one kernel. Adapters of different
ranks are padded with zero rows up to the largest rank in the batch (the result is unchanged).

The model is the server's own copy (``install_gathered`` replaces its layers), so nothing else that
holds the catalog's shared base model sees these layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from adapterhub.serving.factors import ServedAdapter

__all__ = ["BatchPlan", "GatheredLinear", "Mixture", "install_gathered", "linear_layers"]

Mixture = Sequence[tuple[ServedAdapter, float]]
"""One row's adapters and weights; empty for the bare base model."""


@dataclass
class BatchPlan:
    """Which adapters each row of the next forward pass uses.

    Attributes:
        pool: the distinct adapters of the batch.
        index: ``(batch, M)`` slot → pool index (``len(pool)``: the zero entry).
        weight: ``(batch, M)`` slot weights.
        rank: the padded rank (largest rank of the pool).
    """

    pool: list[ServedAdapter]
    index: torch.Tensor
    weight: torch.Tensor
    rank: int
    _layers: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: Sequence[Mixture]) -> BatchPlan:
        """The plan for ``rows`` (one mixture per row, in batch order)."""
        position: dict[str, int] = {}
        pool: list[ServedAdapter] = []
        slots = max((len(r) for r in rows), default=0)
        index = torch.zeros(len(rows), max(slots, 1), dtype=torch.long)
        weight = torch.zeros(len(rows), max(slots, 1))
        for i, mixture in enumerate(rows):
            for m, (adapter, w) in enumerate(mixture):
                if adapter.key not in position:
                    position[adapter.key] = len(pool)
                    pool.append(adapter)
                index[i, m] = position[adapter.key]
                weight[i, m] = float(w)
        unused = weight == 0
        index[unused] = len(pool)
        return cls(pool, index, weight, max((a.max_rank for a in pool), default=0))

    @property
    def empty(self) -> bool:
        return not self.pool

    def factors(self, path: str, layer: nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The gathered ``(A (batch, M·r, d_in), Bt (batch, M·r, d_out))`` of one layer, or None
        when no adapter of the batch adapts it (built on first use, then reused by the layer)."""
        if path in self._layers:
            return self._layers[path]
        if not any(path in a.factors for a in self.pool):
            self._layers[path] = None
            return None
        r, d_in, d_out = self.rank, layer.in_features, layer.out_features
        A_rows, B_rows = [], []
        for adapter in self.pool:
            pair = adapter.factors.get(path)
            if pair is None:
                A_rows.append(torch.zeros(r, d_in, dtype=dtype))
                B_rows.append(torch.zeros(r, d_out, dtype=dtype))
                continue
            A, Bt = pair
            pad = r - A.shape[0]
            A_rows.append(F.pad(A, (0, 0, 0, pad)) if pad else A)
            B_rows.append(F.pad(Bt, (0, 0, 0, pad)) if pad else Bt)
        A_rows.append(torch.zeros(r, d_in, dtype=dtype))
        B_rows.append(torch.zeros(r, d_out, dtype=dtype))
        device = layer.weight.device
        A_pool = torch.stack(A_rows).to(device)
        B_pool = torch.stack(B_rows).to(device)
        index = self.index.to(device)
        batch, slots = index.shape
        A = A_pool[index].reshape(batch, slots * r, d_in)
        Bt = (B_pool[index] * self.weight.to(device, dtype)[:, :, None, None]).reshape(batch, slots * r, d_out)
        self._layers[path] = (A, Bt)
        return A, Bt


class GatheredLinear(nn.Module):
    """An ``nn.Linear`` that adds, per batch row, the LoRA term of that row's mixture.

    ``forward(x)`` for ``x (batch, ..., d_in)``: ``base(x) + bmm(bmm(x, Aᵢᵀ), Btᵢ)`` per row ``i``
    under the current :class:`BatchPlan` of its :class:`PlanSlot`; exactly ``base(x)`` without one.
    """

    def __init__(self, base: nn.Linear, path: str, slot: PlanSlot) -> None:
        super().__init__()
        self.base = base
        self.path = path
        self.slot = slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        plan = self.slot.plan
        if plan is None or plan.empty:
            return out
        gathered = plan.factors(self.path, self.base, self.base.weight.dtype)
        if gathered is None:
            return out
        A, Bt = gathered
        if A.shape[0] != x.shape[0]:
            raise RuntimeError(f"the batch plan has {A.shape[0]} rows but the input has {x.shape[0]}")
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        out3 = out.view(out.shape[0], -1, out.shape[-1])  # base(x) is a fresh tensor: add into it in place
        out3.baddbmm_(torch.bmm(flat, A.transpose(1, 2)), Bt)
        return out


class PlanSlot:
    """The current plan of one served model, shared by all its layers (set by the batch runner)."""

    def __init__(self) -> None:
        self.plan: BatchPlan | None = None


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The model's ``nn.Linear`` layers by path (inside a gathered layer: the wrapped one, by its path)."""
    out: dict[str, nn.Linear] = {}
    for path, module in model.named_modules():
        if isinstance(module, GatheredLinear):
            out[path] = module.base
        elif isinstance(module, nn.Linear) and not path.endswith(".base"):
            out[path] = module
    return out


def install_gathered(model: nn.Module, *, skip: Sequence[str] = ("lm_head",)) -> PlanSlot:
    """Replace every ``nn.Linear`` of ``model`` (but ``skip`` paths) by a :class:`GatheredLinear`
    sharing one :class:`PlanSlot`, which it returns. Mutates ``model``: pass the server's own copy."""
    slot = PlanSlot()
    for path, layer in list(linear_layers(model).items()):
        if path in skip or isinstance(model.get_submodule(path), GatheredLinear):
            continue
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, GatheredLinear(layer, path, slot))
    return slot
