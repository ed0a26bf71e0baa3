"""One entry point that scores adapters on a task whatever the base: encoder or causal LM.

The models layer's registry (``adapterhub.models.bases``) knows how to load each base; how a base
is *scored* lives here, in the evaluation layer, chosen by the loaded model's type: a
``BaseModel`` (MiniLM) is scored by ``adapterhub.eval.evaluate`` (similarity or head protocol), a
``CausalLM`` (SmolLM2) by ``adapterhub.eval.generative`` (instruction prompts). Callers that run
on both bases (training and evaluating in the service, the merge-quality table) call
``score_on_task`` and never branch on the base themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from adapterhub.eval.evaluate import EvalResult, WeightsInput, evaluate
from adapterhub.eval.generative import evaluate_lm
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import BaseModel
from adapterhub.models.bases import get_base
from adapterhub.models.causal import CausalLM
from adapterhub.tasks import Task

BedModel = BaseModel | CausalLM


def load_bed_model(base: str | None = None) -> BedModel:
    """The shared loaded model of a registered base (short name or recorded model id; ``None``: MiniLM)."""
    model = get_base(base).load()
    assert isinstance(model, (BaseModel, CausalLM))
    return model


def protocol_of(model: BedModel, protocol: str = "similarity") -> str:
    """The protocol a score on ``model`` is recorded under: the causal LM has one, ``generative``."""
    return "generative" if isinstance(model, CausalLM) else protocol


def score_on_task(
    adapters: LoraAdapter | Sequence[LoraAdapter] | None,
    task: str | Task,
    model: BedModel,
    *,
    split: str = "test",
    protocol: str = "similarity",
    weights: WeightsInput = None,
    head: Mapping[str, torch.Tensor] | tuple[torch.Tensor, torch.Tensor] | None = None,
    limit: int | None = None,
) -> EvalResult:
    """Score the base alone, one adapter or a mixture on one task split of ``model``'s bed.

    ``protocol`` and ``head`` apply to the encoder only; ``limit`` (a fixed seeded subset) to the
    causal LM only (the encoder scores a whole split in seconds).
    """
    if isinstance(model, CausalLM):
        return evaluate_lm(adapters, task, model, weights=weights, split=split, limit=limit)
    return evaluate(adapters, task, protocol=protocol, split=split, model=model, head=head,  # type: ignore[arg-type]
                    weights=weights)
