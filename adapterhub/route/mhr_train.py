"""Train MHR-z or MHR-μ for a new task from a few labelled shots; the result is a dense PEFT LoRA.

- **MHR-z** (``variant="z"``): the inventory stays frozen; only per-module, per-head routing
  logits ``(n_heads, S)`` train (init ``U(-1e-3, 1e-3)`` as PEFT's ``PolyRouter``, i.e. the
  uniform average). One relaxed-Bernoulli sample of every module's routing per step; sigmoid at
  export. Few parameters (``modules × heads × S``), so 16 shots cannot overfit much.
- **MHR-μ** (``variant="mu"``): the inventory averaged as Poly does at uniform routing (mean of
  the A's, mean of the B's, scales folded), then that one adapter's A and B fine-tuned.

Objective: the bed's similarity protocol, as ``adapterhub.models.train`` trains the library
adapters — texts and label descriptions embedded by the same adapted model, cosine similarities
divided by a temperature, cross-entropy against the true label. The loop is a few lines of its own
rather than ``models.train._train_loop`` because MHR-z must draw one routing sample per step, so
that a step's texts and label descriptions see the same mixture.

Determinism: ``seed`` fixes the routing init, the routing samples, the shot order and dropout
(inside a forked RNG state, so the caller's global RNG is left as it was). The base model is
changed during training and restored on exit, even after an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import BaseModel
from adapterhub.models.lora_layers import attach_adapters, extract_adapter, lora_layers, num_adapters, restore_on_exit
from adapterhub.models.train import DEFAULT_TEMPERATURE
from adapterhub.tasks import Task
from adapterhub.route.mhr import (
    Inventory,
    MhrLinear,
    check_heads,
    mixed_adapter,
    logistic_noise,
    stack_inventory,
)

__all__ = ["DEFAULT_LR", "VARIANTS", "MhrResult", "sample_shots", "shots_digest", "train_mhr"]

Variant = Literal["z", "mu"]
VARIANTS: tuple[str, ...] = ("z", "mu")
DEFAULT_LR: dict[str, float] = {"z": 0.1, "mu": 1e-3}
"""Routing logits move on a sigmoid scale and need a large step; factors use the library's LoRA rate."""


@dataclass
class MhrResult:
    """What ``train_mhr`` produced.

    Attributes:
        adapter: the new task's adapter, a dense PEFT LoRA of the inventory's rank (scale 1).
        routing: MHR-z: module path -> learned ``(n_heads, S)`` routing logits (the artifact to
            store); eval weights are ``routing_weights(logits)``. MHR-μ: empty (nothing routed).
        meta: lineage and hyperparameters (inventory names and digests, variant, shots digest, ...).
        losses: the training loss of every step.
        snapshots: step -> the adapter as it was after that step (for choosing ``steps`` on a
            validation split without retraining).
    """

    adapter: LoraAdapter
    routing: dict[str, torch.Tensor]
    meta: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    snapshots: dict[int, LoraAdapter] = field(default_factory=dict)


def sample_shots(task: Task, shots: int, seed: int) -> list[int]:
    """Indices into the TRAIN split: classes taken round-robin in a seeded order, each class's
    examples in a seeded order, so every class gets ``shots // C`` or one more (if it has them)."""
    g = torch.Generator().manual_seed(seed)
    labels = task.label_ids("train")
    pools = [[i for i in torch.randperm(len(labels), generator=g).tolist() if labels[i] == c] for c in range(task.num_labels)]
    class_order = torch.randperm(task.num_labels, generator=g).tolist()
    picked: list[int] = []
    while len(picked) < min(shots, len(labels)):
        for c in class_order:
            if pools[c] and len(picked) < shots:
                picked.append(pools[c].pop())
    return picked


def shots_digest(texts: Sequence[str], labels: Sequence[int]) -> str:
    """sha256 of the shots as canonical JSON ``[[text, label], ...]`` in the given order."""
    payload = json.dumps([[t, int(y)] for t, y in zip(texts, labels)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _check_args(
    texts: Sequence[str], labels: Sequence[int], label_descriptions: Sequence[str], *, variant: str, steps: int,
    lr: float, batch_size: int, temperature: float, snapshot_steps: Sequence[int],
) -> None:
    if variant not in VARIANTS:
        raise InvalidParameterError(f"unknown MHR variant '{variant}'; choose 'z' (routing only) or 'mu' (average + fine-tune)")
    if len(texts) < 1:
        raise InvalidParameterError("MHR needs at least 1 labelled shot")
    if len(texts) != len(labels):
        raise InvalidParameterError(f"{len(texts)} shot texts but {len(labels)} labels")
    if len(label_descriptions) < 2:
        raise InvalidParameterError("a task needs at least 2 label descriptions")
    bad = [y for y in labels if not 0 <= int(y) < len(label_descriptions)]
    if bad:
        raise InvalidParameterError(f"label {bad[0]} is not an index into {len(label_descriptions)} label descriptions")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "steps" else 1):
            raise InvalidParameterError(f"{name} must be an integer >= {0 if name == 'steps' else 1}, got {value!r}")
    for name, value in (("lr", lr), ("temperature", temperature)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InvalidParameterError(f"{name} must be a positive number, got {value!r}")
    if any(not 1 <= s <= steps for s in snapshot_steps):
        raise InvalidParameterError(f"snapshot_steps must lie in 1..{steps}, got {sorted(snapshot_steps)}")


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Freeze every parameter for the block; restore ``requires_grad`` and train/eval mode on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _similarity_loop(
    base: BaseModel, texts: Sequence[str], labels: torch.Tensor, descriptions: Sequence[str], *,
    steps: int, batch_size: int, optimizer: torch.optim.Optimizer | None, generator: torch.Generator,
    temperature: float, before_step: Callable[[], None], snapshot: Callable[[int], None], snapshot_steps: set[int],
) -> list[float]:
    """``steps`` AdamW steps of the similarity objective over shuffled batches of the shots."""
    desc = base.tokenize(descriptions)
    order: list[int] = []
    losses: list[float] = []
    base.model.train()
    for step in range(1, steps + 1):
        if len(order) < min(batch_size, len(texts)):
            order += torch.randperm(len(texts), generator=generator).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        before_step()
        emb = base.embed(base.tokenize([texts[i] for i in idx]))
        loss = F.cross_entropy(emb @ base.embed(desc).T / temperature, labels[idx])
        assert optimizer is not None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step in snapshot_steps:
            snapshot(step)
    return losses


def _train_z(
    base: BaseModel, inv: Inventory, n_heads: int, generator: torch.Generator, loop: Callable[..., list[float]],
    lr: float, snapshots: dict[int, LoraAdapter],
) -> tuple[LoraAdapter, dict[str, torch.Tensor], list[float]]:
    wrappers: dict[str, MhrLinear] = {}
    for path in inv.paths:
        try:
            layer = base.model.get_submodule(path)
        except AttributeError as e:
            raise IncompatibleAdaptersError(f"the inventory adapts '{path}', which this base model does not have") from e
        if type(layer) is not nn.Linear:
            raise IncompatibleAdaptersError(
                f"'{path}' is a {type(layer).__name__}, not a plain nn.Linear; MHR trains on a base model without adapters"
            )
        init = torch.empty(n_heads, inv.n_skills).uniform_(-1e-3, 1e-3, generator=generator)
        wrappers[path] = MhrLinear(layer, inv.A[path], inv.B[path], init)

    def logits() -> dict[str, torch.Tensor]:
        return {p: w.logits.detach().clone() for p, w in wrappers.items()}

    def resample() -> None:
        for w in wrappers.values():
            w.noise = logistic_noise(w.logits.shape, generator)

    def snap(step: int) -> None:
        snapshots[step] = mixed_adapter(inv, logits=logits())

    try:
        for path, w in wrappers.items():
            _set_module(base.model, path, w)
        optimizer = torch.optim.AdamW([w.logits for w in wrappers.values()], lr=lr, weight_decay=0.0)
        losses = loop(optimizer=optimizer, before_step=resample, snapshot=snap)
    finally:
        for path, w in wrappers.items():
            w.noise = None
            _set_module(base.model, path, w.base)
    table = logits()
    return mixed_adapter(inv, logits=table), table, losses


def _train_mu(
    base: BaseModel, inv: Inventory, loop: Callable[..., list[float]], lr: float, snapshots: dict[int, LoraAdapter]
) -> LoraAdapter:
    if num_adapters(base.model):
        raise InvalidParameterError("MHR trains on a base model without adapters attached; detach them first")
    target = inv.target_modules if isinstance(inv.target_modules, list) else None
    with restore_on_exit(base.model):
        (slot,) = attach_adapters(base.model, [mixed_adapter(inv)])
        params = []
        for _, layer in lora_layers(base.model):
            j = layer.slots.index(slot)
            params += [layer.lora_A[j].requires_grad_(True), layer.lora_B[j].requires_grad_(True)]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

        def snap(step: int) -> None:
            snapshots[step] = extract_adapter(base.model, base_model=inv.base_model, slot=slot, target_modules=target)

        loop(optimizer=optimizer, before_step=lambda: None, snapshot=snap)
        return extract_adapter(base.model, base_model=inv.base_model, slot=slot, target_modules=target)


def train_mhr(
    base: BaseModel,
    inventory: Sequence[LoraAdapter],
    texts: Sequence[str],
    labels: Sequence[int],
    label_descriptions: Sequence[str],
    *,
    variant: Variant = "z",
    n_heads: int = 4,
    steps: int = 100,
    lr: float | None = None,
    batch_size: int = 16,
    seed: int = 0,
    temperature: float = DEFAULT_TEMPERATURE,
    inventory_names: Sequence[str] | None = None,
    snapshot_steps: Sequence[int] = (),
) -> MhrResult:
    """Fit MHR-z or MHR-μ to a few labelled shots of a new task.

    Args:
        base: the base model the inventory was trained on (changed while training, restored after).
        inventory: the frozen skill adapters (one base model, one module set and layer shapes).
        texts, labels: the shots; ``labels[i]`` indexes ``label_descriptions``.
        label_descriptions: one description per class (the similarity protocol's targets).
        variant: ``"z"`` (routing logits only) or ``"mu"`` (average, then fine-tune A and B).
        n_heads: heads per module (PEFT ``poly``'s ``n_splits``); must divide every d_in and d_out.
        steps: optimizer steps (0: the initial uniform average).
        lr: AdamW learning rate; default ``DEFAULT_LR[variant]``.
        batch_size: shots per step (all 16 of a 16-shot task by default).
        seed: fixes routing init and samples, shot order and dropout.
        temperature: similarity logits are ``cos / temperature`` (the library's 0.05).
        inventory_names: recorded in the lineage (default ``inventory[i]``).
        snapshot_steps: steps after which to also keep the adapter (``MhrResult.snapshots``).

    Returns:
        ``MhrResult``: dense LoRA adapter, routing table (z only), lineage metadata, losses, snapshots.

    Raises:
        InvalidParameterError: empty inventory, no shots, unknown variant, bad sizes or rates.
        IncompatibleAdaptersError: adapters on different bases or shapes, or not fitting ``base``.
    """
    lr = DEFAULT_LR.get(variant, 1.0) if lr is None else lr
    _check_args(texts, labels, label_descriptions, variant=variant, steps=steps, lr=lr, batch_size=batch_size,
                temperature=temperature, snapshot_steps=snapshot_steps)
    inv = stack_inventory(inventory)
    check_heads(inv, n_heads)
    if inv.base_model and inv.base_model != base.base_model_id:
        raise IncompatibleAdaptersError(
            f"the inventory was trained on '{inv.base_model}' but the base model is '{base.base_model_id}'"
        )
    names = list(inventory_names) if inventory_names is not None else [f"inventory[{i}]" for i in range(len(inventory))]
    if len(names) != len(inventory):
        raise InvalidParameterError(f"{len(names)} inventory names for {len(inventory)} adapters")
    label_tensor = torch.tensor([int(y) for y in labels])
    snapshots: dict[int, LoraAdapter] = {}
    routing: dict[str, torch.Tensor] = {}
    losses: list[float] = []
    started = time.perf_counter()
    with torch.random.fork_rng(), _frozen(base.model):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)

        def loop(**kw: Any) -> list[float]:
            out = _similarity_loop(
                base, list(texts), label_tensor, list(label_descriptions), steps=steps, batch_size=batch_size,
                generator=generator, temperature=temperature, snapshot_steps=set(snapshot_steps), **kw,
            )
            losses.extend(out)
            return out

        if variant == "z":
            adapter, routing, _ = _train_z(base, inv, n_heads, generator, loop, lr, snapshots)
        else:
            adapter = _train_mu(base, inv, loop, lr, snapshots)
    meta = {
        "engine": "mhr", "variant": variant, "n_heads": n_heads, "base_model": inv.base_model,
        "inventory": [{"name": n, "digest": a.digest} for n, a in zip(names, inventory)],
        "shots": len(texts), "shots_digest": shots_digest(texts, labels), "n_classes": len(label_descriptions),
        "steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed, "temperature": temperature,
        "optimizer": "AdamW", "objective": "similarity", "final_loss": losses[-1] if losses else None,
        "seconds": round(time.perf_counter() - started, 2),
        "routing": (
            "per module (n_heads, n_inventory) logits; eval weights sigmoid(logits) / row sum; head q = q-th block "
            "of A's input columns and of B's output rows (PEFT poly n_splits)" if variant == "z" else None
        ),
    }
    return MhrResult(adapter=adapter, routing=routing, meta=meta, losses=losses, snapshots=snapshots)
