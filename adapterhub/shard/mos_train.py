"""Train one MoS adapter for one task on CPU, on the encoder or on the causal LM.

Recipe (``train_mos_adapter`` top to bottom, as ``adapterhub.models.train``): install fresh MoS
pools (:func:`adapterhub.shard.mos.install_mos`), freeze everything else, AdamW over the shared
pools and private shards, one step per batch, then read the pools back and export the plain
per-layer PEFT LoRA of rank ``r``; the model is restored on the way out (even on error).

Losses are those of the LoRA trainers, reused (not copied) from ``adapterhub.models``:
the encoder's similarity loss (``models.train._train_loop``: cosine to the label descriptions over
a temperature, cross-entropy) and the causal LM's answer cross-entropy (``lm_scoring.answer_loss``
on the prompts of ``models.prompts``, as ``train_causal_adapter``).

Determinism: ``config.seed`` fixes the shard indices, the init and the data order
(``torch.manual_seed`` inside a forked RNG state, so the caller's global RNG is left as it was).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from adapterhub.errors import InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import BaseModel
from adapterhub.models.causal import LLAMA_TARGET_MODULES, CausalLM
from adapterhub.models.train_causal import answer_train_loop
from adapterhub.models.prompts import target_answers, task_messages
from adapterhub.models.train import (
    DEFAULT_TEMPERATURE,
    _batches,
    _preserved_training_state,
    _setup_optimizer,
    _train_loop,
)
from adapterhub.shard.mos import (
    MosConfig,
    MosPools,
    lora_parameter_count,
    mos_installed,
    mos_parameters,
    pools_from_model,
)
from adapterhub.tasks import Task, resolve_task

MosValidateFn = Callable[[LoraAdapter, "BaseModel | CausalLM"], Mapping[str, float]]
"""``(exported adapter, restored model) -> metrics`` merged into ``MosTrainResult.metrics``."""


@dataclass
class MosTrainResult:
    """What ``train_mos_adapter`` produced.

    Attributes:
        adapter: the exported plain PEFT LoRA of rank ``r`` (``adapter.save(folder)`` writes a PEFT folder).
        pools: the compact form (pools + indices + private shards).
        metrics: ``steps``, ``seconds``, ``first_loss``, ``final_loss``, ``mos_parameters`` (trained),
            ``lora_budget_parameters`` (LoRA rank ``R_eq`` on the same layers: equal by construction),
            ``lora_rank_parameters`` (LoRA rank ``r``), ``savings_vs_rank`` (their ratio to MoS's),
            plus whatever ``validate`` returned.
        losses: the training loss of every step.
        params: the hyperparameters used.
    """

    adapter: LoraAdapter
    pools: MosPools
    metrics: dict[str, float]
    losses: list[float]
    params: dict = field(default_factory=dict)


def _freeze_all_but_mos(model: nn.Module) -> None:
    """Freeze every parameter except the MoS pools and private shards."""
    trainable = {id(p) for p in mos_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


def _causal_loop(lm: CausalLM, task: Task, texts: list[str], batches: list[list[int]], optimizer) -> list[float]:
    answers = target_answers(task, "train")[: len(texts)]
    prompts = [lm.prompt_ids(task_messages(task, t)) for t in texts]
    targets = [lm.answer_ids(a) for a in answers]
    return answer_train_loop(lm, prompts, targets, batches, optimizer)


def train_mos_adapter(
    model: BaseModel | CausalLM,
    task: str | Task,
    config: MosConfig | None = None,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 32,
    max_steps: int | None = None,
    max_examples: int | None = None,
    weight_decay: float = 0.0,
    temperature: float = DEFAULT_TEMPERATURE,
    validate: MosValidateFn | None = None,
) -> MosTrainResult:
    """Train a MoS adapter of ``model`` for one task (changes ``model.model``, restores it, even on error).

    Args:
        model: a ``BaseModel`` (similarity loss) or a ``CausalLM`` (answer cross-entropy).
        task: a ``Task`` or a shipped task name.
        config: MoS hyperparameters (default ``MosConfig()``); ``target_modules=None`` means BERT's
            q/k/v/dense on an encoder and the seven Llama projections on a causal LM.
        epochs, lr, batch_size, weight_decay: AdamW schedule.
        max_steps: stop after this many steps; ``max_examples``: train on the first ``n`` examples.
        temperature: similarity logits are ``cos / temperature`` (encoder only).
        validate: scores the exported adapter on the restored model.

    Returns:
        ``MosTrainResult`` with the exported LoRA (``task_type: CAUSAL_LM`` on a causal LM), the
        pools, metrics and per-step losses.

    Raises:
        InvalidParameterError: bad sizes, an empty train split, or a model of another kind.
    """
    if epochs <= 0 or batch_size <= 0 or temperature <= 0 or (max_steps is not None and max_steps <= 0):
        raise InvalidParameterError("epochs, batch_size, temperature and max_steps must be positive")
    if not isinstance(model, (BaseModel, CausalLM)):
        raise InvalidParameterError(f"train_mos_adapter takes a BaseModel or a CausalLM, got {type(model).__name__}")
    config = config or MosConfig()
    causal = isinstance(model, CausalLM)
    if config.target_modules is None and causal:
        config = dataclasses.replace(config, target_modules=LLAMA_TARGET_MODULES)
    task = resolve_task(task)
    texts = task.texts("train")[:max_examples]
    if not texts:
        raise InvalidParameterError(f"task '{task.name}' has no train examples")
    params = {
        "method": "mos", "task": task.name, "protocol": "generative" if causal else "similarity",
        **config.to_json(), "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_steps": max_steps,
        "max_examples": max_examples, "weight_decay": weight_decay, "optimizer": "AdamW",
    }
    task_type = "CAUSAL_LM" if causal else None
    started = time.perf_counter()
    net = model.model
    with torch.random.fork_rng(), _preserved_training_state(net), mos_installed(net, config):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        _freeze_all_but_mos(net)
        optimizer = _setup_optimizer(net, None, lr=lr, head_lr=lr, weight_decay=weight_decay)
        batches = _batches(len(texts), batch_size, epochs, generator)[:max_steps]
        if causal:
            losses = _causal_loop(model, task, texts, batches, optimizer)
        else:
            labels = torch.tensor(task.label_ids("train")[: len(texts)])
            losses = _train_loop(model, task, texts, labels, batches, optimizer, head=None, temperature=temperature)
        pools = pools_from_model(net, base_model=model.base_model_id, task_type=task_type, config=config)
    adapter = pools.assemble()
    shapes = pools.shapes()
    metrics: dict[str, float] = {
        "steps": len(losses), "seconds": round(time.perf_counter() - started, 2),
        "first_loss": losses[0], "final_loss": losses[-1],
        "mos_parameters": pools.parameter_count(),
        "lora_budget_parameters": lora_parameter_count(shapes, config.budget_rank),
        "lora_rank_parameters": lora_parameter_count(shapes, config.rank),
    }
    metrics["savings_vs_rank"] = round(metrics["lora_rank_parameters"] / metrics["mos_parameters"], 3)
    if validate is not None:
        metrics.update(validate(adapter, model))
    return MosTrainResult(adapter=adapter, pools=pools, metrics=metrics, losses=losses, params=params)
