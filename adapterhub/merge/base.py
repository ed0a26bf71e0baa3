"""The per-module contract every merge method implements.

A merge method never sees adapters, files or configs: the engine (``engine.py``) streams the
union of module paths and, for one path at a time, hands the method the inputs that have that
module (``Term``s) and a ``ModuleContext``. The method returns the merged factors (``ModuleMerge``)
with every scale folded in. Keeping the contract this small is what makes the merge streaming
(peak memory about one module of every input plus the output) and every method testable on
plain tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from pydantic import BaseModel

from adapterhub.lora import LoraModule


@dataclass(frozen=True)
class Term:
    """One input's contribution to one module: ``weight * module.scale * B @ A``.

    Attributes:
        index: position of the input adapter in the call (used for mixing statistics).
        weight: the resolved merge weight of that input.
        module: the input's LoRA factors for this module (scale not folded).
        gram: ``X^T X`` of this module's inputs on the adapter's own examples (``d_in x d_in``),
            when the caller supplied input statistics (``regmean``); else ``None``.
    """

    index: int
    weight: float
    module: LoraModule
    gram: torch.Tensor | None = None

    @property
    def coeff(self) -> float:
        """``weight * scale``: the factor the unit contributions carry."""
        return self.weight * self.module.scale


@dataclass(frozen=True)
class ModuleContext:
    """What a method may know besides the terms: where it is and how to draw random numbers.

    Attributes:
        path: the normalised module path.
        index: position of the path in the sorted union of all module paths (stable under
            permuting the inputs).
        weights: the resolved weights of *all* inputs (including those lacking this module), for
            methods whose output scale depends on the whole mix (``lego``'s output reweighting).
        seed: the merge seed; ``generator()`` derives the module's own stream from it.
        sum_norm: ``||sum_i w_i s_i B_i A_i||_F`` if the caller already computed it (the engine
            does, for the report), else ``None``.
    """

    path: str
    index: int
    weights: tuple[float, ...]
    seed: int
    sum_norm: float | None = None

    @property
    def n_inputs(self) -> int:
        return len(self.weights)

    def generator(self) -> torch.Generator:
        """A fresh CPU generator seeded with ``seed + index``: reproducible per module, whatever
        order the modules are processed in."""
        return torch.Generator(device="cpu").manual_seed(self.seed + self.index)


@dataclass(frozen=True)
class ModuleMerge:
    """A method's answer for one module: ``B @ A`` is the merged delta (scale folded, float32).

    Attributes:
        B: ``(d_out, k)``.
        A: ``(k, d_in)``.
        stats: method-specific numbers for the report (e.g. ``refit_error``, ``mixing_share``).
    """

    B: torch.Tensor
    A: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


class ModuleMergeFn(Protocol):
    """``(terms, params, ctx) -> ModuleMerge``: merge one module. Must not mutate the terms."""

    def __call__(self, terms: list[Term], params: BaseModel, ctx: ModuleContext) -> ModuleMerge: ...
