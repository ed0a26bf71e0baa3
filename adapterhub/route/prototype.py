"""Prototype router (LoraRetriever-style): each adapter is a point in the base model's embedding space.

An adapter's **prototype** is the mean of the L2-normalised base-model embeddings of a few (at most
32) of its training inputs, re-normalised to unit length. A query is embedded once with the bare
base model; its cosine similarity to every prototype is the router score, and ``top_k_softmax``
turns scores into a mixture. Each prototype depends on its own adapter's examples only, so the
catalog stores one ``(hidden,)`` vector per adapter revision and adding or removing an adapter never
touches the others.

Stored examples: a file named ``adapterhub_examples.jsonl`` beside the adapter (the shipped library
carries one per task folder; ``adapterhub add`` reads it, ``push``/``pull`` carry it). Format, one
JSON object per line, UTF-8::

    {"text": "a short input the adapter was trained on"}

- at most ``MAX_EXAMPLES`` (32) lines, at least one; blank lines are ignored;
- each ``text`` is a non-empty string of at most ``MAX_QUERY_CHARS`` characters;
- drawn from the TRAIN split only (never the data an adapter is evaluated on);
- other keys are allowed and ignored (room for e.g. ``"label"`` later).

Example:
    >>> protos = {name: embed_examples(model, read_examples(folder / EXAMPLES_FILE)) for name, folder in ...}
    >>> router = PrototypeRouter(protos)
    >>> weights = router.route(model.encode(["a query"]), top_k=3, temperature=0.05)  # (1, n_adapters)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from adapterhub.errors import InvalidParameterError
from adapterhub.route.base import (
    EXAMPLES_FILE,
    MAX_EXAMPLES,
    MAX_QUERY_CHARS,
    check_route_params,
    parse_examples,
    top_k_softmax,
)

if TYPE_CHECKING:
    from adapterhub.models.base import BaseModel

__all__ = [
    "EXAMPLES_FILE", "MAX_EXAMPLES", "PrototypeRouter", "check_query_embeddings", "check_texts",
    "embed_examples", "parse_examples", "read_examples",
]

def check_texts(texts: Sequence[str], *, what: str = "example", limit: int | None = MAX_EXAMPLES) -> list[str]:
    """``texts`` as a list, refused if empty, too many, not strings, blank or over the length limit.

    Raises:
        InvalidParameterError: with a one-line reason naming the offending item.
    """
    items = list(texts)
    if not items:
        raise InvalidParameterError(f"no {what} texts given; at least one is needed")
    if limit is not None and len(items) > limit:
        raise InvalidParameterError(f"{len(items)} {what} texts given; at most {limit} are kept per adapter")
    for i, t in enumerate(items):
        if not isinstance(t, str) or not t.strip():
            raise InvalidParameterError(f"{what} {i + 1} is not a non-empty string")
        if len(t) > MAX_QUERY_CHARS:
            raise InvalidParameterError(f"{what} {i + 1} has {len(t)} characters; the limit is {MAX_QUERY_CHARS}")
    return items


def read_examples(path: str | Path) -> list[str]:
    """The example texts stored in an ``adapterhub_examples.jsonl`` file.

    Raises:
        InvalidParameterError: malformed file (see ``parse_examples``).
        FileNotFoundError: no such file.
    """
    return parse_examples(Path(path).read_bytes())


def embed_examples(base_model: BaseModel, texts: Sequence[str], *, batch_size: int = 32) -> torch.Tensor:
    """One adapter's prototype: the re-normalised mean of its examples' unit base-model embeddings.

    The base model must be bare (no adapter attached): queries are embedded the same way at routing
    time, before any adapter is chosen. Returns a float32 ``(hidden,)`` unit vector.

    Raises:
        InvalidParameterError: texts refused by ``check_texts``.
    """
    items = check_texts(texts)
    emb = base_model.encode(items, batch_size=batch_size)
    return F.normalize(F.normalize(emb, dim=-1).mean(dim=0), dim=0)


def check_query_embeddings(query_embeddings: torch.Tensor, hidden: int) -> torch.Tensor:
    """``(q, hidden)`` float32 embeddings (a single ``(hidden,)`` vector becomes one row).

    Raises:
        InvalidParameterError: wrong rank or width, or non-finite values.
    """
    if not isinstance(query_embeddings, torch.Tensor):
        raise InvalidParameterError("query embeddings must be a tensor")
    q = query_embeddings.float()
    if q.ndim == 1:
        q = q.unsqueeze(0)
    if q.ndim != 2 or q.shape[1] != hidden:
        raise InvalidParameterError(
            f"query embeddings must be (n_queries, {hidden}), got {tuple(query_embeddings.shape)}"
        )
    if not torch.isfinite(q).all():
        raise InvalidParameterError("query embeddings hold NaN or infinite values")
    return q


class PrototypeRouter:
    """Cosine similarity to per-adapter prototypes, then top-k softmax.

    State is one unit vector per adapter name (``prototypes``); ``add``/``remove`` change one entry
    and leave every other prototype bit-identical. Adapter order is insertion order, which is the
    column order of ``route``'s result (``names``).
    """

    def __init__(self, prototypes: Mapping[str, torch.Tensor] | None = None) -> None:
        self._protos: dict[str, torch.Tensor] = {}
        self._matrix: torch.Tensor | None = None
        for name, vector in (prototypes or {}).items():
            self.add(name, vector)

    @property
    def names(self) -> list[str]:
        """Adapter names, in the column order of ``scores``/``route``."""
        return list(self._protos)

    @property
    def prototypes(self) -> dict[str, torch.Tensor]:
        """A copy of the state: name → unit ``(hidden,)`` prototype (what the catalog stores)."""
        return dict(self._protos)

    @property
    def hidden_size(self) -> int | None:
        return next(iter(self._protos.values())).shape[0] if self._protos else None

    def add(self, name: str, prototype: torch.Tensor) -> None:
        """Add or replace one adapter's prototype (re-normalised; its width must match the others').

        Raises:
            InvalidParameterError: empty name, not a 1-D finite non-zero vector, or another width.
        """
        if not isinstance(name, str) or not name:
            raise InvalidParameterError("an adapter name must be a non-empty string")
        if not isinstance(prototype, torch.Tensor) or prototype.ndim != 1:
            raise InvalidParameterError(f"prototype of '{name}' must be a 1-D tensor")
        v = prototype.detach().float()
        if not torch.isfinite(v).all() or float(v.norm()) == 0.0:
            raise InvalidParameterError(f"prototype of '{name}' must be finite and non-zero")
        hidden = self.hidden_size
        if hidden is not None and v.shape[0] != hidden and not (len(self._protos) == 1 and name in self._protos):
            raise InvalidParameterError(f"prototype of '{name}' has width {v.shape[0]}, the others {hidden}")
        self._protos[name] = F.normalize(v, dim=0)
        self._matrix = None

    def remove(self, name: str) -> None:
        """Drop one adapter.

        Raises:
            InvalidParameterError: no adapter of that name.
        """
        if name not in self._protos:
            raise InvalidParameterError(f"no adapter named '{name}' in this router")
        del self._protos[name]
        self._matrix = None

    def _stacked(self) -> torch.Tensor:
        if self._matrix is None:
            check_route_params(1, 1.0, len(self._protos))
            self._matrix = torch.stack(list(self._protos.values()))
        return self._matrix

    def scores(self, query_embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity ``(q, n_adapters)`` of each query to each prototype.

        Raises:
            InvalidParameterError: empty router or malformed embeddings.
        """
        matrix = self._stacked()
        q = F.normalize(check_query_embeddings(query_embeddings, matrix.shape[1]), dim=-1)
        return q @ matrix.T

    def route(self, query_embeddings: torch.Tensor, top_k: int = 1, temperature: float = 1.0) -> torch.Tensor:
        """Mixture weights ``(q, n_adapters)``: top-k softmax of cosine / ``temperature``; rows sum to 1.

        Cosines live in [-1, 1], so useful temperatures are small (0.01-0.1); at 1.0 a top-3 mixture
        is close to uniform over its three adapters.

        Raises:
            InvalidParameterError: bad ``top_k``/``temperature``, empty router, malformed embeddings.
        """
        check_route_params(top_k, temperature, len(self._protos))
        return top_k_softmax(self.scores(query_embeddings), top_k, temperature)
