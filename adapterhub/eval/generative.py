"""Judge adapters of a causal LM on the shipped tasks asked as instruction prompts.

Protocol ``"generative"`` (see ``adapterhub.models.prompts`` for the template):

- classification tasks: each label's answer word is scored by its log-likelihood after the prompt
  (lm-evaluation-harness's multiple-choice ``acc``: the summed log-probability of the answer
  tokens and the end-of-turn token; the highest wins), in one cached prompt pass per batch;
- generation tasks (``wn_antonym``, ``wn_hypernym``): greedy decoding, exact match of the first
  line against any accepted answer (``adapterhub.tasks.answer_matches``).

Baselines, with the same template: the base model zero-shot, and ``shots=5`` (five solved train
examples as earlier chat turns, ``few_shot_examples``). ``limit`` scores a fixed, seeded subset
of the split (the demo and slow tests use it; say so wherever it is used).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.eval.evaluate import EvalResult, WeightsInput, score
from adapterhub.lora import LoraAdapter
from adapterhub.models.causal import CausalLM
from adapterhub.models.lm_scoring import choice_logprobs, generate
from adapterhub.models.lora_layers import lora_attached
from adapterhub.models.prompts import FEW_SHOT, few_shot_examples, task_messages
from adapterhub.tasks import Task, answer_matches, resolve_task

GENERATIVE = "generative"
MAX_NEW_TOKENS = 8
"""Generation tasks answer one word; eight tokens hold any WordNet lemma the tasks accept."""


def subset_indices(n: int, limit: int | None, key: str) -> list[int]:
    """A fixed seeded subset of ``range(n)`` of size ``limit`` (all when ``limit`` is None), in order."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(key).sample(range(n), limit))


def _check_base(adapters: Sequence[LoraAdapter], lm: CausalLM) -> None:
    for a in adapters:
        if a.base_model and a.base_model != lm.base_model_id:
            raise IncompatibleAdaptersError(
                f"adapter was trained on '{a.base_model}' but the model is '{lm.base_model_id}'"
            )


def predict(lm: CausalLM, task: Task, texts: Sequence[str], *, shots: int = 0, batch_size: int = 16) -> list:
    """Predictions of the model as it is (adapters already attached): label indices, or generated texts."""
    examples = few_shot_examples(task, shots) if shots else []
    prompts = [lm.prompt_ids(task_messages(task, t, examples)) for t in texts]
    if task.is_generation:
        return generate(lm, prompts, max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size)
    options = [lm.answer_ids(a) for a in task.label_answers]
    scores = choice_logprobs(lm, prompts, [options] * len(prompts), batch_size=batch_size)
    return [int(s.argmax()) for s in scores]


def evaluate_lm(
    adapters: LoraAdapter | Sequence[LoraAdapter] | None,
    task: str | Task,
    lm: CausalLM,
    *,
    weights: WeightsInput = None,
    split: str = "test",
    shots: int = 0,
    limit: int | None = None,
    batch_size: int = 16,
) -> EvalResult:
    """Accuracy of the base LM, one adapter or a static mixture on one task split.

    Args:
        adapters: ``None`` (zero-shot or few-shot baseline), one adapter or several (a mixture).
        weights: one weight per adapter (default ``1/n`` each); per-example weights are not
            supported on this base yet.
        shots: in-context examples before each question (``FEW_SHOT`` for the few-shot baseline).
        limit: score a fixed seeded subset of this many examples.

    Returns:
        An ``EvalResult``; for a generation task ``macro_f1`` equals the exact-match accuracy and
        ``predictions`` holds 1 (match) or 0 per example.
    """
    task = resolve_task(task)
    adapter_list = [] if adapters is None else [adapters] if isinstance(adapters, LoraAdapter) else list(adapters)
    _check_base(adapter_list, lm)
    examples = task.split(split)
    picked = [examples[i] for i in subset_indices(len(examples), limit, f"{task.name}:{split}")]
    texts = [e.text for e in picked]
    w = None
    if adapter_list:
        w = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else torch.full(
            (len(adapter_list),), 1.0 / len(adapter_list)
        )
        if w.shape != (len(adapter_list),):
            raise InvalidParameterError(
                f"on a causal LM, weights are one static mixture: ({len(adapter_list)},), got {tuple(w.shape)}"
            )
    with lora_attached(lm.model, adapter_list, weights=w):
        predicted = predict(lm, task, texts, shots=shots, batch_size=batch_size)
    protocol = GENERATIVE if not shots else f"{GENERATIVE}-{shots}shot"
    if task.is_generation:
        hits = [int(answer_matches(text, e.answers)) for text, e in zip(predicted, picked, strict=True)]
        acc = sum(hits) / len(hits)
        stderr = (acc * (1 - acc) / len(hits)) ** 0.5
        return EvalResult(task=task.name, protocol=protocol, split=split, n=len(hits), accuracy=acc,
                          accuracy_stderr=stderr, macro_f1=acc, per_class={}, predictions=tuple(hits))
    s = score(predicted, [e.label for e in picked], task.label_names)
    return EvalResult(task=task.name, protocol=protocol, split=split, n=len(picked), predictions=tuple(predicted), **s)


def lm_split_scorer(
    task: str | Task, *, split: str = "validation", limit: int | None = None
) -> Callable[[LoraAdapter, CausalLM], dict[str, float]]:
    """A ``train_causal_adapter(validate=...)`` callback: the trained adapter's accuracy on a split."""
    resolved = resolve_task(task)

    def score_split(adapter: LoraAdapter, lm: CausalLM) -> dict[str, float]:
        result = evaluate_lm(adapter, resolved, lm, split=split, limit=limit)
        return {f"{split}_accuracy": result.accuracy, f"{split}_macro_f1": result.macro_f1}

    return score_split


__all__ = ["FEW_SHOT", "GENERATIVE", "evaluate_lm", "lm_split_scorer", "predict", "subset_indices"]
