"""Train one LoRA adapter of a causal LM for one task on CPU: cross-entropy on the answer tokens.

Recipe (``train_causal_adapter`` top to bottom, as ``train_adapter`` for the encoder): inject a
fresh LoRA on the seven Llama projections, freeze everything else, AdamW, one step per batch of
(prompt, answer) pairs where only the answer tokens (and the end-of-turn token) are scored, then
``extract_adapter`` with ``task_type: CAUSAL_LM``; the model is restored on the way out.

The base may run in bfloat16 (``load_smollm2`` picks it where the CPU computes it natively): the
LoRA factors and AdamW's state stay float32, gradients reach them through the bf16 base, as in
mixed-precision fine-tuning with PEFT. ``seed`` fixes the A init and the data order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.models.causal import LLAMA_TARGET_MODULES, CausalLM
from adapterhub.models.lm_scoring import answer_loss
from adapterhub.models.lora_layers import extract_adapter, inject_lora, restore_on_exit
from adapterhub.models.prompts import target_answers, task_messages
from adapterhub.models.train import (
    TrainResult,
    _batches,
    _freeze_all_but_lora,
    _preserved_training_state,
    _setup_optimizer,
)
from adapterhub.tasks import Task, resolve_task

CausalValidateFn = Callable[[LoraAdapter, CausalLM], Mapping[str, float]]


def answer_train_loop(
    lm: CausalLM,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    batches: Sequence[Sequence[int]],
    optimizer: torch.optim.Optimizer,
) -> list[float]:
    """One optimizer step per batch of (prompt, answer) pairs on the answer tokens; the loss of every step.

    Shared by every trainer of a causal LM (LoRA here, MoS in ``adapterhub.shard``).
    """
    losses: list[float] = []
    lm.model.train()
    for idx in batches:
        loss = answer_loss(lm, [prompts[i] for i in idx], [targets[i] for i in idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_causal_adapter(
    lm: CausalLM,
    task: str | Task,
    *,
    rank: int = 8,
    alpha: float = 16,
    target_modules: Sequence[str] = LLAMA_TARGET_MODULES,
    epochs: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    max_steps: int | None = None,
    max_examples: int | None = None,
    validate: CausalValidateFn | None = None,
) -> TrainResult:
    """Train a LoRA adapter of ``lm`` for one task (changes ``lm.model`` and restores it, even on error).

    Args:
        lm: the causal LM (``load_smollm2()``, or ``tiny_random_llama()`` in tests).
        task: a ``Task`` or a task name (classification: the label's answer word is the target;
            generation: the first listed answer).
        rank, alpha: LoRA rank and alpha (scale ``alpha / rank``).
        target_modules: PEFT-style selection (default: all seven Llama projections).
        epochs, batch_size, lr, weight_decay: AdamW training schedule.
        seed: fixes the A init and the data order; give each task its own seed so adapters do not
            share their initial A (adapters from different authors never do).
        max_steps: stop after this many steps; ``max_examples``: train on the first ``n`` train examples.
        validate: scores the trained adapter on the restored model (e.g. a validation subset).

    Raises:
        InvalidParameterError: bad sizes or an empty train split.
    """
    if epochs <= 0 or batch_size <= 0 or (max_steps is not None and max_steps <= 0):
        raise InvalidParameterError("epochs, batch_size and max_steps must be positive")
    task = resolve_task(task)
    texts, answers = task.texts("train"), target_answers(task, "train")
    if max_examples is not None:
        texts, answers = texts[:max_examples], answers[:max_examples]
    if not texts:
        raise InvalidParameterError(f"task '{task.name}' has no train examples")
    prompts = [lm.prompt_ids(task_messages(task, t)) for t in texts]
    targets = [lm.answer_ids(a) for a in answers]
    params = {
        "task": task.name, "protocol": "generative", "rank": rank, "alpha": alpha,
        "target_modules": list(target_modules), "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
        "batch_size": batch_size, "seed": seed, "max_steps": max_steps, "max_examples": max_examples,
        "optimizer": "AdamW", "dtype": str(lm.dtype).removeprefix("torch."),
    }
    started = time.perf_counter()
    with torch.random.fork_rng(), restore_on_exit(lm.model), _preserved_training_state(lm.model):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        inject_lora(lm.model, rank=rank, alpha=alpha, target_modules=target_modules, exclude_modules=None,
                    generator=generator)
        _freeze_all_but_lora(lm.model)
        optimizer = _setup_optimizer(lm.model, None, lr=lr, head_lr=lr, weight_decay=weight_decay)
        batches = _batches(len(texts), batch_size, epochs, generator)[:max_steps]
        losses = answer_train_loop(lm, prompts, targets, batches, optimizer)
        adapter = extract_adapter(
            lm.model, base_model=lm.base_model_id, target_modules=list(target_modules),
            config_overrides={"task_type": "CAUSAL_LM"},
        )
    metrics: dict[str, float] = {
        "steps": len(losses), "seconds": round(time.perf_counter() - started, 2), "final_loss": losses[-1],
    }
    if validate is not None:
        metrics.update(validate(adapter, lm))
    return TrainResult(adapter=adapter, metrics=metrics, losses=losses, params=params)
