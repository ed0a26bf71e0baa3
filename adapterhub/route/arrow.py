"""Arrow (Ostapenko et al. 2024, "Towards Modular LLMs by Building and Reusing a Library of LoRAs"):
data-free, per-token routing over a library of LoRA adapters.

Each adapter's *prototype* at a layer is the top right singular vector ``vⱼ`` of its update
``ΔWⱼ = sⱼ Bⱼ Aⱼ``: the input direction the adapter amplifies most. At query time each adapted layer
scores each token ``x`` against the prototypes of the adapters that adapt it, keeps the ``top_k``
best and mixes them by a softmax with temperature ``T``::

    logitsⱼ = |⟨x, vⱼ⟩|          wⱼ = softmax(logits[top_k] / T)ⱼ  (0 outside the top k)
    out     = base(x) + Σⱼ wⱼ · sⱼ Bⱼ Aⱼ x

No data and no training: prototypes come from the weights alone, once per adapter revision
(:func:`arrow_prototypes`; store them beside the adapter with :func:`prototypes_to_bytes`), so
routing over a library costs no SVD at query time.

Matches PEFT's Arrow (``peft.tuners.lora.arrow``, ``create_arrow_model`` with ``use_gks=False``),
which the tests check to 1e-4 on the same adapters, base and inputs:

- the score is ``|x · v|`` with the raw layer input ``x`` (not normalised, despite PEFT's docstrings
  saying "cosine") and a unit prototype, so the sign of ``v`` never matters;
- every token (padding included; it cannot leak through masked attention) and every adapted layer
  routes on its own, with the same ``top_k`` and temperature everywhere;
- the softmax runs over the top-k scores only; each expert keeps its own LoRA scale
  (``alpha / r``) and the mixture weight multiplies it;
- the prototype ignores the scale (a positive factor does not move a singular vector).

Where it differs from PEFT (none of it changes outputs when PEFT converges):

- PEFT finds ``v`` by 15 steps of power iteration from a random start, so it is approximate when
  the top two singular values are close; here it is exact: QR of ``B`` and ``Aᵀ`` and an SVD of the
  small ``r × r`` core (never a dense ``d_out × d_in`` matrix), with a deterministic sign.
- PEFT needs every expert to have the same rank and adapt the same modules, and fails when
  ``top_k`` exceeds the number of experts; here ranks may differ, each layer routes among the
  adapters that adapt it, and ``top_k`` is clipped to that number.
- GenKnowSub (PEFT's ``use_gks``) is not done here; subtract a general adapter with the merge
  engines first if wanted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.models.base import BaseModel
from adapterhub.models.lora_layers import attach_adapters, lora_layers, num_adapters, restore_on_exit
from adapterhub.route.base import check_route_params, top_k_softmax

__all__ = [
    "ArrowRouting",
    "arrow_attached",
    "arrow_prototypes",
    "arrow_weights_summary",
    "prototypes_from_bytes",
    "prototypes_to_bytes",
    "top_right_singular_vector",
]

Prototypes = dict[str, torch.Tensor]
"""Module path → unit prototype ``(d_in,)`` float32: a flat dict of tensors, safetensors-ready."""


# ----------------------------------------------------------------------------- prototypes


def top_right_singular_vector(module: LoraModule) -> torch.Tensor:
    """The unit top right singular vector ``(d_in,)`` of ``scale · B A``, computed in factor space.

    With ``B = Q_B R_B`` and ``Aᵀ = Q_A R_A`` (thin QR), ``B A = Q_B (R_B R_Aᵀ) Q_Aᵀ``, so the right
    singular vectors of ``B A`` are ``Q_A`` times those of the ``r × r`` core: cost ``O((d_in +
    d_out) r²)``, never ``O(d_out · d_in)``. The scale is left out (it does not move the vector).

    The sign is fixed so that the entry of largest magnitude is positive, so the same adapter
    always stores the same bytes (Arrow's score ``|⟨x, v⟩|`` does not depend on it). A zero
    update has no direction and gets a zero vector, as PEFT's power iteration gives: its score is
    then 0 for every token.
    """
    A = module.A.detach().to(torch.float32)
    B = module.B.detach().to(torch.float32)
    q_a, r_a = torch.linalg.qr(A.T)  # (d_in, r), (r, r)
    _, r_b = torch.linalg.qr(B)  # (r, r); Q_B is orthonormal and does not change right vectors
    _, s, vh = torch.linalg.svd(r_b @ r_a.T)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return torch.zeros(module.d_in)
    v = q_a @ vh[0]
    v = v / v.norm()
    if v[v.abs().argmax()] < 0:
        v = -v
    return v.contiguous()


def arrow_prototypes(adapter: LoraAdapter) -> Prototypes:
    """Arrow prototype of every module the adapter adapts: path → unit ``(d_in,)`` float32.

    Computed once per adapter revision (e.g. at ``add``) and stored by the adapter's digest, so
    routing needs no SVD at query time. The result is a flat dict of contiguous tensors, which
    :func:`prototypes_to_bytes` (safetensors) writes as is.
    """
    return {path: top_right_singular_vector(module) for path, module in adapter.modules()}


def prototypes_to_bytes(prototypes: Mapping[str, torch.Tensor]) -> bytes:
    """Prototypes as safetensors bytes (a blob to store beside the adapter)."""
    return st_save({path: v.detach().to(torch.float32).contiguous() for path, v in prototypes.items()})


def prototypes_from_bytes(data: bytes) -> Prototypes:
    """Prototypes read back from :func:`prototypes_to_bytes`."""
    return dict(st_load(data))


def _checked_prototypes(adapter: LoraAdapter, prototypes: Mapping[str, torch.Tensor], k: int) -> Prototypes:
    """Stored prototypes, refused if they do not belong to this adapter (wrong paths or widths)."""
    if set(prototypes) != set(adapter.module_paths):
        missing = sorted(set(adapter.module_paths) - set(prototypes))
        extra = sorted(set(prototypes) - set(adapter.module_paths))
        raise IncompatibleAdaptersError(
            f"prototypes of adapter {k} do not match its modules (missing {missing[:3]}, extra {extra[:3]}); "
            "recompute them with arrow_prototypes(adapter)"
        )
    for path, v in prototypes.items():
        d_in = adapter.module_shape(path)[1]
        if tuple(v.shape) != (d_in,):
            raise IncompatibleAdaptersError(
                f"prototype of adapter {k} at '{path}' has shape {tuple(v.shape)}, expected ({d_in},); "
                "recompute them with arrow_prototypes(adapter)"
            )
    return {path: v.detach().to(torch.float32) for path, v in prototypes.items()}


def _prototypes_for(adapter: LoraAdapter, stored: Mapping[str, torch.Tensor] | None, k: int) -> Prototypes:
    """The stored prototypes of adapter ``k`` (checked), or computed now when none are stored."""
    return arrow_prototypes(adapter) if stored is None else _checked_prototypes(adapter, stored, k)


# ----------------------------------------------------------------------------- routed execution


@dataclass
class _LayerRouter:
    """One adapted layer's Arrow router: input tokens → weights over the adapters it holds.

    Attributes:
        prototypes: ``(n_held, d_in)``, in the layer's holding order.
        columns: the inventory index of each held adapter (for summaries over the whole library).
        record: keep the last weights (for :meth:`ArrowRouting.mean_weights`).
    """

    prototypes: torch.Tensor
    columns: list[int]
    top_k: int
    temperature: float
    record: bool = False
    last: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        protos = self.prototypes.to(device=x.device, dtype=x.dtype)
        weights = top_k_softmax((x @ protos.T).abs(), self.top_k, self.temperature).to(x.dtype)
        if self.record:
            self.last = weights.detach()
        return weights


@dataclass
class ArrowRouting:
    """What :func:`arrow_attached` yields: the per-layer routers, and their recorded weights.

    Attributes:
        routers: adapted module path → its router.
        n_adapters: the size of the inventory (columns of :meth:`mean_weights`).
    """

    routers: dict[str, _LayerRouter] = field(default_factory=dict)
    n_adapters: int = 0

    def mean_weights(self, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example average Arrow weights ``(batch, n_adapters)`` of the last forward pass.

        The mean runs over adapted layers and non-padding tokens (``attention_mask`` 1); an
        adapter absent from a layer counts 0 there. Rows sum to 1. Needs ``record=True``.

        Raises:
            InvalidParameterError: nothing recorded (no forward pass, or ``record=False``).
        """
        recorded = [(r.last, r.columns) for r in self.routers.values() if r.last is not None]
        if not recorded:
            raise InvalidParameterError("no Arrow weights recorded: attach with record=True and run a forward pass")
        first = recorded[0][0]
        batch = first.shape[0]
        mask = torch.ones(first.shape[:-1]) if attention_mask is None else attention_mask.to(torch.float32)
        mask = mask.to(first.device).reshape(batch, -1)
        total = torch.zeros(batch, self.n_adapters, device=first.device)
        for weights, columns in recorded:
            per_token = weights.float().reshape(batch, -1, weights.shape[-1])
            summed = (per_token * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1)
            total[:, columns] += summed
        return total / len(recorded)


def _check_inventory(
    model: nn.Module,
    adapters: Sequence[LoraAdapter],
    prototypes: Sequence[Mapping[str, torch.Tensor] | None] | None,
    top_k: int,
    temperature: float,
) -> None:
    """Refuse before touching the model: bad parameters, mismatched prototypes, adapters already held."""
    check_route_params(top_k, temperature, len(adapters))
    if prototypes is not None and len(prototypes) != len(adapters):
        raise InvalidParameterError(
            f"got {len(prototypes)} prototype sets for {len(adapters)} adapters; pass one per adapter (or None)"
        )
    if num_adapters(model) > 0:
        raise InvalidParameterError(
            "Arrow routes over the adapters it attaches itself; this model already holds "
            f"{num_adapters(model)} adapter(s): route on the bare base model"
        )


@contextlib.contextmanager
def arrow_attached(
    model: nn.Module,
    adapters: Sequence[LoraAdapter],
    prototypes: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
    *,
    top_k: int = 3,
    temperature: float = 1.0,
    record: bool = False,
) -> Iterator[ArrowRouting]:
    """Attach ``adapters`` to a bare base model and route every token of every forward pass by Arrow.

    Each adapted layer scores its own input against the prototypes of the adapters that adapt it
    (see the module docstring). The model leaves the block exactly as it entered, on error too.

    Args:
        model: the base model (e.g. ``BaseModel.model``) with no adapters attached.
        adapters: the inventory; order fixes the columns of summaries.
        prototypes: stored :func:`arrow_prototypes` of each adapter (computed here for the whole
            list when ``None``, or for one adapter when its entry is ``None``).
        top_k: adapters mixed per token and layer (clipped to those adapting the layer).
        temperature: softmax temperature over the top-k scores.
        record: keep each layer's last weights, for :meth:`ArrowRouting.mean_weights`.

    Raises:
        InvalidParameterError: empty inventory, ``top_k`` < 1, a non-positive temperature, a
            prototype list of the wrong length, or a model that already holds adapters.
        IncompatibleAdaptersError: an adapter that does not fit the model, or prototypes that do
            not belong to their adapter.
    """
    _check_inventory(model, adapters, prototypes, top_k, temperature)
    protos = [_prototypes_for(a, None if prototypes is None else prototypes[k], k) for k, a in enumerate(adapters)]
    routing = ArrowRouting(n_adapters=len(adapters))
    with restore_on_exit(model):
        try:
            attach_adapters(model, adapters)
            for path, layer in lora_layers(model):
                columns = list(layer.slots)  # a bare model: slot k is adapter k
                vectors = torch.stack([protos[k][path] for k in columns]).to(layer.base.weight.device)
                router = _LayerRouter(vectors, columns, top_k, temperature, record)
                routing.routers[path] = router
                layer.token_router = router
            yield routing
        finally:
            for _, layer in lora_layers(model):
                layer.token_router = None


@torch.no_grad()
def arrow_weights_summary(
    model: nn.Module | BaseModel,
    adapters: Sequence[LoraAdapter],
    queries: Mapping[str, torch.Tensor] | Sequence[str],
    prototypes: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
    *,
    top_k: int = 3,
    temperature: float = 1.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Which adapters Arrow uses for each query, and how much: ``(n_queries, n_adapters)``, rows sum to 1.

    Runs the model under :func:`arrow_attached` and averages each query's Arrow weights over
    adapted layers and its non-padding tokens. This is what a "which adapters, what weights" view
    shows; the computation itself routes per token and layer.

    Args:
        model: a :class:`BaseModel` (then ``queries`` may be texts, tokenized ``batch_size`` at a
            time) or a bare ``nn.Module`` called as ``model(**queries)``.
        adapters, prototypes, top_k, temperature: as for :func:`arrow_attached`.
        queries: texts, or one tokenized batch (``input_ids``, optional ``attention_mask``).
        batch_size: texts per forward pass.

    Raises:
        InvalidParameterError: texts with a bare ``nn.Module`` (no tokenizer), or as for
            :func:`arrow_attached`.
    """
    net, batches = _batches(model, queries, batch_size)
    with arrow_attached(net, adapters, prototypes, top_k=top_k, temperature=temperature, record=True) as routing:
        rows = []
        for batch in batches:
            _run(net, batch)
            rows.append(routing.mean_weights(batch.get("attention_mask")))
    return torch.cat(rows) if rows else torch.zeros(0, len(adapters))


def _batches(
    model: nn.Module | BaseModel, queries: Mapping[str, torch.Tensor] | Sequence[str], batch_size: int
) -> tuple[nn.Module, list[Mapping[str, torch.Tensor]]]:
    """The network to route in, and the tokenized batches to run through it."""
    if isinstance(queries, Mapping):
        return (model.model if isinstance(model, BaseModel) else model), [queries]
    if not isinstance(model, BaseModel):
        raise InvalidParameterError("routing texts needs a BaseModel (its tokenizer); pass a tokenized batch instead")
    if batch_size < 1:
        raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size}")
    texts = list(queries)
    return model.model, [model.tokenize(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]


def _run(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> Any:
    """One forward pass in eval mode (dropout off), restoring the caller's mode."""
    was_training = model.training
    model.eval()
    try:
        return model(**batch)
    finally:
        model.train(was_training)
