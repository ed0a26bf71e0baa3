"""MHR: Multi-Head Adapter Routing (Caccia et al. 2023) over an inventory of LoRA adapters — the math.

An *inventory* is ``S`` LoRA adapters ("skills") on one base model. For one linear layer, skill
``s`` has factors ``A_s (r, d_in)`` and ``B_s (d_out, r)`` (its scale folded into ``B_s``). MHR
splits each factor into ``h`` heads and gives every head its own mixture of skills::

    A[:, head q]  = Σ_s w[q, s] · A_s[:, head q]      (head q = input columns  q·d_in/h  … (q+1)·d_in/h)
    B[head q, :]  = Σ_s w[q, s] · B_s[head q, :]      (head q = output rows    q·d_out/h … (q+1)·d_out/h)
    y = base(x) + B A x

``w = routing_weights(logits)`` with ``logits (h, S)`` per module: ``sigmoid`` at eval, a relaxed
Bernoulli (Gumbel-sigmoid, temperature 1) sample in training, each then divided by its row sum.

**How this matches PEFT's ``poly`` tuner** (``peft/tuners/poly/layer.py``, ``router.py``), the
reference implementation of Poly/MHR: PEFT stores ``poly_lora_A (n_splits, n_skills, d_in/n_splits, r)``
and ``poly_lora_B (n_splits, n_skills, r, d_out/n_splits)``, mixes each split with its own routing
row, then reshapes A to ``(d_in, r)`` and B to ``(r, d_out)`` — i.e. the heads split A's **input**
dimension and B's **output** dimension, and every head keeps all ``r`` ranks. That is the mttl
code of the paper too. Issue 10 says "h heads split A's rank dimension"; that is *not* what PEFT or
the paper compute, so this module follows PEFT (``n_heads`` = PEFT's ``n_splits``). PEFT also
divides the update by ``r`` (a fixed ``1/r`` scale); here each skill's own LoRA scale is folded
into its ``B`` instead, so one-hot routing reproduces that skill's adapter exactly.

Because A and B are each mixed separately, the mixed layer is again a plain rank-``r`` LoRA:
:func:`mixed_adapter` exports any routing as a dense PEFT LoRA of the inventory's rank, with
exactly the outputs of the routed forward (:class:`MhrLinear`) at eval. Skills of different
ranks are zero-padded to the largest rank (a rank-``r'`` LoRA is a rank-``r`` LoRA with zero
extra components), so padding changes nothing.

Training lives in :mod:`adapterhub.route.mhr_train`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.lora import LoraAdapter, LoraModule

__all__ = [
    "EPS",
    "Inventory",
    "MhrLinear",
    "check_heads",
    "mix_factors",
    "mixed_adapter",
    "logistic_noise",
    "relaxed_bernoulli",
    "routing_weights",
    "stack_inventory",
    "uniform_logits",
]

EPS = 1e-12
"""Added to the row sum before normalising, as PEFT's ``PolyRouter`` does (all-zero rows stay finite)."""


@dataclass(frozen=True)
class Inventory:
    """The inventory's factors stacked per module, ready for mixing.

    Attributes:
        A: module path -> ``(S, r, d_in)`` float32, skills in inventory order.
        B: module path -> ``(S, d_out, r)`` float32, each skill's scale folded in.
        base_model: the base model id every adapter records (``None`` if none does).
        target_modules, exclude_modules: PEFT layer selection of the first adapter, reused on export.
    """

    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    base_model: str | None
    target_modules: str | list[str] | None
    exclude_modules: str | list[str] | None

    @property
    def paths(self) -> list[str]:
        return sorted(self.A)

    @property
    def n_skills(self) -> int:
        return int(next(iter(self.A.values())).shape[0])


def stack_inventory(inventory: Sequence[LoraAdapter]) -> Inventory:
    """Check that the adapters can be mixed and stack their factors per module.

    Raises:
        InvalidParameterError: the inventory is empty.
        IncompatibleAdaptersError: adapters record different base models, adapt different module
            sets, have different layer shapes, or use ``fan_in_fan_out`` (Conv1D) layers.
    """
    adapters = list(inventory)
    if not adapters:
        raise InvalidParameterError("MHR needs at least one inventory adapter (the inventory is empty)")
    first = adapters[0]
    bases = {a.base_model for a in adapters}
    if len(bases) > 1:
        raise IncompatibleAdaptersError(
            f"inventory adapters are on different base models ({', '.join(sorted(map(str, bases)))}); "
            "MHR mixes adapters of one base model"
        )
    paths = first.module_paths
    for k, adapter in enumerate(adapters):
        if adapter.config.fan_in_fan_out:
            raise IncompatibleAdaptersError(f"inventory adapter {k} has fan_in_fan_out layers; MHR mixes nn.Linear LoRAs")
        if adapter.module_paths != paths:
            raise IncompatibleAdaptersError(
                f"inventory adapter {k} adapts other modules than adapter 0 "
                f"({len(adapter.module_paths)} vs {len(paths)} modules); MHR needs one module set"
            )
        for path in paths:
            if adapter.module_shape(path)[:2] != first.module_shape(path)[:2]:
                raise IncompatibleAdaptersError(
                    f"inventory adapter {k} has '{path}' as {adapter.module_shape(path)[:2]} (d_out, d_in) but "
                    f"adapter 0 has {first.module_shape(path)[:2]}; were they trained on different base models?"
                )
    A: dict[str, torch.Tensor] = {}
    B: dict[str, torch.Tensor] = {}
    for path in paths:
        d_out, d_in, _ = first.module_shape(path)
        r = max(a.module_shape(path)[2] for a in adapters)
        A[path] = torch.zeros(len(adapters), r, d_in)
        B[path] = torch.zeros(len(adapters), d_out, r)
        for s, adapter in enumerate(adapters):
            b, a = adapter.module(path).folded()
            A[path][s, : a.shape[0]] = a
            B[path][s, :, : b.shape[1]] = b
    return Inventory(
        A=A, B=B, base_model=first.base_model,
        target_modules=first.config.target_modules, exclude_modules=first.config.exclude_modules,
    )


def check_heads(inventory: Inventory, n_heads: int) -> None:
    """Refuse a head count that does not split every module's input and output evenly (PEFT requires it too).

    Raises:
        InvalidParameterError: ``n_heads`` < 1 or not a divisor of some ``d_in``/``d_out``.
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise InvalidParameterError(f"n_heads must be an integer >= 1, got {n_heads!r}")
    for path in inventory.paths:
        d_in, d_out = inventory.A[path].shape[2], inventory.B[path].shape[1]
        if d_in % n_heads or d_out % n_heads:
            raise InvalidParameterError(
                f"n_heads={n_heads} does not divide module '{path}' ({d_in} -> {d_out}); pick a common divisor"
            )


def logistic_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """``log u - log(1 - u)``, ``u ~ U(0, 1)``: the noise of one relaxed-Bernoulli sample."""
    u = torch.rand(shape, generator=generator).clamp(1e-6, 1 - 1e-6)
    return torch.log(u) - torch.log1p(-u)


def relaxed_bernoulli(logits: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One reparametrised sample of a relaxed Bernoulli at temperature 1 (PEFT's ``RelaxedBernoulli(1.0)``):
    ``sigmoid(logits + noise)`` with logistic ``noise`` (fresh if ``None``). Differentiable in ``logits``."""
    if noise is None:
        noise = logistic_noise(logits.shape)
    return torch.sigmoid(logits + noise.to(logits.device))


def routing_weights(logits: torch.Tensor, *, sample: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head mixture weights from routing logits ``(..., h, S)``, as PEFT's ``PolyRouter``.

    Args:
        logits: routing logits.
        sample: a relaxed-Bernoulli sample of the same shape (training); ``None``: ``sigmoid(logits)``.

    Returns:
        Non-negative weights, each row divided by its sum (+ ``EPS``).
    """
    p = torch.sigmoid(logits) if sample is None else sample
    return p / (p.sum(dim=-1, keepdim=True) + EPS)


def mix_factors(A: torch.Tensor, B: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixed rank-``r`` factors of one module.

    Args:
        A: ``(S, r, d_in)`` skill down-projections.
        B: ``(S, d_out, r)`` skill up-projections (scales folded in).
        weights: ``(h, S)`` per-head mixture weights.

    Returns:
        ``(A_mix (r, d_in), B_mix (d_out, r))``; head ``q`` of A is the ``q``-th block of input
        columns, of B the ``q``-th block of output rows (PEFT ``poly``'s split).
    """
    S, r, d_in = A.shape
    d_out = B.shape[1]
    h = weights.shape[0]
    a = torch.einsum("qs,srqd->rqd", weights, A.reshape(S, r, h, d_in // h)).reshape(r, d_in)
    b = torch.einsum("qs,sqdr->qdr", weights, B.reshape(S, h, d_out // h, r)).reshape(d_out, r)
    return a, b


def uniform_logits(n_heads: int, n_skills: int) -> torch.Tensor:
    """Zero logits ``(h, S)``: every skill at weight ``1/S`` in every head (MHR-μ's average)."""
    return torch.zeros(n_heads, n_skills)


class MhrLinear(nn.Module):
    """An ``nn.Linear`` plus a frozen inventory routed per head by trainable logits.

    ``forward(x) = base(x) + x A_mixᵀ B_mixᵀ`` with ``(A_mix, B_mix) = mix_factors(A, B, w)`` and
    ``w = routing_weights(logits)``; in training mode the weights come from a relaxed-Bernoulli
    sample drawn with the logistic ``noise`` the trainer set for this step (one draw per step, so
    the texts and the label descriptions of a step see the same mixture), or fresh noise if none is set.

    Args:
        base: the wrapped layer (kept, never modified).
        A, B: ``(S, r, d_in)`` and ``(S, d_out, r)`` inventory factors (buffers: never trained).
        logits: initial ``(h, S)`` routing logits (copied into the trainable ``self.logits``).
    """

    def __init__(self, base: nn.Linear, A: torch.Tensor, B: torch.Tensor, logits: torch.Tensor) -> None:
        super().__init__()
        if A.shape[2] != base.in_features or B.shape[1] != base.out_features:
            raise IncompatibleAdaptersError(
                f"inventory factors A{tuple(A.shape)} B{tuple(B.shape)} do not fit a linear layer "
                f"{base.in_features} -> {base.out_features}; were the adapters trained on another base model?"
            )
        if logits.shape[1] != A.shape[0] or base.in_features % logits.shape[0] or base.out_features % logits.shape[0]:
            raise InvalidParameterError(f"routing logits {tuple(logits.shape)} do not fit {A.shape[0]} skills and this layer")
        self.base = base
        device = base.weight.device
        self.register_buffer("A", A.detach().to(device, torch.float32).clone())
        self.register_buffer("B", B.detach().to(device, torch.float32).clone())
        self.logits = nn.Parameter(logits.detach().to(device, torch.float32).clone())
        self.noise: torch.Tensor | None = None

    def weights(self) -> torch.Tensor:
        """The ``(h, S)`` mixture this forward uses (sampled in training, sigmoid at eval)."""
        if not self.training:
            return routing_weights(self.logits)
        return routing_weights(self.logits, sample=relaxed_bernoulli(self.logits, self.noise))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        a, b = mix_factors(self.A, self.B, self.weights())
        return out + (x.to(a.dtype) @ a.T @ b.T).to(out.dtype)

    def extra_repr(self) -> str:
        h, S = self.logits.shape
        return f"in={self.base.in_features}, out={self.base.out_features}, heads={h}, skills={S}, rank={self.A.shape[1]}"


def mixed_adapter(
    inventory: Inventory,
    *,
    logits: Mapping[str, torch.Tensor] | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> LoraAdapter:
    """The dense PEFT LoRA (rank ``r``, scale 1) of one routing of the inventory.

    Give either ``logits`` (eval routing: sigmoid, normalised) or explicit per-module ``weights``
    ``(h, S)`` (e.g. one-hot); with neither, every skill gets ``1/S`` (MHR-μ's average).

    Raises:
        InvalidParameterError: both given, or a module of the inventory is missing from them.
    """
    if logits is not None and weights is not None:
        raise InvalidParameterError("pass routing logits or mixture weights, not both")
    modules: dict[str, LoraModule] = {}
    for path in inventory.paths:
        if logits is not None or weights is not None:
            table = logits if logits is not None else weights
            assert table is not None
            if path not in table:
                raise InvalidParameterError(f"the routing table has no entry for module '{path}'")
            w = routing_weights(table[path].float()) if logits is not None else table[path].float()
        else:
            w = torch.full((1, inventory.n_skills), 1.0 / inventory.n_skills)
        a, b = mix_factors(inventory.A[path], inventory.B[path], w)
        modules[path] = LoraModule(A=a.detach().clone(), B=b.detach().clone(), scale=1.0)
    target = inventory.target_modules
    overrides = {"exclude_modules": inventory.exclude_modules} if inventory.exclude_modules else None
    return LoraAdapter.from_modules(
        modules, base_model=inventory.base_model,
        target_modules=target if isinstance(target, (list, str)) else None, config_overrides=overrides,
    )
