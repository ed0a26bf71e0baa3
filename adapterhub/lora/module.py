"""``LoraModule``: one adapted linear layer, the unit every engine works on."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-adapted linear layer: ``delta() = scale * B @ A``.

    The factors are always in PEFT's ``nn.Linear`` convention, A is ``(r, d_in)`` and B is
    ``(d_out, r)``, whatever the layout of the base weight. Adapters whose base layers store
    weights transposed (``fan_in_fan_out``, GPT-2's Conv1D) keep the same factors; only the
    orientation of the delta in the base weight differs, and that is a property of the adapter
    (see ``LoraAdapter.delta_weight``), not of the low-rank math the engines do.

    Attributes:
        A: down projection, shape ``(r, d_in)``.
        B: up projection, shape ``(d_out, r)``.
        scale: the factor PEFT applies (alpha/r or alpha/sqrt(r)).
    """

    A: torch.Tensor
    B: torch.Tensor
    scale: float

    def __post_init__(self) -> None:
        if self.A.ndim != 2 or self.B.ndim != 2:
            raise ValueError(f"LoRA factors must be matrices, got A{tuple(self.A.shape)} B{tuple(self.B.shape)}")
        if self.A.shape[0] != self.B.shape[1]:
            raise ValueError(
                f"rank mismatch: A is {tuple(self.A.shape)} (r, d_in) but B is {tuple(self.B.shape)} (d_out, r)"
            )

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.A.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.B.shape[0])

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense weight update ``scale * B @ A`` of shape ``(d_out, d_in)``."""
        return self.scale * (self.B.to(dtype) @ self.A.to(dtype))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors with the scale folded into B, so that ``B' @ A == delta()`` (float32)."""
        return self.B.float() * self.scale, self.A.float()
