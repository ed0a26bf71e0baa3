"""adapterhub's own LoRA injection: one or more adapters on a base model, mixed by weights.

Each adapted ``nn.Linear`` becomes a :class:`LoraLinear` that holds any number of adapters and
computes, for an input ``x`` of example ``i``::

    out = base(x) + Σⱼ wⱼ(i) · sⱼ · Bⱼ Aⱼ x

where ``wⱼ`` is either one fixed weight per adapter (a static mixture; ``1`` for a single adapter)
or a row of a ``(batch, n_adapters)`` matrix (per-example weights, e.g. from a router). Adapters
are numbered model-wide ("slots") in the order they were added, so an adapter that adapts only some
layers still reads its own column of the weights.

The math is PEFT's (``lora_B(lora_A(x)) * scaling``), so an adapter trained here and saved with
:func:`extract_adapter` loads in ``peft.PeftModel.from_pretrained`` on the same ``AutoModel`` and
gives the same outputs; the tests check this to 1e-5.

Which layers are adapted follows PEFT's ``target_modules``: a list entry selects a module whose
path equals it or ends with ``"." + entry``; a string is a regex that must match the whole path.
``exclude_modules`` removes paths the same way. Only ``nn.Linear`` layers are adapted.

Mutation: :func:`inject_lora`, :func:`attach_adapters`, :func:`set_mixture_weights` and
:func:`remove_lora` change the model passed in, in place, as PEFT's ``inject_adapter_in_model``
does (they say so). :func:`lora_attached` undoes its own changes on exit, even after an error.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError, UnsupportedAdapterError
from adapterhub.lora import LoraAdapter, LoraModule, lora_scale

DEFAULT_TARGET_MODULES: tuple[str, ...] = ("query", "key", "value", "dense")
"""Every linear layer of a BERT block: attention q/k/v, attention output, MLP in and out."""

DEFAULT_EXCLUDE_MODULES: tuple[str, ...] = ("pooler.dense",)
"""BERT's pooler feeds only the [CLS] pooler output, which mean pooling never reads: adapting it
would add parameters that get no gradient."""


class LoraLinear(nn.Module):
    """An ``nn.Linear`` plus any number of LoRA adapters, mixed by weights.

    ``forward(x) = base(x) + Σⱼ wⱼ · sⱼ · (x Aⱼᵀ) Bⱼᵀ`` with ``Aⱼ (rⱼ, d_in)``, ``Bⱼ (d_out, rⱼ)``,
    ``sⱼ`` the adapter's scale and ``wⱼ`` its mixture weight (see :func:`set_mixture_weights`).
    With no adapters it is exactly ``base``.

    Args:
        base: the wrapped layer; kept as ``self.base`` and never modified.

    Attributes:
        lora_A, lora_B: the factors of each held adapter (trainable ones have ``requires_grad``).
        scales: ``sⱼ`` for each held adapter.
        slots: the model-wide adapter number of each held adapter (its column in the weights).
        mixture_weights: ``None`` (every adapter at weight 1), a ``(n_slots,)`` vector or a
            ``(batch, n_slots)`` matrix; shared by all layers of a model.
        token_router: ``None``, or a function of this layer's input ``x (..., d_in)`` returning
            per-token weights ``(..., n_held)``, one per held adapter in holding order; when set it
            replaces ``mixture_weights`` (token-level routers such as Arrow in ``adapterhub.route``
            set it, since the weights depend on each layer's own input).
    """

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise UnsupportedAdapterError(f"LoRA layers wrap nn.Linear only, got {type(base).__name__}")
        self.base = base
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        self.scales: list[float] = []
        self.slots: list[int] = []
        self.mixture_weights: torch.Tensor | None = None
        self.token_router: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def add_adapter(self, A: torch.Tensor, B: torch.Tensor, scale: float, *, slot: int, trainable: bool) -> None:
        """Hold one more adapter (factors are copied to float32 parameters)."""
        if A.shape[1] != self.in_features or B.shape[0] != self.out_features or A.shape[0] != B.shape[1]:
            raise IncompatibleAdaptersError(
                f"LoRA factors A{tuple(A.shape)} B{tuple(B.shape)} do not fit a linear layer "
                f"{self.in_features} -> {self.out_features}; was the adapter trained on another base model?"
            )
        device = self.base.weight.device
        self.lora_A.append(nn.Parameter(A.detach().to(device, torch.float32).clone(), requires_grad=trainable))
        self.lora_B.append(nn.Parameter(B.detach().to(device, torch.float32).clone(), requires_grad=trainable))
        self.scales.append(float(scale))
        self.slots.append(int(slot))

    def truncate(self, n: int) -> None:
        """Drop every adapter after the first ``n`` (used to undo an attach)."""
        self.lora_A = nn.ParameterList(list(self.lora_A)[:n])
        self.lora_B = nn.ParameterList(list(self.lora_B)[:n])
        del self.scales[n:], self.slots[n:]

    def _rank_weights(self, batch: int) -> torch.Tensor:
        """``wⱼ · sⱼ`` repeated over each adapter's ranks: ``(R,)`` or ``(batch, R)``."""
        device = self.base.weight.device
        ranks = torch.tensor([a.shape[0] for a in self.lora_A], device=device)
        scales = torch.tensor(self.scales, dtype=torch.float32, device=device)
        w = self.mixture_weights
        if w is None:
            per_adapter = scales
        else:
            w = w.to(device=device, dtype=torch.float32)
            if w.shape[-1] <= max(self.slots):
                raise InvalidParameterError(
                    f"mixture weights have {w.shape[-1]} columns but adapter slot {max(self.slots)} is attached; "
                    "call set_mixture_weights with one weight per attached adapter"
                )
            if w.ndim == 2 and w.shape[0] != batch:
                raise InvalidParameterError(
                    f"per-example mixture weights have {w.shape[0]} rows but the batch has {batch} examples"
                )
            per_adapter = w[..., self.slots] * scales
        return torch.repeat_interleave(per_adapter, ranks, dim=-1)

    def _token_rank_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``wⱼ(token) · sⱼ`` repeated over ranks, ``(..., R)``, from :attr:`token_router`."""
        assert self.token_router is not None
        ranks = torch.tensor([a.shape[0] for a in self.lora_A], device=x.device)
        scales = torch.tensor(self.scales, dtype=torch.float32, device=x.device)
        return torch.repeat_interleave(self.token_router(x) * scales, ranks, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if len(self.lora_A) == 0:
            return out
        A = torch.cat(list(self.lora_A), dim=0)  # (R, d_in)
        B = torch.cat(list(self.lora_B), dim=1)  # (d_out, R)
        x = x.to(A.dtype)
        h = F.linear(x, A)  # (..., R)
        if self.token_router is not None:
            w = self._token_rank_weights(x)  # same shape as h
        else:
            w = self._rank_weights(x.shape[0])
            if w.ndim == 2:  # per example: broadcast over the sequence dimensions
                w = w.view(w.shape[0], *([1] * (h.ndim - 2)), w.shape[1])
        return out + F.linear(h * w, B).to(out.dtype)

    def extra_repr(self) -> str:
        ranks = [a.shape[0] for a in self.lora_A]
        return f"in={self.in_features}, out={self.out_features}, slots={self.slots}, ranks={ranks}"


# ----------------------------------------------------------------------------- finding layers


def matches_target(path: str, target_modules: str | Sequence[str]) -> bool:
    """PEFT's ``target_modules`` rule: regex full match for a string, else equal-or-dotted-suffix."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, path) is not None
    return any(path == t or path.endswith("." + t) for t in target_modules)


def find_target_linears(
    model: nn.Module,
    target_modules: str | Sequence[str] = DEFAULT_TARGET_MODULES,
    exclude_modules: str | Sequence[str] | None = DEFAULT_EXCLUDE_MODULES,
) -> list[str]:
    """Paths of the linear layers (plain or already wrapped) that these options select, in model order."""
    paths = []
    for path, module in model.named_modules():
        if not path or isinstance(module, nn.Linear) and _is_wrapped_base(model, path):
            continue
        if not isinstance(module, (nn.Linear, LoraLinear)):
            continue
        if not matches_target(path, target_modules):
            continue
        if exclude_modules and matches_target(path, exclude_modules):
            continue
        paths.append(path)
    return paths


def _is_wrapped_base(model: nn.Module, path: str) -> bool:
    """True for ``<x>.base`` inside a LoraLinear (the wrapped layer is not a target of its own)."""
    parent, _, leaf = path.rpartition(".")
    return leaf == "base" and isinstance(model.get_submodule(parent) if parent else model, LoraLinear)


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    """Every ``LoraLinear`` in the model with its path (the path of the layer it replaced)."""
    for path, module in model.named_modules():
        if isinstance(module, LoraLinear):
            yield path, module


def num_adapters(model: nn.Module) -> int:
    """How many adapter slots are attached (the width mixture weights must have)."""
    return max((max(m.slots) + 1 for _, m in lora_layers(model) if m.slots), default=0)


def _wrap(model: nn.Module, path: str) -> LoraLinear:
    module = model.get_submodule(path)
    if isinstance(module, LoraLinear):
        return module
    if not isinstance(module, nn.Linear):
        raise UnsupportedAdapterError(f"module '{path}' is a {type(module).__name__}; only nn.Linear can take LoRA")
    wrapped = LoraLinear(module)
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, wrapped)
    return wrapped


# ----------------------------------------------------------------------------- adding adapters


def inject_lora(
    model: nn.Module,
    *,
    rank: int = 8,
    alpha: float = 16,
    target_modules: str | Sequence[str] = DEFAULT_TARGET_MODULES,
    exclude_modules: str | Sequence[str] | None = DEFAULT_EXCLUDE_MODULES,
    use_rslora: bool = False,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Add one new trainable LoRA adapter to every selected linear layer. Mutates ``model``.

    Initialised as PEFT does: ``A`` Kaiming-uniform (``a=√5``), ``B`` zeros, so the model's
    output is unchanged until training moves ``B``. Only the new factors require gradients; the
    caller decides what else to freeze (``adapterhub.models.train`` freezes everything else).

    Args:
        model: the base model (e.g. ``BaseModel.model``), changed in place.
        rank: LoRA rank ``r``.
        alpha: LoRA alpha; the scale is ``alpha / r`` (``alpha / √r`` with ``use_rslora``).
        target_modules: PEFT-style selection (suffix list or full-match regex).
        exclude_modules: PEFT-style exclusion, applied after selection.
        use_rslora: rank-stabilised scaling.
        generator: RNG for ``A``'s init (default: torch's global RNG).

    Returns:
        The adapted module paths, in model order. The new adapter is slot ``num_adapters(model) - 1``.

    Raises:
        InvalidParameterError: ``rank``/``alpha`` not positive, or nothing selected.
    """
    if rank <= 0 or alpha <= 0:
        raise InvalidParameterError(f"rank and alpha must be positive, got rank={rank}, alpha={alpha}")
    paths = find_target_linears(model, target_modules, exclude_modules)
    if not paths:
        raise InvalidParameterError(
            f"target_modules={target_modules!r} selects no linear layer of this model; "
            "pass names of nn.Linear modules, e.g. ('query', 'value')"
        )
    slot = num_adapters(model)
    scale = lora_scale(rank, alpha, use_rslora=use_rslora)
    for path in paths:
        layer = _wrap(model, path)
        A = torch.empty(rank, layer.in_features)
        # PEFT: nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5)), i.e. U(-b, b) with b = 1/sqrt(d_in).
        bound = 1.0 / math.sqrt(layer.in_features)
        A.uniform_(-bound, bound, generator=generator)
        B = torch.zeros(layer.out_features, rank)
        layer.add_adapter(A, B, scale, slot=slot, trainable=True)
    return paths


def attach_adapters(model: nn.Module, adapters: Sequence[LoraAdapter]) -> list[int]:
    """Attach saved adapters, frozen, each as a new slot. Mutates ``model``.

    Module paths of each adapter must name ``nn.Linear`` layers of ``model`` (paths relative to the
    base model, e.g. ``encoder.layer.0.attention.self.query``) with matching shapes. Nothing is
    changed unless every adapter fits.

    Returns:
        The slot number of each adapter, in order.

    Raises:
        IncompatibleAdaptersError: a module path is missing from the model or its shape differs.
        UnsupportedAdapterError: ``fan_in_fan_out`` adapters (Conv1D layers) are not injectable here.
    """
    plans: list[list[tuple[str, LoraModule]]] = []
    for k, adapter in enumerate(adapters):
        if adapter.config.fan_in_fan_out:
            raise UnsupportedAdapterError(
                f"adapter {k} has fan_in_fan_out=true (Conv1D base layers); adapterhub injects into nn.Linear only"
            )
        plan = []
        for path in adapter.module_paths:
            try:
                layer = model.get_submodule(path)
            except AttributeError as e:
                raise IncompatibleAdaptersError(
                    f"adapter {k} ({adapter.base_model}) adapts '{path}', which this model does not have; "
                    "use an adapter trained for this base model"
                ) from e
            base = layer.base if isinstance(layer, LoraLinear) else layer
            if not isinstance(base, nn.Linear):
                raise IncompatibleAdaptersError(f"adapter {k} adapts '{path}', a {type(base).__name__}, not nn.Linear")
            d_out, d_in, _ = adapter.module_shape(path)
            if (d_out, d_in) != (base.out_features, base.in_features):
                raise IncompatibleAdaptersError(
                    f"adapter {k} ({adapter.base_model}) has '{path}' as {d_in} -> {d_out} but the model's layer is "
                    f"{base.in_features} -> {base.out_features}; use an adapter trained for this base model"
                )
            plan.append((path, adapter.module(path)))
        plans.append(plan)
    first = num_adapters(model)
    for k, plan in enumerate(plans):
        for path, module in plan:
            B, A = module.folded()
            _wrap(model, path).add_adapter(A, B, 1.0, slot=first + k, trainable=False)
    return list(range(first, first + len(plans)))


def set_mixture_weights(model: nn.Module, weights: torch.Tensor | Sequence[float] | None) -> None:
    """Set how much each attached adapter contributes. Mutates ``model``.

    Args:
        model: a model with adapters attached.
        weights: ``None`` (every adapter at weight 1), ``(n_adapters,)`` fixed weights, or
            ``(batch, n_adapters)`` per-example weights for the next forward passes (the batch
            size of each forward must then equal the number of rows).

    Raises:
        InvalidParameterError: wrong width, rank or non-finite values.
    """
    n = num_adapters(model)
    tensor = None
    if weights is not None:
        tensor = torch.as_tensor(weights, dtype=torch.float32).detach().clone()
        if tensor.ndim not in (1, 2) or tensor.shape[-1] != n:
            raise InvalidParameterError(
                f"mixture weights must have shape ({n},) or (batch, {n}) for {n} attached adapters, "
                f"got {tuple(tensor.shape)}"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise InvalidParameterError("mixture weights contain NaN or Inf")
    for _, layer in lora_layers(model):
        layer.mixture_weights = tensor


def remove_lora(model: nn.Module) -> nn.Module:
    """Put every wrapped ``nn.Linear`` back, dropping all adapters. Mutates and returns ``model``."""
    for path, layer in list(lora_layers(model)):
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, layer.base)
    return model


@dataclass
class _Undo:
    created: list[str]
    extended: dict[str, int]
    weights: dict[str, torch.Tensor | None]


def _snapshot(model: nn.Module) -> _Undo:
    layers = dict(lora_layers(model))
    return _Undo(
        created=[], extended={p: len(m.lora_A) for p, m in layers.items()},
        weights={p: m.mixture_weights for p, m in layers.items()},
    )


def _restore(model: nn.Module, undo: _Undo) -> None:
    for path, layer in list(lora_layers(model)):
        if path in undo.extended:
            layer.truncate(undo.extended[path])
            layer.mixture_weights = undo.weights[path]
        else:
            parent, _, leaf = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, layer.base)


@contextlib.contextmanager
def restore_on_exit(model: nn.Module) -> Iterator[None]:
    """Undo every LoRA change made to ``model`` inside the block (on error too).

    Layers wrapped inside the block are unwrapped; layers that held adapters before keep exactly
    those (later ones dropped) and get their old mixture weights back.
    """
    undo = _snapshot(model)
    try:
        yield
    finally:
        _restore(model, undo)


@contextlib.contextmanager
def lora_attached(
    model: nn.Module,
    adapters: Sequence[LoraAdapter],
    weights: torch.Tensor | Sequence[float] | None = None,
) -> Iterator[list[int]]:
    """Attach adapters (and weights) for the duration of a ``with`` block, then restore the model.

    The model leaves the block exactly as it entered: layers this call wrapped are unwrapped, layers
    that already held adapters drop only the ones added here and get their old weights back.

    Example:
        >>> with lora_attached(base.model, [a, b], weights=[0.5, 0.5]):
        ...     emb = base.encode(texts)
    """
    with restore_on_exit(model):
        slots = attach_adapters(model, adapters)
        if weights is not None:
            full = torch.as_tensor(weights, dtype=torch.float32)
            if full.shape[-1] != len(slots):
                raise InvalidParameterError(
                    f"got {full.shape[-1]} mixture weights for {len(slots)} adapters; pass one weight per adapter"
                )
            if slots and slots[0] > 0:  # earlier adapters keep weight 1 alongside the new ones
                lead = torch.ones(*full.shape[:-1], slots[0])
                full = torch.cat([lead, full], dim=-1)
            set_mixture_weights(model, full)
        yield slots


# ----------------------------------------------------------------------------- extracting


def extract_adapter(
    model: nn.Module,
    *,
    base_model: str | None,
    slot: int | None = None,
    target_modules: list[str] | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    config_overrides: Mapping[str, object] | None = None,
) -> LoraAdapter:
    """The adapter in one slot as an in-memory ``LoraAdapter`` (does not change ``model``).

    Module paths are the wrapped layers' paths relative to ``model``, so pass the same object PEFT
    will wrap (``BaseModel.model``, the ``AutoModel``). If ``target_modules`` would also select
    layers this adapter does not adapt (BERT's ``pooler.dense`` for ``"dense"``), they are listed in
    the config's ``exclude_modules`` so PEFT builds exactly the same set of LoRA layers.

    Args:
        model: a model holding the adapter.
        base_model: recorded as ``base_model_name_or_path`` (``BaseModel.base_model_id``).
        slot: which adapter; default the most recently added one.
        target_modules: defaults to the last path component of every adapted layer.
        extra_tensors: passthrough tensors to carry, e.g. ``{"heads.<task>.weight": ...}``.
        config_overrides: more config keys, e.g. ``{"task_type": "CAUSAL_LM"}``.

    Raises:
        InvalidParameterError: the model has no adapter in that slot.
    """
    n = num_adapters(model)
    slot = n - 1 if slot is None else slot
    modules: dict[str, LoraModule] = {}
    for path, layer in lora_layers(model):
        if slot in layer.slots:
            j = layer.slots.index(slot)
            modules[path] = LoraModule(
                A=layer.lora_A[j].detach().clone(), B=layer.lora_B[j].detach().clone(), scale=layer.scales[j]
            )
    if not modules:
        raise InvalidParameterError(f"the model holds no adapter in slot {slot} ({n} attached)")
    targets = target_modules or sorted({p.rsplit(".", 1)[-1] for p in modules})
    also_selected = [p for p in find_target_linears(model, targets, None) if p not in modules]
    overrides = {**(config_overrides or {}), **({"exclude_modules": also_selected} if also_selected else {})}
    return LoraAdapter.from_modules(
        modules, base_model=base_model, target_modules=targets, extra_tensors=extra_tensors,
        config_overrides=overrides or None,
    )
