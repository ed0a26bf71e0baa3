"""What every router shares: parameter checks and the top-k softmax that turns scores into a mixture.

A router scores each adapter of an inventory for each query (a cosine similarity, a classifier
logit, an Arrow projection); the mixture keeps the ``top_k`` best, and weighs them by a softmax of
their scores divided by ``temperature``. Rows of the result sum to 1 and hold at most ``top_k``
non-zero weights, so ``top_k=1`` picks one adapter, whole.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from adapterhub.errors import InvalidParameterError

if TYPE_CHECKING:
    import torch

__all__ = [
    "EXAMPLES_FILE",
    "MAX_EXAMPLES",
    "MAX_QUERY_CHARS",
    "check_route_params",
    "draw_examples",
    "draw_labeled_examples",
    "parse_example_labels",
    "parse_examples",
    "render_examples",
    "top_k_softmax",
]

MAX_QUERY_CHARS = 4096
"""The longest query text a router takes (the encoder truncates far earlier; this bounds the work)."""

EXAMPLES_FILE = "adapterhub_examples.jsonl"
"""An adapter's example inputs, beside its weights: JSON lines ``{"text": ...}``, optionally with
the example's class, ``{"text": ..., "label": ...}`` (``add`` reads it from the adapter folder,
``push``/``pull`` carry it, prototype and learned routers embed the texts, ``merge --method auto``
scores candidate merges on labelled ones)."""

MAX_LABEL_CHARS = 200

MAX_EXAMPLES = 32


def parse_text_lines(data: bytes, *, what: str, max_texts: int, max_chars: int = MAX_QUERY_CHARS) -> list[str]:
    """The texts of JSON lines ``{"text": ...}`` (blank lines skipped): at least one, at most
    ``max_texts``, each 1-``max_chars`` characters. ``what`` names the file in errors.

    Raises:
        InvalidParameterError: not UTF-8 JSON lines of that shape, or too many, or too long.
    """
    texts = []
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InvalidParameterError(f"{what} must be UTF-8 JSON lines") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise InvalidParameterError(f"{what} line {number} is not JSON; write one {{\"text\": ...}} per line") from None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip() or len(text) > max_chars:
            raise InvalidParameterError(
                f"{what} line {number} must be an object with a string \"text\" of 1-{max_chars} characters"
            )
        texts.append(text)
        if len(texts) > max_texts:
            raise InvalidParameterError(f"{what} holds more than {max_texts} texts; at most {max_texts} are kept")
    if not texts:
        raise InvalidParameterError(f"{what} holds no examples; give at least one {{\"text\": ...}} line")
    return texts


def parse_examples(data: bytes) -> list[str]:
    """The texts of an examples file: JSON lines ``{"text": ...}``, at most 32, each bounded."""
    return parse_text_lines(data, what=EXAMPLES_FILE, max_texts=MAX_EXAMPLES)


def parse_example_labels(data: bytes) -> list[str | None]:
    """The ``label`` of each example of an examples file (``None`` where a line has none).

    Raises:
        InvalidParameterError: the file is not a valid examples file, or a label is not a string
            of 1-200 characters.
    """
    parse_examples(data)
    labels: list[str | None] = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        label = json.loads(line).get("label")
        if label is not None and (not isinstance(label, str) or not 1 <= len(label) <= MAX_LABEL_CHARS):
            raise InvalidParameterError(
                f"{EXAMPLES_FILE} line {number}: \"label\" must be a string of 1-{MAX_LABEL_CHARS} characters"
            )
        labels.append(label)
    return labels


def draw_labeled_examples(task: str, n: int = MAX_EXAMPLES, seed: int = 0) -> list[tuple[str, str]]:
    """``draw_examples`` with each text's label name: the same texts in the same order."""
    import random

    from adapterhub.tasks import load_task

    loaded = load_task(task)
    rows = [(e.text, loaded.labels[e.label].name if e.label >= 0 else "") for e in loaded.split("train")]
    return random.Random(f"{task}:{seed}").sample(rows, min(n, len(rows)))


def draw_examples(task: str, n: int = MAX_EXAMPLES, seed: int = 0) -> list[str]:
    """``n`` TRAIN texts of a shipped task (all if fewer), in a fixed pseudo-random order: the
    examples ``train`` records and ``scripts/write_examples.py`` ships.

    The seed is a string (``"<task>:<seed>"``): Python seeds ``random`` from a string through
    SHA-512, so the draw does not depend on ``PYTHONHASHSEED`` or on the order tasks are visited.
    """
    import random

    from adapterhub.tasks import load_task

    texts = load_task(task).texts("train")
    return random.Random(f"{task}:{seed}").sample(texts, min(n, len(texts)))


def render_examples(texts: list[str], labels: list[str] | None = None) -> bytes:
    """An examples file's bytes: one compact JSON object per line (with ``label`` when given, and
    not empty), UTF-8 kept readable."""
    rows = [{"text": t} for t in texts]
    for row, label in zip(rows, labels or []):
        if label:
            row["label"] = label
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def check_route_params(top_k: int, temperature: float, n_adapters: int) -> int:
    """``top_k`` clipped to the inventory; refuses what no router can do.

    Raises:
        InvalidParameterError: ``top_k`` < 1, a temperature that is not a positive finite number,
            or an empty inventory.
    """
    if n_adapters < 1:
        raise InvalidParameterError("routing needs at least one adapter to route to (the inventory is empty)")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidParameterError(f"top_k must be an integer >= 1, got {top_k!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise InvalidParameterError(f"temperature must be a positive number, got {temperature!r}")
    return min(top_k, n_adapters)


def top_k_softmax(scores: torch.Tensor, top_k: int, temperature: float = 1.0) -> torch.Tensor:
    """Mixture weights from router scores: softmax(score / T) over each row's ``top_k`` best, 0 elsewhere.

    Args:
        scores: ``(..., n_adapters)``; higher is better.
        top_k: how many adapters each row mixes (clipped to ``n_adapters``).
        temperature: softmax temperature; small values approach top-1.

    Returns:
        Weights of the same shape as ``scores`` (float32), each row summing to 1. Ties are broken
        towards the lower adapter index (``torch.topk`` order), so the result is deterministic.
    """
    import torch  # here, not at import: the facade imports this module's checks on every command

    k = check_route_params(top_k, temperature, scores.shape[-1])
    scores = scores.float()
    values, index = torch.topk(scores, k, dim=-1)
    weights = torch.softmax(values / temperature, dim=-1)
    return torch.zeros_like(scores).scatter(-1, index, weights)
