"""Teacher labels and student training: the knowledge-distillation half of Trans-LoRA.

The **teacher** is the source base with the source LoRA attached. For the label-description
protocol its output on a text is a class distribution, ``softmax(cos(text, label_c) / T)`` with
the temperature the adapter was trained with (0.05), and the **student** (target base + fresh
LoRA) is trained to match it with the cross-entropy to that distribution, which is the KL
divergence plus a constant (``train_adapter(soft_targets=...)``). A causal-LM teacher gives the
softmax of its answers' log-likelihoods. A causal-LM student is trained on the teacher's answers
(cross-entropy on the answer tokens), as the paper does for generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import BaseModel
from adapterhub.models.causal import CausalLM
from adapterhub.models.lora_layers import lora_attached
from adapterhub.models.train import DEFAULT_TEMPERATURE, TrainResult, train_adapter
from adapterhub.tasks import Example, Task

Model = BaseModel | CausalLM


def task_with_train(task: Task, texts: Sequence[str], labels: Sequence[int]) -> Task:
    """A copy of ``task`` whose train split is ``texts`` with ``labels`` (the other splits kept), so
    the bed's trainers run on synthetic data unchanged."""
    if len(texts) != len(labels):
        raise InvalidParameterError("texts and labels differ in length")
    train = tuple(Example(f"syn-{i}", t, int(y), "train") for i, (t, y) in enumerate(zip(texts, labels)))
    kept = tuple(e for e in task.examples if e.split != "train")
    return Task(task.name, task.description, task.labels, task.source, task.license, train + kept,
                task.kind, task.instruction)


@torch.no_grad()
def teacher_probs(
    model: Model, adapter: LoraAdapter | None, task: Task, texts: Sequence[str], *,
    temperature: float = DEFAULT_TEMPERATURE, batch_size: int = 64,
) -> torch.Tensor:
    """The teacher's class distribution ``(len(texts), n_labels)`` (``adapter=None``: the bare base)."""
    if task.is_generation:
        raise InvalidParameterError(f"task '{task.name}' is a generation task; transfer distils classification tasks")
    adapters = [adapter] if adapter is not None else []
    with lora_attached(model.model, adapters):
        if isinstance(model, CausalLM):
            from adapterhub.models.lm_scoring import choice_logprobs
            from adapterhub.models.prompts import task_messages

            prompts = [model.prompt_ids(task_messages(task, t)) for t in texts]
            options = [model.answer_ids(a) for a in task.label_answers]
            scores = choice_logprobs(model, prompts, [options] * len(prompts), batch_size=batch_size)
            return torch.softmax(torch.stack(scores).float(), dim=-1)
        text_emb = model.encode(list(texts), batch_size=batch_size)
        label_emb = model.encode(task.label_descriptions, batch_size=batch_size)
    return torch.softmax(text_emb @ label_emb.T / temperature, dim=-1)


def train_student(
    student: Model,
    task: Task,
    texts: Sequence[str],
    probs: torch.Tensor,
    *,
    target_modules: Sequence[str],
    rank: int = 8,
    alpha: float = 16,
    epochs: int = 4,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    hard: bool = False,
) -> TrainResult:
    """Train a fresh LoRA on ``student`` to imitate the teacher's ``probs`` on ``texts``.

    An encoder student fits the distribution (``hard=True``: its argmax, for the ablation that asks
    what the soft labels add); a causal-LM student fits the teacher's answer word.
    """
    if not texts:
        raise InvalidParameterError("no synthetic inputs to distil on")
    labels = probs.argmax(dim=-1).tolist()
    data = task_with_train(task, texts, labels)
    if isinstance(student, CausalLM):
        from adapterhub.models.train_causal import train_causal_adapter

        return train_causal_adapter(student, data, rank=rank, alpha=alpha, target_modules=target_modules,
                                    epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    return train_adapter(student, data, rank=rank, alpha=alpha, target_modules=target_modules, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed, soft_targets=None if hard else probs)
