"""Judge an adapter (or a mixture, or none) by what it does to a real model on a real task.

Primary protocol, ``"similarity"`` — the adapter must carry the task, no trained head: every class
has a short natural-language description; a text is assigned the class whose description embedding
is most cosine-similar to the text's embedding, both embedded by the same (adapted) model. With no
adapter this is the base model's zero-shot accuracy, the baseline every adapter is read against.

Secondary protocol, ``"head"`` — a linear head on the pooled embedding. The head comes from the
adapter's passthrough tensors ``heads.<task>.weight``/``bias`` (see ``adapterhub.eval.heads``) or
an explicit ``head=``; with no adapter, a head is fitted on the frozen base model's train split
("head-only"), the baseline of this protocol.

Mixtures: pass several adapters and ``weights`` — a ``(n_adapters,)`` vector for one static
mixture, or a ``(n_examples, n_adapters)`` matrix of per-example weights (e.g. from a router),
whose rows align with ``task.texts(split)``. In the similarity protocol the label descriptions of
example ``i`` are embedded under example ``i``'s mixture (computed once per distinct row).

Example:
    >>> from adapterhub.lora import LoraAdapter
    >>> r = evaluate(LoraAdapter.load("examples/wn_pos"), "wn_pos")
    >>> r.accuracy, r.macro_f1
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.eval.heads import fit_linear_head, head_from_tensors
from adapterhub.lora import LoraAdapter
from adapterhub.lora.keys import head_keys
from adapterhub.models.base import BaseModel, cached_base_model
from adapterhub.models.lora_layers import lora_attached
from adapterhub.tasks import Task, resolve_task

Protocol = Literal["similarity", "head"]
PROTOCOLS: tuple[str, ...] = ("similarity", "head")
AdapterInput = LoraAdapter | Sequence[LoraAdapter] | None
WeightsInput = torch.Tensor | Sequence[float] | Sequence[Sequence[float]] | None


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class EvalResult:
    """Scores of one model configuration on one split of one task.

    Attributes:
        accuracy: fraction correct; ``accuracy_stderr`` is its binomial standard error
            ``sqrt(acc (1 - acc) / n)``.
        macro_f1: unweighted mean of per-class F1.
        per_class: precision/recall/F1/support per label name.
        predictions: predicted label index per example, in split order (for paired comparisons).
    """

    task: str
    protocol: str
    split: str
    n: int
    accuracy: float
    accuracy_stderr: float
    macro_f1: float
    per_class: dict[str, ClassScores] = field(repr=False)
    predictions: tuple[int, ...] = field(repr=False)

    def to_dict(self, *, with_predictions: bool = False) -> dict:
        """JSON-ready dict (predictions left out unless asked)."""
        d = asdict(self)
        if not with_predictions:
            d.pop("predictions")
        return d


def score(predictions: Sequence[int], labels: Sequence[int], label_names: Sequence[str]) -> dict:
    """Accuracy, its standard error, macro-F1 and per-class scores of predictions against labels."""
    n = len(labels)
    if n == 0:
        raise InvalidParameterError("cannot score an empty split")
    correct = sum(int(p == y) for p, y in zip(predictions, labels))
    acc = correct / n
    per_class: dict[str, ClassScores] = {}
    for c, name in enumerate(label_names):
        tp = sum(1 for p, y in zip(predictions, labels) if p == c and y == c)
        pred_c = sum(1 for p in predictions if p == c)
        true_c = sum(1 for y in labels if y == c)
        precision = tp / pred_c if pred_c else 0.0
        recall = tp / true_c if true_c else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = ClassScores(precision, recall, f1, true_c)
    present = [s.f1 for s in per_class.values() if s.support > 0]
    return {
        "accuracy": acc,
        "accuracy_stderr": math.sqrt(acc * (1 - acc) / n),
        "macro_f1": sum(present) / len(present),
        "per_class": per_class,
    }


def _as_list(adapters: AdapterInput) -> list[LoraAdapter]:
    if adapters is None:
        return []
    if isinstance(adapters, LoraAdapter):
        return [adapters]
    return list(adapters)


def _check_base(adapters: Sequence[LoraAdapter], model: BaseModel) -> None:
    for a in adapters:
        if a.base_model and a.base_model != model.base_model_id:
            raise IncompatibleAdaptersError(
                f"adapter was trained on '{a.base_model}' but the model is '{model.base_model_id}'; "
                "pass model=load_base_model(...) for that base model"
            )


def _weights_tensor(weights: WeightsInput, n_adapters: int, n_examples: int) -> torch.Tensor | None:
    """Validated weights: ``None`` for no adapters, ``(n,)`` static or ``(n_examples, n)``."""
    if n_adapters == 0:
        if weights is not None:
            raise InvalidParameterError("weights given but no adapters; pass adapters or drop weights")
        return None
    if weights is None:
        return torch.full((n_adapters,), 1.0 / n_adapters)
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.ndim == 1 and w.shape[0] == n_adapters:
        return w
    if w.ndim == 2 and w.shape == (n_examples, n_adapters):
        return w
    raise InvalidParameterError(
        f"weights must be ({n_adapters},) or ({n_examples}, {n_adapters}) for {n_adapters} adapters and "
        f"{n_examples} examples, got {tuple(w.shape)}"
    )


def embed_texts(
    texts: Sequence[str],
    adapters: AdapterInput = None,
    *,
    weights: WeightsInput = None,
    model: BaseModel | None = None,
    batch_size: int = 128,
) -> torch.Tensor:
    """Unit-norm embeddings ``(len(texts), hidden)`` under an adapter, a mixture or the bare base.

    Adapters are attached for the call only; the model is left as it was.

    Args:
        texts: the texts.
        adapters: one adapter, several (a mixture) or ``None``.
        weights: ``(n_adapters,)`` or ``(len(texts), n_adapters)``; default ``1/n_adapters`` each
            (so a single adapter gets weight 1).
        model: the base model; default the cached packaged MiniLM.
        batch_size: texts per forward pass.
    """
    model = model or cached_base_model()
    adapter_list = _as_list(adapters)
    _check_base(adapter_list, model)
    w = _weights_tensor(weights, len(adapter_list), len(texts))
    if not adapter_list:
        return model.encode(texts, batch_size=batch_size)
    static = w if w.ndim == 1 else None
    with lora_attached(model.model, adapter_list, weights=static):
        return model.encode(texts, batch_size=batch_size, per_example=w if w.ndim == 2 else None)


def similarity_predictions(
    text_emb: torch.Tensor, label_emb: torch.Tensor
) -> torch.Tensor:
    """Argmax of cosine similarity; ``label_emb`` is ``(C, h)`` or per example ``(n, C, h)``."""
    if label_emb.ndim == 2:
        sims = text_emb @ label_emb.T
    else:
        sims = torch.einsum("nh,nch->nc", text_emb, label_emb)
    return sims.argmax(dim=-1)


def _label_embeddings(
    task: Task, adapters: list[LoraAdapter], w: torch.Tensor | None, model: BaseModel, batch_size: int
) -> torch.Tensor:
    descriptions = task.label_descriptions
    if w is None or w.ndim == 1:
        return embed_texts(descriptions, adapters or None, weights=w, model=model, batch_size=batch_size)
    # Per-example mixtures: embed the descriptions once under each distinct weight row.
    unique, inverse = torch.unique(w, dim=0, return_inverse=True)
    C = len(descriptions)
    tiled_texts = descriptions * unique.shape[0]
    tiled_w = unique.repeat_interleave(C, dim=0)
    emb = embed_texts(tiled_texts, adapters, weights=tiled_w, model=model, batch_size=batch_size)
    return emb.view(unique.shape[0], C, -1)[inverse]


_HEAD_ONLY_CACHE: dict[tuple[str, str, int], tuple[torch.Tensor, torch.Tensor]] = {}


def head_only(
    task: str | Task, *, model: BaseModel | None = None, batch_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head-only baseline head: fitted on the frozen base model's train embeddings (cached)."""
    task = resolve_task(task)
    model = model or cached_base_model()
    key = (model.base_model_id, task.name, id(model))
    if key not in _HEAD_ONLY_CACHE:
        feats = embed_texts(task.texts("train"), None, model=model, batch_size=batch_size)
        _HEAD_ONLY_CACHE[key] = fit_linear_head(feats, torch.tensor(task.label_ids("train")), task.num_labels)
    return _HEAD_ONLY_CACHE[key]


def fit_head(
    task: str | Task,
    adapters: AdapterInput = None,
    *,
    weights: WeightsInput = None,
    model: BaseModel | None = None,
    batch_size: int = 128,
) -> dict[str, torch.Tensor]:
    """Fit a task head on frozen (adapted) embeddings of the train split.

    Returns:
        ``{"heads.<task>.weight": (C, hidden), "heads.<task>.bias": (C,)}``, ready to pass as
        ``extra_tensors`` when saving an adapter.
    """
    task = resolve_task(task)
    texts = task.texts("train")
    w = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
    if w is not None and w.ndim == 2:
        raise InvalidParameterError("fit_head takes static weights only (one row for the whole train split)")
    feats = embed_texts(texts, adapters, weights=w, model=model, batch_size=batch_size)
    weight, bias = fit_linear_head(feats, torch.tensor(task.label_ids("train")), task.num_labels)
    w_key, b_key = head_keys(task.name)
    return {w_key: weight, b_key: bias}


def evaluate(
    adapters: AdapterInput,
    task: str | Task,
    *,
    weights: WeightsInput = None,
    protocol: Protocol = "similarity",
    split: str = "test",
    model: BaseModel | None = None,
    head: Mapping[str, torch.Tensor] | tuple[torch.Tensor, torch.Tensor] | None = None,
    batch_size: int = 128,
) -> EvalResult:
    """Accuracy and macro-F1 of the base model, one adapter or a mixture on one task split.

    Args:
        adapters: ``None`` (the baseline), one ``LoraAdapter`` or a sequence of them (a mixture).
        task: a ``Task`` or the name of a shipped one (``adapterhub.tasks.list_tasks()``).
        weights: mixture weights, ``(n_adapters,)`` or ``(n_examples, n_adapters)``; default
            ``1/n_adapters`` each.
        protocol: ``"similarity"`` (primary, no head) or ``"head"`` (secondary, linear head).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        model: the base model; default the packaged MiniLM, loaded once per process.
        head: explicit head for the head protocol, ``(weight, bias)`` or a mapping holding
            ``heads.<task>.weight``/``bias``; default the first adapter that carries one, or the
            head-only baseline head when ``adapters`` is ``None``.
        batch_size: texts per forward pass.

    Returns:
        An ``EvalResult``.

    Raises:
        InvalidParameterError: unknown protocol, bad weights shape, or no head for the head protocol.
        IncompatibleAdaptersError: an adapter recorded another base model, or does not fit it.
    """
    if protocol not in PROTOCOLS:
        raise InvalidParameterError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    task = resolve_task(task)
    model = model or cached_base_model()
    adapter_list = _as_list(adapters)
    _check_base(adapter_list, model)
    texts, labels = task.texts(split), task.label_ids(split)
    w = _weights_tensor(weights, len(adapter_list), len(texts))
    text_emb = embed_texts(texts, adapter_list or None, weights=w, model=model, batch_size=batch_size)
    if protocol == "similarity":
        label_emb = _label_embeddings(task, adapter_list, w, model, batch_size)
        preds = similarity_predictions(text_emb, label_emb)
    else:
        weight, bias = _resolve_head(head, adapter_list, task, model, batch_size)
        preds = (text_emb @ weight.T + bias).argmax(dim=-1)
    pred_list = [int(p) for p in preds]
    s = score(pred_list, labels, task.label_names)
    return EvalResult(task=task.name, protocol=protocol, split=split, n=len(labels), predictions=tuple(pred_list), **s)


def split_scorer(
    task: str | Task, *, protocol: Protocol = "similarity", split: str = "validation", batch_size: int = 128
) -> Callable[[LoraAdapter, BaseModel], dict[str, float]]:
    """A ``train_adapter(validate=...)`` callback: the trained adapter's scores on one split.

    Training (``adapterhub.models``) sits below evaluation and must not import it, so the caller
    hands the scoring in. The callback returns ``{"<split>_accuracy", "<split>_macro_f1"}``
    under ``protocol`` (the head protocol reads the head the adapter carries).

    Example:
        >>> train_adapter(model, task, validate=split_scorer(task))  # doctest: +SKIP
    """
    resolved = resolve_task(task)

    def score_split(adapter: LoraAdapter, model: BaseModel) -> dict[str, float]:
        result = evaluate(adapter, resolved, protocol=protocol, split=split, model=model, batch_size=batch_size)
        return {f"{split}_accuracy": result.accuracy, f"{split}_macro_f1": result.macro_f1}

    return score_split


def _resolve_head(
    head: Mapping[str, torch.Tensor] | tuple[torch.Tensor, torch.Tensor] | None,
    adapters: list[LoraAdapter],
    task: Task,
    model: BaseModel,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(head, tuple):
        return head[0].float(), head[1].float()
    if head is not None:
        found = head_from_tensors(head, task.name)
        if found is None:
            raise InvalidParameterError(f"head mapping has no heads.{task.name}.weight/bias")
        return found
    for adapter in adapters:
        found = head_from_tensors(adapter.extra_tensors(), task.name)
        if found is not None:
            return found
    if not adapters:
        return head_only(task, model=model, batch_size=batch_size)
    raise InvalidParameterError(
        f"no adapter carries a head for task '{task.name}' (heads.{task.name}.weight); "
        "pass head=fit_head(task, adapters) or use protocol='similarity'"
    )


def relative_scores(accuracy: float, *, own: float, baseline: float) -> dict[str, float]:
    """How much of a task adapter's quality a result keeps (DESIGN: "Base models and data").

    Args:
        accuracy: the result's accuracy (e.g. a merged adapter on this task).
        own: the task's own adapter's accuracy.
        baseline: the baseline's accuracy (zero-shot, or head-only in the head protocol).

    Returns:
        ``normalised_accuracy = accuracy / own`` and
        ``retained_gain = (accuracy - baseline) / (own - baseline)`` (``nan`` when undefined).
    """
    nan = float("nan")
    return {
        "normalised_accuracy": accuracy / own if own else nan,
        "retained_gain": (accuracy - baseline) / (own - baseline) if own != baseline else nan,
    }
