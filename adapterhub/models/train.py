"""Train one LoRA adapter for one task on CPU, deterministically, and return it as a ``LoraAdapter``.

Recipe (read ``train_adapter`` top to bottom): inject a fresh LoRA, freeze everything else,
``_setup_optimizer``, ``_train_loop``, ``extract_adapter``; the model is restored on the way out
(even on error), then the caller's ``validate`` callback (if any) scores the adapter. Scoring
lives in ``adapterhub.eval``, a layer above this one, so it is passed in, e.g.
``validate=adapterhub.eval.evaluate.split_scorer(task)``.

Protocols:
    ``"similarity"`` (primary): no head. Each step embeds the batch's texts and the task's label
    descriptions with the adapted model, takes cosine similarities divided by a temperature (0.05,
    as in contrastive sentence-embedding training: similarities live in [-1, 1], so logits need a
    scale of ~20 for softmax to be confident) and minimises cross-entropy against the true label.
    The adapter alone then carries the task.
    ``"head"`` (secondary): a linear head on the pooled embedding, trained jointly with the LoRA;
    the head travels in the adapter as ``heads.<task>.weight``/``bias`` passthrough tensors.

Determinism: ``seed`` fixes the A init, the data order and dropout (``torch.manual_seed`` inside a
forked RNG state, so the caller's global RNG is left as it was). Thread count is the caller's
choice (``torch.set_num_threads``); results are bit-identical for a fixed thread count.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from adapterhub.errors import InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.lora.keys import head_keys
from adapterhub.models.base import BaseModel, load_base_model
from adapterhub.models.lora_layers import (
    DEFAULT_EXCLUDE_MODULES,
    DEFAULT_TARGET_MODULES,
    extract_adapter,
    inject_lora,
    lora_layers,
    restore_on_exit,
)
from adapterhub.tasks import Task, resolve_task

DEFAULT_TEMPERATURE = 0.05

ValidateFn = Callable[[LoraAdapter, BaseModel], Mapping[str, float]]
"""``(trained adapter, restored base model) -> metrics`` merged into ``TrainResult.metrics``."""


@dataclass
class TrainResult:
    """What ``train_adapter`` produced.

    Attributes:
        adapter: the trained adapter, in memory (``adapter.save(folder)`` writes a PEFT folder).
        metrics: ``steps``, ``seconds``, ``final_loss``, plus whatever ``validate`` returned
            (``split_scorer`` gives ``validation_accuracy``/``validation_macro_f1``).
        losses: the training loss of every step.
        params: the hyperparameters used (for the adapter's metadata).
    """

    adapter: LoraAdapter
    metrics: dict[str, float]
    losses: list[float]
    params: dict = field(default_factory=dict)


def _batches(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled index batches for every epoch (the last, short batch of an epoch is kept)."""
    out = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).tolist()
        out += [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    return out


def _freeze_all_but_lora(model: nn.Module) -> None:
    """Freeze every parameter except trainable LoRA factors (no gradients for base weights)."""
    trainable = {id(p) for _, layer in lora_layers(model) for p in [*layer.lora_A, *layer.lora_B] if p.requires_grad}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


@contextlib.contextmanager
def _preserved_training_state(model: nn.Module) -> Iterator[None]:
    """Restore train/eval mode and every parameter's ``requires_grad`` on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _setup_optimizer(
    model: nn.Module, head: nn.Module | None, *, lr: float, head_lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    if head is not None:
        groups.append({"params": list(head.parameters()), "lr": head_lr})
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def _train_loop(
    base: BaseModel,
    task: Task,
    texts: list[str],
    labels: torch.Tensor,
    batches: list[list[int]],
    optimizer: torch.optim.Optimizer,
    *,
    head: nn.Module | None,
    temperature: float,
) -> list[float]:
    """One optimizer step per batch; returns the loss of every step."""
    descriptions = base.tokenize(task.label_descriptions)
    losses: list[float] = []
    base.model.train()
    for idx in batches:
        emb = base.embed(base.tokenize([texts[i] for i in idx]))
        if head is None:  # the label descriptions go through the same adapted model, every step
            logits = emb @ base.embed(descriptions).T / temperature
        else:
            logits = head(emb)
        loss = F.cross_entropy(logits, labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_adapter(
    model_dir_or_model: str | Path | BaseModel | None,
    task: str | Task,
    *,
    rank: int = 8,
    alpha: float = 16,
    target_modules: Sequence[str] | str = DEFAULT_TARGET_MODULES,
    exclude_modules: Sequence[str] | str | None = DEFAULT_EXCLUDE_MODULES,
    epochs: int = 3,
    lr: float = 1e-3,
    head_lr: float = 1e-2,
    weight_decay: float = 0.0,
    batch_size: int = 32,
    seed: int = 0,
    protocol: Literal["similarity", "head"] = "similarity",
    temperature: float = DEFAULT_TEMPERATURE,
    max_steps: int | None = None,
    validate: ValidateFn | None = None,
    soft_targets: torch.Tensor | None = None,
    init: LoraAdapter | None = None,
) -> TrainResult:
    """Train a LoRA adapter for one task with AdamW on CPU.

    Args:
        model_dir_or_model: a ``BaseModel`` (changed during training and restored after, even on
            error), a local checkpoint folder, or ``None`` for the packaged MiniLM (loaded fresh).
        task: a ``Task`` or a shipped task name.
        rank, alpha: LoRA rank and alpha (scale ``alpha / rank``).
        target_modules, exclude_modules: PEFT-style layer selection.
        epochs: passes over the train split.
        lr: AdamW learning rate of the LoRA factors; ``head_lr`` that of the head (head protocol).
        weight_decay: AdamW weight decay.
        batch_size: examples per step.
        seed: fixes init, data order and dropout.
        protocol: ``"similarity"`` (no head) or ``"head"`` (joint linear head).
        temperature: similarity logits are ``cos / temperature``.
        max_steps: stop after this many steps (default: all epochs).
        validate: scores the trained adapter on the restored model after training (``None``:
            no scoring); e.g. ``adapterhub.eval.evaluate.split_scorer(task, protocol=protocol)``.
        soft_targets: ``(n_train, n_labels)`` class probabilities to fit instead of the hard
            labels (distillation: cross-entropy to a teacher's distribution is the KL divergence
            to it plus a constant, so the gradients are those of the KL).
        init: start from this adapter's factors instead of PEFT's init (continued training; its
            rank must equal ``rank`` on every module it has, its scale is folded into ``B``).

    Returns:
        ``TrainResult`` with the adapter (base model id recorded, head in passthrough tensors for
        the head protocol), metrics and per-step losses.

    Raises:
        InvalidParameterError: bad protocol, sizes or an empty train split.
    """
    if protocol not in ("similarity", "head"):
        raise InvalidParameterError(f"unknown protocol '{protocol}'; choose 'similarity' or 'head'")
    if epochs <= 0 or batch_size <= 0 or temperature <= 0 or (max_steps is not None and max_steps <= 0):
        raise InvalidParameterError("epochs, batch_size, temperature and max_steps must be positive")
    task = resolve_task(task)
    texts, labels = task.texts("train"), torch.tensor(task.label_ids("train"))
    if not texts:
        raise InvalidParameterError(f"task '{task.name}' has no train examples")
    if soft_targets is not None:
        if tuple(soft_targets.shape) != (len(texts), task.num_labels):
            raise InvalidParameterError(
                f"soft_targets must be ({len(texts)}, {task.num_labels}), got {tuple(soft_targets.shape)}"
            )
        labels = soft_targets.float()
    base = model_dir_or_model if isinstance(model_dir_or_model, BaseModel) else load_base_model(model_dir_or_model)
    params = {
        "task": task.name, "protocol": protocol, "rank": rank, "alpha": alpha,
        "target_modules": list(target_modules) if not isinstance(target_modules, str) else target_modules,
        "exclude_modules": list(exclude_modules or []) if not isinstance(exclude_modules, str) else exclude_modules,
        "epochs": epochs, "lr": lr, "head_lr": head_lr, "weight_decay": weight_decay, "batch_size": batch_size,
        "seed": seed, "temperature": temperature, "max_steps": max_steps, "max_length": base.max_length,
        "optimizer": "AdamW",
    }
    started = time.perf_counter()
    with torch.random.fork_rng(), restore_on_exit(base.model), _preserved_training_state(base.model):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        inject_lora(
            base.model, rank=rank, alpha=alpha, target_modules=target_modules, exclude_modules=exclude_modules,
            generator=generator,
        )
        if init is not None:
            _start_from(base.model, init, alpha / rank)
        _freeze_all_but_lora(base.model)
        head = nn.Linear(base.hidden_size, task.num_labels) if protocol == "head" else None
        optimizer = _setup_optimizer(base.model, head, lr=lr, head_lr=head_lr, weight_decay=weight_decay)
        batches = _batches(len(texts), batch_size, epochs, generator)[:max_steps]
        losses = _train_loop(base, task, texts, labels, batches, optimizer, head=head, temperature=temperature)
        extras = None
        if head is not None:
            w_key, b_key = head_keys(task.name)
            extras = {w_key: head.weight.detach().clone(), b_key: head.bias.detach().clone()}
        adapter = extract_adapter(
            base.model, base_model=base.base_model_id,
            target_modules=list(target_modules) if not isinstance(target_modules, str) else None,
            extra_tensors=extras,
        )
    seconds = time.perf_counter() - started
    metrics: dict[str, float] = {"steps": len(losses), "seconds": round(seconds, 2), "final_loss": losses[-1]}
    if validate is not None:
        metrics.update(validate(adapter, base))
    return TrainResult(adapter=adapter, metrics=metrics, losses=losses, params=params)


@torch.no_grad()
def _start_from(model: nn.Module, init: LoraAdapter, scale: float) -> None:
    """Overwrite the freshly injected factors with ``init``'s (``B`` rescaled from ``init``'s scale
    to ``scale``, so the starting delta is exactly ``init``'s)."""
    modules = dict(init.modules())
    for path, layer in lora_layers(model):
        module = modules.get(path)
        if module is None:
            continue
        if module.rank != layer.lora_A[0].shape[0]:
            raise InvalidParameterError(f"init adapter has rank {module.rank} at '{path}', training uses {layer.lora_A[0].shape[0]}")
        layer.lora_A[0].copy_(module.A.float())
        layer.lora_B[0].copy_(module.B.float() * (module.scale / scale))
