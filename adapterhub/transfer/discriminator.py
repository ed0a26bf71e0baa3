"""The Trans-LoRA discriminator: a small LoRA plus a two-way head that tells real task inputs from
the generator's imitations, trained at source time while the real data is at hand.

Its model is an encoder of the bed (the source base when the source is an encoder; MiniLM
otherwise): "Is the above from TASK? yes/no" is a binary classification of the input text, and the
bed's head protocol (``train_adapter(protocol="head")``) is exactly that — a LoRA and a linear head
trained jointly, the head travelling in the adapter as ``heads.<name>.*`` tensors. So the
discriminator is stored, pushed and pulled like any adapter. At transfer time a candidate is kept
when p(real) > p(synthetic), i.e. p(real) > 0.5, as in the paper.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.lora import LoraAdapter
from adapterhub.lora.keys import head_keys
from adapterhub.models.base import BaseModel
from adapterhub.models.lora_layers import lora_attached
from adapterhub.models.train import train_adapter
from adapterhub.tasks import Example, Label, Task

DISCRIMINATOR_TASK = "trans_lora_discriminator"
SYNTHETIC, REAL = 0, 1


@dataclass
class Discriminator:
    """A trained discriminator: the adapter (LoRA + head), the base it adapts, its held-out scores."""

    adapter: LoraAdapter
    metrics: dict[str, float]
    params: dict


def discriminator_task(real: Sequence[str], synthetic: Sequence[str], *, split_seed: int = 0) -> Task:
    """A two-class task (synthetic = 0, real = 1) with a 20 % validation split of each class."""
    rng = random.Random(split_seed)
    examples: list[Example] = []
    for label, texts in ((SYNTHETIC, synthetic), (REAL, real)):
        order = list(texts)
        rng.shuffle(order)
        n_val = max(1, len(order) // 5) if len(order) >= 5 else 0
        for i, text in enumerate(order):
            split = "validation" if i < n_val else "train"
            examples.append(Example(f"{label}-{i}", text, label, split))
    return Task(
        name=DISCRIMINATOR_TASK,
        description="whether a text is a real input of the task or a generated imitation",
        labels=(Label("synthetic", "text written by a language model"), Label("real", "a real input of the task")),
        source="the adapter's training inputs and the generator's samples",
        license="as the adapter's data",
        examples=tuple(sorted(examples, key=lambda e: e.split != "train")),
    )


@torch.no_grad()
def p_real(base: BaseModel, discriminator: LoraAdapter, texts: Sequence[str], *, batch_size: int = 128) -> torch.Tensor:
    """The discriminator's probability that each text is a real task input, ``(len(texts),)``."""
    if not texts:
        return torch.zeros(0)
    w_key, b_key = head_keys(DISCRIMINATOR_TASK)
    extras = discriminator.extra_tensors()
    if w_key not in extras or b_key not in extras:
        raise InvalidParameterError("this adapter is not a Trans-LoRA discriminator (it carries no real/synthetic head)")
    weight, bias = extras[w_key].float(), extras[b_key].float()
    with lora_attached(base.model, [discriminator]):
        emb = base.encode(list(texts), batch_size=batch_size)
    return torch.softmax(emb @ weight.T + bias, dim=-1)[:, REAL]


def train_discriminator(
    base: BaseModel,
    real: Sequence[str],
    synthetic: Sequence[str],
    *,
    rank: int = 4,
    epochs: int = 4,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> Discriminator:
    """Train the real-vs-synthetic LoRA + head; report accuracy on the held-out fifth of each class.

    Raises:
        InvalidParameterError: fewer than 5 texts of either class.
    """
    if len(real) < 5 or len(synthetic) < 5:
        raise InvalidParameterError(
            f"the discriminator needs at least 5 real and 5 synthetic texts (got {len(real)} and {len(synthetic)})"
        )
    task = discriminator_task(real, synthetic, split_seed=seed)
    result = train_adapter(base, task, rank=rank, alpha=2 * rank, epochs=epochs, batch_size=batch_size, lr=lr,
                           head_lr=1e-2, seed=seed, protocol="head")
    val = task.split("validation")
    probs = p_real(base, result.adapter, [e.text for e in val])
    predicted = (probs > 0.5).long()
    truth = torch.tensor([e.label for e in val])
    metrics = {
        "validation_accuracy": float((predicted == truth).float().mean()),
        "validation_real_kept": float(predicted[truth == REAL].float().mean()),
        "validation_synthetic_rejected": float((1 - predicted[truth == SYNTHETIC]).float().mean()),
        "seconds": result.metrics["seconds"],
        "real": len(real),
        "synthetic": len(synthetic),
    }
    return Discriminator(adapter=result.adapter, metrics=metrics, params=result.params)
