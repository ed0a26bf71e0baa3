"""Routing over the catalog: which adapters, with which weights, for each query (``adapterhub route``).

The engines (``adapterhub.route``) turn a query into mixture weights over a list of adapters; this
service supplies that list from the catalog and keeps each router's state there:

- an adapter's **example inputs** are a file of its revision, ``adapterhub_examples.jsonl`` (read by
  ``add`` from the adapter folder, carried by ``push``/``pull`` like any repo file);
- **derived state** is a cached artifact keyed by the content it is computed from (see
  ``store.artifacts``): the prototype of an adapter is keyed by its examples file and the base
  model, its Arrow vectors by its weights digest, the learned router by the inventory's prototypes.
  Adding or removing an adapter computes that adapter's state only; a changed adapter gets a new
  key, so nothing stale is ever used.

Candidate labels (``labels``): a zero-shot-classification request names its labels; when they are
exactly the labels of an inventory adapter's task, that adapter is the route (weight 1), whatever
the router — the label set identifies the task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.app.examples import examples_of, stored_examples
from adapterhub.route.base import EXAMPLES_FILE, MAX_QUERY_CHARS, check_route_params
from adapterhub.store import artifacts

if TYPE_CHECKING:
    import torch

    from adapterhub.app.core import HubCore
    from adapterhub.models import BaseModel

__all__ = ["EXAMPLES_FILE", "ROUTERS", "RouteDecision", "examples_of", "route"]

MAX_QUERIES = 1024  # per call: a batch file, or a POST body
ROUTERS: tuple[str, ...] = ("prototype", "learned", "hedged", "arrow")
HEDGE_MASS = 0.8  # the hedged router's probability mass, chosen on validation (docs/routing.md)


@dataclass(frozen=True)
class RouteDecision:
    """The route of one query: adapters by weight (highest first), and how they were chosen."""

    query: str
    router: str
    adapters: list[tuple[str, float]]
    by_labels: bool = False
    prediction: str | None = None
    merged: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": self.query,
            "router": "labels" if self.by_labels else self.router,
            "adapters": [{"name": n, "weight": round(w, 6)} for n, w in self.adapters],
        }
        if self.prediction is not None:
            out["prediction"] = self.prediction
        if self.merged is not None:
            out["merged"] = self.merged
        return out


# -- examples and cached state ---------------------------------------------------------------------


def _cached(
    core: HubCore, kind: str, key: str, source: str, compute: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Tensors of the artifact ``(kind, key)``: from the blob store, or computed once and stored."""
    from safetensors.torch import load, save

    found = artifacts.find_artifact(core.catalog, kind, key)
    if found is not None and core.blobs.has(found.digest):
        with core.blobs.open(found.digest) as f:
            return load(f.read())
    tensors = compute()
    data = save({k: v.contiguous() for k, v in tensors.items()})
    digest, size = core.blobs.put_bytes(data)
    artifacts.record_artifact(core.catalog, artifacts.ArtifactRecord(kind, key, source, digest, size))
    return tensors


def referenced_digests(core: HubCore) -> set[str]:
    """Blobs of derived artifacts (``gc`` keeps them)."""
    return artifacts.referenced_artifact_digests(core.catalog)


def prune(core: HubCore, live: set[str]) -> int:
    """Forget artifacts derived from content no adapter holds any more (``gc`` calls this)."""
    return artifacts.prune_artifacts(core.catalog, live)


# -- inventory -------------------------------------------------------------------------------------


def _inventory(core: HubCore, among: Sequence[str] | None, router: str) -> list[str]:
    """The adapters to route among: ``among`` as given, or by default every catalog adapter but
    stored mixtures (tag ``routed``) and, for the routers that embed examples, those without any."""
    if among:
        names = list(dict.fromkeys(among))
        for name in names:
            core.catalog.get(name)  # AdapterNotFoundError for an unknown name
    else:
        names = [r.name for r in core.catalog.list() if "routed" not in r.tags]
        if router != "arrow":
            names = [n for n in names if stored_examples(core, n) is not None]
    if not names:
        raise InvalidParameterError(
            "routing needs at least one adapter in the catalog (or in --among)"
            + ("" if among or router == "arrow" else " with example inputs; --router arrow needs none")
        )
    bases = {core.catalog.get(n).base_model or "" for n in names}
    if len(bases) > 1:
        raise IncompatibleAdaptersError(
            f"the adapters to route among are on different base models ({', '.join(sorted(bases))}); "
            "pick adapters of one base with --among"
        )
    return names


def _base_model(core: HubCore, names: Sequence[str]) -> BaseModel:
    """The encoder that embeds queries and examples: the adapters' own base when it is an encoder;
    for causal-LM adapters (SmolLM2) the default encoder, MiniLM, which embeds their example
    prompts as text (the text routers need a sentence embedding, which a causal LM does not give)."""
    from adapterhub.models import DEFAULT_BASE_MODEL, cached_base_model
    from adapterhub.models.bases import find_base

    base = core.catalog.get(names[0]).base_model or DEFAULT_BASE_MODEL
    spec = find_base(base)
    if spec is not None and spec.kind != "encoder":
        base = DEFAULT_BASE_MODEL
    return cached_base_model(None if base == DEFAULT_BASE_MODEL else base)


def _prototype(core: HubCore, name: str, model: BaseModel) -> torch.Tensor | None:
    from adapterhub.route.prototype import embed_examples

    found = stored_examples(core, name)
    if found is None:
        return None
    key = f"{found[0]}:{model.base_model_id}"[:255]
    tensors = _cached(core, "route.prototype", key, found[0], lambda: {"prototype": embed_examples(model, examples_of(core, name))})
    return tensors["prototype"]


def _prototypes(core: HubCore, names: Sequence[str], model: BaseModel) -> dict[str, torch.Tensor]:
    found = {n: _prototype(core, n, model) for n in names}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise InvalidParameterError(
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no example inputs ({EXAMPLES_FILE}); "
            "route with --router arrow, or add the adapter again with --examples FILE"
        )
    return {n: p for n, p in found.items() if p is not None}


def _arrow_prototypes(core: HubCore, name: str) -> dict[str, torch.Tensor]:
    from adapterhub.route.arrow import arrow_prototypes

    record = core.catalog.get(name)
    return _cached(core, "route.arrow", record.digest, record.digest, lambda: arrow_prototypes(core.load(name)))


# -- routing ---------------------------------------------------------------------------------------


def _label_route(core: HubCore, names: Sequence[str], labels: Sequence[str]) -> tuple[str, list[str]] | None:
    """The inventory adapter whose task has exactly these labels, and the labels' descriptions in
    the order given (what the bed's protocol compares queries with); None: no task matches."""
    from adapterhub.tasks import TaskNotFoundError, load_task

    wanted = [label.strip() for label in labels]
    for name in names:
        task_name = core.catalog.get(name).task
        if not task_name:
            continue
        try:
            task = load_task(task_name)
        except TaskNotFoundError:
            continue
        if set(task.label_names) == set(wanted):
            described = dict(zip(task.label_names, task.label_descriptions))
            return name, [described[label] for label in wanted]
    return None


def _check_queries(queries: Sequence[str]) -> list[str]:
    if isinstance(queries, str):
        queries = [queries]
    if not queries:
        raise InvalidParameterError("give at least one query")
    if len(queries) > MAX_QUERIES:
        raise InvalidParameterError(f"at most {MAX_QUERIES} queries per call, got {len(queries)}")
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise InvalidParameterError("a query must be non-empty text")
        if len(q) > MAX_QUERY_CHARS:
            raise InvalidParameterError(f"a query may be at most {MAX_QUERY_CHARS} characters, got {len(q)}")
    return list(queries)


def _weights(
    core: HubCore, router: str, names: list[str], model: BaseModel, queries: list[str], top_k: int, temperature: float
) -> torch.Tensor:
    """``(queries, adapters)`` mixture weights from one router."""
    if router == "arrow":
        from adapterhub.route.arrow import arrow_weights_summary

        adapters = [core.load(n) for n in names]
        protos = [_arrow_prototypes(core, n) for n in names]
        return arrow_weights_summary(model, adapters, queries, prototypes=protos, top_k=top_k, temperature=temperature)
    emb = model.encode(queries)
    if router == "prototype":
        from adapterhub.route.prototype import PrototypeRouter

        return PrototypeRouter(_prototypes(core, names, model)).route(emb, top_k=top_k, temperature=temperature)
    learned = _learned_router(core, names, model)
    if router == "hedged":  # weights 1/sqrt(m) on the adapters holding 80% of the posterior
        return learned.route_hedged(emb, mass=HEDGE_MASS)
    return learned.route(emb, top_k=top_k, temperature=temperature)


def _learned_router(core: HubCore, names: list[str], model: BaseModel) -> Any:
    """The linear router over these adapters' examples, fitted once per inventory (cached)."""
    from adapterhub.route.learned import LearnedRouter

    sources = [(n, (stored_examples(core, n) or ("", 0))[0]) for n in names]
    key = hashlib.sha256(json.dumps([sources, model.base_model_id]).encode()).hexdigest()
    _prototypes(core, names, model)  # refuses adapters without examples, with the usual message

    def fit() -> dict[str, torch.Tensor]:
        fitted = LearnedRouter.fit({n: model.encode(examples_of(core, n)) for n in names})
        return {"weight": fitted.weight, "bias": fitted.bias}

    source = (stored_examples(core, names[0]) or (key, 0))[0]  # pruned with its first adapter's examples
    state = _cached(core, "route.learned", key, source, fit)
    return LearnedRouter(names, state["weight"], state["bias"])


def route(
    core: HubCore,
    queries: str | Sequence[str],
    *,
    router: str = "prototype",
    top_k: int = 3,
    temperature: float = 1.0,
    among: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    run: bool = False,
    merge: bool = False,
    merge_method: str = "cat",
) -> list[RouteDecision]:
    """Route each query to a mixture of catalog adapters.

    Args:
        queries: one text or a list (at most 1,024, each at most 4,096 characters).
        router: ``prototype`` (cosine to each adapter's example prototype), ``learned`` (a linear
            classifier on the same examples), ``hedged`` (the learned posterior's smallest set of
            adapters holding 80% of it, each at 1/sqrt(m): the best text-only router on the bed,
            docs/routing.md; ``top_k`` and ``temperature`` do not apply, and weights sum to
            sqrt(m), not 1) or ``arrow`` (data-free, from the adapters' weights).
        top_k, temperature: how many adapters each query mixes, and the softmax temperature.
        among: the inventory (default: every catalog adapter; all must share one base model).
        labels: the candidate labels of the query; a label set that is exactly one inventory
            task's routes to that task's adapter.
        run: also predict a label (needs ``labels``): the query and each label embedded under
            the routed mixture, the most cosine-similar label wins.
        merge: also store each query's mixture as one adapter (for clients that load one LoRA):
            ``routed/<mixture digest>``, made once per exact mixture (adapter digests and weights)
            and reused after; ``merge_method`` ``cat`` (default) computes exactly the mixture.

    Raises:
        InvalidParameterError: unknown router, top_k < 1, bad temperature, empty inventory or
            queries, a query too long, adapters without examples for a router that needs them.
        IncompatibleAdaptersError: adapters on different base models.
        AdapterNotFoundError: an unknown name in ``among``.
    """
    if router not in ROUTERS:
        raise InvalidParameterError(f"unknown router {router!r}; choose one of: {', '.join(ROUTERS)}")
    texts = _check_queries(queries)
    names = _inventory(core, among, router)
    check_route_params(top_k, temperature, len(names))
    if run and not labels:
        raise InvalidParameterError("--run predicts one of the candidate labels: give them with --labels")
    model = _base_model(core, names)
    import torch

    by_labels = _label_route(core, names, labels) if labels else None
    if by_labels is not None:
        weights = torch.zeros(len(texts), len(names))
        weights[:, names.index(by_labels[0])] = 1.0
    else:
        weights = _weights(core, router, names, model, texts, top_k, temperature)
    predictions: list[str | None] = [None] * len(texts)
    if run and labels:
        label_texts = by_labels[1] if by_labels is not None else list(labels)
        if router == "arrow" and by_labels is None:
            chosen = _predict_arrow(core, names, model, texts, label_texts, top_k, temperature)
        else:
            chosen = _predict(core, names, model, texts, weights, label_texts)
        predictions = [list(labels)[i].strip() for i in chosen]
    decisions = []
    for i, text in enumerate(texts):
        row = [(names[j], float(weights[i, j])) for j in torch.argsort(weights[i], descending=True).tolist()]
        decisions.append(RouteDecision(text, router, [(n, w) for n, w in row if w > 0], by_labels is not None, predictions[i]))
    if merge:
        decisions = [replace(d, merged=_merged(core, d.adapters, merge_method)) for d in decisions]
    return decisions


def _merged(core: HubCore, mixture: list[tuple[str, float]], method: str) -> str:
    """The catalog adapter computing ``mixture`` (made on first use, then found by its name)."""
    from adapterhub.app.merging import merge

    if len(mixture) == 1:
        return mixture[0][0]  # weight 1 on one adapter: that adapter itself
    exact = sorted((core.catalog.get(n).digest, round(w, 6)) for n, w in mixture)
    name = "routed/" + hashlib.sha256(json.dumps([method, exact]).encode()).hexdigest()[:24]
    if not core.catalog.exists(name):
        names, weights = zip(*mixture)
        merge(core, list(names), method=method, weights=list(weights), name=name, tags=["routed"],
              description="the routed mixture " + ", ".join(f"{n} {w:.3f}" for n, w in mixture))  # fmt: skip
    return name


def _predict(
    core: HubCore, names: list[str], model: BaseModel, texts: list[str], weights: torch.Tensor, label_texts: list[str]
) -> list[int]:
    """Which label text each query is most similar to, both embedded under the query's mixture."""
    from adapterhub.models import lora_attached

    adapters = [core.load(n) for n in names]
    out = []
    with lora_attached(model.model, adapters):
        for i, text in enumerate(texts):
            rows = weights[i : i + 1].repeat(1 + len(label_texts), 1)
            emb = model.encode([text, *label_texts], per_example=rows)
            out.append(int((emb[1:] @ emb[0]).argmax()))
    return out


def _predict_arrow(
    core: HubCore, names: list[str], model: BaseModel, texts: list[str], label_texts: list[str], top_k: int, temperature: float
) -> list[int]:
    """As ``_predict``, with Arrow routing every token of query and labels in every layer itself."""
    from adapterhub.route.arrow import arrow_attached

    adapters = [core.load(n) for n in names]
    protos = [_arrow_prototypes(core, n) for n in names]
    with arrow_attached(model.model, adapters, protos, top_k=top_k, temperature=temperature):
        emb = model.encode([*texts, *label_texts])
    queries, label_emb = emb[: len(texts)], emb[len(texts) :]
    return (queries @ label_emb.T).argmax(dim=-1).tolist()
