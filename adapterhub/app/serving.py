"""Inference over the catalog: which adapters a request names, and the batchers that answer it.

The engines (``adapterhub.serving``) compute; this service turns a request's ``model`` into a
mixture of catalog adapters per input and hands rows to the right base's batcher:

- an adapter name (``ns/a``; ``routed/<digest>`` mixtures stored by ``route --merge`` are adapters
  like any other), read-checked against the caller's token;
- ``base`` (the endpoint's default base) or a registered base's short name (``minilm``, ``smollm2``);
- ``mixture`` with ``{"ns/a": 0.7, "ns/b": 0.3}`` (the request's extra ``mixture`` field);
- ``auto``: each input routed by the catalog's router (``routing.route``, the hedged router, the
  best on text alone in docs/routing.md) among the adapters of that base the token may read.

Each base gets one engine (a private copy of the model), one adapter cache under a byte budget and
one batcher, made on first use and kept for the process (``core.inference``). Rows of one base
from any number of requests share a batch whatever adapters they use. Functions return a
``Future`` of the response, so an async server awaits it without holding a thread.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.route.base import MAX_QUERY_CHARS

if TYPE_CHECKING:
    from adapterhub.app.core import HubCore
    from adapterhub.store import TokenRecord

__all__ = ["SPECIAL_MODELS", "ServeLimits", "classify", "embeddings", "resolve_model", "serve_limits_from_env"]

AUTO_ROUTER = "hedged"
SPECIAL_MODELS = ("base", "auto", "mixture")
Row = tuple[str, tuple[tuple[str, float], ...]]  # text, (adapter digest, weight) per slot
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on one request and on the inference queue (``ADAPTERHUB_SERVE_*`` variables)."""

    max_inputs: int = 256  # texts (or prompts) per request
    max_input_chars: int = MAX_QUERY_CHARS
    max_labels: int = 64
    max_mixture: int = 16  # adapters in one mixture
    max_new_tokens: int = 512
    cache_bytes: int = 512 * 2**20  # adapter factors kept per base
    max_batch_rows: int = 32
    max_wait_s: float = 0.005
    max_queue_rows: int = 1024  # rows waiting per base; more are refused with 503


def serve_limits_from_env() -> ServeLimits:
    """Limits from ``ADAPTERHUB_SERVE_CACHE_MB``, ``_MAX_BATCH``, ``_BATCH_WAIT_MS``, ``_MAX_QUEUE``."""

    def number(name: str, default: float) -> float:
        raw = os.environ.get(name, "").strip()
        try:
            value = float(raw) if raw else default
        except ValueError:
            raise InvalidParameterError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or value < 0:
            raise InvalidParameterError(f"{name} must be a non-negative number, got {raw!r}")
        return value

    d = ServeLimits()
    return ServeLimits(
        cache_bytes=int(number("ADAPTERHUB_SERVE_CACHE_MB", d.cache_bytes / 2**20) * 2**20) or 1,
        max_batch_rows=max(1, int(number("ADAPTERHUB_SERVE_MAX_BATCH", d.max_batch_rows))),
        max_wait_s=number("ADAPTERHUB_SERVE_BATCH_WAIT_MS", d.max_wait_s * 1000) / 1000,
        max_queue_rows=max(1, int(number("ADAPTERHUB_SERVE_MAX_QUEUE", d.max_queue_rows))),
    )


@dataclass
class ServedBase:
    """One base's engine, adapter cache and batcher (made on first use)."""

    name: str
    kind: str
    engine: Any
    cache: Any
    batcher: Any
    names: dict[str, str] = field(default_factory=dict)  # digest -> a catalog name holding it


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` resolved to: the base and each input's mixture."""

    base: str
    label: str  # the ``model`` echoed in the response
    mixtures: list[tuple[tuple[str, float], ...]]  # per input: (adapter name, weight)
    routes: list[list[tuple[str, float]]] | None = None  # auto: the routed mixture of each input


def limits_of(core: HubCore) -> ServeLimits:
    """The process's serving limits (read from the environment once, on first use)."""
    if core.inference_limits is None:
        core.inference_limits = serve_limits_from_env()
    limits: ServeLimits = core.inference_limits
    return limits


# -- engines -----------------------------------------------------------------------------------------

_engine_lock = threading.Lock()
# ``auto`` routes on the catalog's shared base model: one request at a time, so that concurrent
# requests neither fit the same router twice nor share its tokenizer's mutable settings
_route_lock = threading.Lock()


def served_base(core: HubCore, base: str) -> ServedBase:
    """The engine, cache and batcher of a registered base (short name), made once per process."""
    with _engine_lock:
        found = core.inference.get(base)
        if found is not None:
            return found
        from adapterhub.models.bases import get_base
        from adapterhub.serving import AdapterCache, Batcher, served_adapter

        spec = get_base(base)
        limits = limits_of(core)
        if spec.kind == "encoder":
            from adapterhub.serving.encoder import EncoderEngine

            engine: Any = EncoderEngine(spec.load())  # type: ignore[arg-type]
        else:
            from adapterhub.serving.causal import CausalEngine

            engine = CausalEngine(spec.load())  # type: ignore[arg-type]
        served = ServedBase(spec.name, spec.kind, engine, None, None)

        def load(digest: str) -> Any:
            from adapterhub.app.ingest import load as load_adapter

            return served_adapter(digest, load_adapter(core, served.names[digest]), engine.linears, engine.dtype)

        served.cache = AdapterCache(load, limits.cache_bytes)
        run = _encoder_batch(served) if spec.kind == "encoder" else _causal_batch(served)
        served.batcher = Batcher(run, max_rows=limits.max_batch_rows, max_wait_s=limits.max_wait_s,
                                 max_queue=limits.max_queue_rows, name=f"adapterhub-serve-{spec.name}")
        core.inference[base] = served
        return served


def _encoder_batch(served: ServedBase) -> Callable[[list[Row]], list[Any]]:
    def run(rows: list[Row]) -> list[Any]:
        keys = [d for _, mixture in rows for d, _ in mixture]
        with served.cache.pinned(keys) as adapters:
            mixtures = [[(adapters[d], w) for d, w in mixture] for _, mixture in rows]
            return list(served.engine.embed([t for t, _ in rows], mixtures))

    return run


def _causal_batch(served: ServedBase) -> Callable[[list[Any]], list[Any]]:
    from dataclasses import replace

    def run(rows: list[Any]) -> list[Any]:  # (GenerationRow with mixture of (digest, weight))
        keys = [d for row in rows for d, _ in row.mixture]
        with served.cache.pinned(keys) as adapters:
            ready = [replace(row, mixture=[(adapters[d], w) for d, w in row.mixture]) for row in rows]
            return list(served.engine.generate(ready))

    return run


def then(future: Future[_T], fn: Callable[[_T], _R]) -> Future[_R]:
    """A future of ``fn(result)`` (errors of either pass through)."""
    out: Future[_R] = Future()

    def done(f: Future[_T]) -> None:
        try:
            out.set_result(fn(f.result()))
        except BaseException as exc:
            out.set_exception(exc)

    future.add_done_callback(done)
    return out


# -- resolving a request's model -----------------------------------------------------------------------

def _base_of(core: HubCore, name: str) -> str:
    from adapterhub.models.bases import find_base

    record = core.catalog.get(name)
    spec = find_base(record.base_model)
    if spec is None:
        raise IncompatibleAdaptersError(f"'{name}' is on base {record.base_model!r}, which this server does not serve")
    return spec.name


def _check_kind(base: str, kind: str, what: str) -> None:
    from adapterhub.models.bases import get_base

    spec = get_base(base)
    if spec.kind != kind:
        wanted = "an encoder (minilm, mpnet)" if kind == "encoder" else "a causal LM (smollm2)"
        raise IncompatibleAdaptersError(f"{what} is on {base} ({spec.kind}); this endpoint needs {wanted}")


def _parse_mixture(mixture: Any, limits: ServeLimits) -> list[tuple[str, float]]:
    if not isinstance(mixture, Mapping) or not mixture:
        raise InvalidParameterError('a mixture is an object of adapter names to weights, e.g. {"ns/a": 0.7, "ns/b": 0.3}')
    if len(mixture) > limits.max_mixture:
        raise InvalidParameterError(f"a mixture may name at most {limits.max_mixture} adapters, got {len(mixture)}")
    out = []
    for name, weight in mixture.items():
        if not isinstance(name, str) or isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise InvalidParameterError("mixture weights must be numbers keyed by adapter names")
        if not math.isfinite(weight) or abs(weight) > 100:
            raise InvalidParameterError(f"the weight of '{name}' must be a finite number within ±100, got {weight}")
        out.append((name, float(weight)))
    if all(w == 0 for _, w in out):
        raise InvalidParameterError("every weight of the mixture is 0; give at least one non-zero weight")
    return out


def _auto_inventory(core: HubCore, token: TokenRecord | None, base: str) -> list[str]:
    """The adapters ``auto`` routes among: on ``base``, readable with ``token``, with example inputs,
    not stored mixtures."""
    from adapterhub.app.access import readable
    from adapterhub.app.examples import stored_examples
    from adapterhub.models.bases import find_base

    def on_base(record: Any) -> bool:
        spec = find_base(record.base_model)
        return spec is not None and spec.name == base and "routed" not in record.tags

    records = readable(core, token, [r for r in core.catalog.list() if on_base(r)], lambda r: r.name)
    names = [r.name for r in records if stored_examples(core, r.name) is not None]
    if not names:
        raise InvalidParameterError(f"model 'auto' routes among {base} adapters with example inputs; there are none")
    return names


def resolve_model(
    core: HubCore,
    token: TokenRecord | None,
    model: str,
    texts: Sequence[str],
    *,
    kind: str,
    default_base: str,
    mixture: Any = None,
    labels: Sequence[str] | None = None,
) -> Target:
    """Resolve ``model`` (and ``mixture``) for ``texts`` on an endpoint of ``kind``.

    Raises:
        InvalidParameterError: a malformed mixture, ``mixture`` with another model than "mixture".
        RepoNotFoundError: an unknown adapter or one the token may not read (404).
        IncompatibleAdaptersError: adapters of another kind of base, or of different bases.
    """
    from adapterhub.app.access import authorize_read
    from adapterhub.models.bases import BASE_NAMES

    limits = limits_of(core)
    if not isinstance(model, str) or not model:
        raise InvalidParameterError("'model' must name an adapter, 'base', 'auto' or 'mixture'")
    if mixture is not None and model != "mixture":
        raise InvalidParameterError("a request with a 'mixture' names model 'mixture'")
    if model in ("base", *BASE_NAMES):
        base = default_base if model == "base" else model
        _check_kind(base, kind, f"model '{model}'")
        return Target(base, model, [()] * len(texts))
    if model == "mixture":
        if mixture is None:
            raise InvalidParameterError("model 'mixture' needs the 'mixture' field: {adapter name: weight}")
        parts = _parse_mixture(mixture, limits)
        bases = set()
        for name, _ in parts:
            authorize_read(core, token, name)
            bases.add(_base_of(core, name))
        if len(bases) > 1:
            raise IncompatibleAdaptersError(f"the mixture's adapters are on different bases ({', '.join(sorted(bases))})")
        base = bases.pop()
        _check_kind(base, kind, "the mixture")
        return Target(base, model, [tuple(parts)] * len(texts))
    if model == "auto":
        from adapterhub.app.routing import route

        names = _auto_inventory(core, token, default_base)
        with _route_lock:
            decisions = route(core, list(texts), router=AUTO_ROUTER, among=names, labels=labels or None)
        routes = [d.adapters for d in decisions]
        return Target(default_base, model, [tuple(r) for r in routes], routes)
    authorize_read(core, token, model)
    base = _base_of(core, model)
    _check_kind(base, kind, f"'{model}'")
    return Target(base, model, [((model, 1.0),)] * len(texts))


def batch_rows(core: HubCore, served: ServedBase, target: Target, texts: Sequence[str]) -> list[Row]:
    """Rows for the batcher: names turned into digests (the cache's keys).

    Each adapter is loaded into the cache here, in the request's thread: a load that fails (a
    damaged blob, an adapter whose shapes do not fit the base) fails this request alone, not the
    batch it would have joined, and the batch thread seldom waits for a load.
    """
    digests: dict[str, str] = {}
    for mixture in target.mixtures:
        for name, _ in mixture:
            if name not in digests:
                digests[name] = core.catalog.get(name).digest
                served.names.setdefault(digests[name], name)
                served.cache.get(digests[name])
    return [(text, tuple((digests[n], w) for n, w in mix)) for text, mix in zip(texts, target.mixtures)]


def check_texts(texts: Any, limits: ServeLimits, what: str = "input") -> list[str]:
    """``input`` as a list of non-empty strings within the limits (a string is one input)."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise InvalidParameterError(f"'{what}' must be a string or a non-empty list of strings")
    if len(texts) > limits.max_inputs:
        raise InvalidParameterError(f"at most {limits.max_inputs} {what}s per request, got {len(texts)}")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise InvalidParameterError(f"every {what} must be non-empty text (token ids are not accepted)")
        if len(text) > limits.max_input_chars:
            raise InvalidParameterError(f"an {what} may be at most {limits.max_input_chars} characters, got {len(text)}")
    return list(texts)


def _usage(served: ServedBase, texts: Sequence[str]) -> dict[str, int]:
    limit = getattr(served.engine, "max_length", None)
    counts = served.engine.token_counts(texts)
    used = sum(min(c, limit) if limit else c for c in counts)
    return {"prompt_tokens": used, "total_tokens": used}


def _routes_json(target: Target) -> list[list[dict[str, Any]]] | None:
    if target.routes is None:
        return None
    return [[{"name": n, "weight": round(w, 6)} for n, w in r] for r in target.routes]


# -- endpoints -------------------------------------------------------------------------------------------

def embeddings(
    core: HubCore, token: TokenRecord | None, model: str, texts: Any, *, mixture: Any = None
) -> Future[dict[str, Any]]:
    """Embeddings of ``texts`` under ``model`` (OpenAI ``/v1/embeddings`` response), as a Future.

    Blocks while it resolves names (catalog reads, routing for ``auto``); the forward pass runs on
    the base's batcher with whatever other requests arrived together.

    Raises:
        InvalidParameterError, RepoNotFoundError, IncompatibleAdaptersError: see ``resolve_model``.
        OverloadedError: the base's queue is full (503; retry).
    """
    texts = check_texts(texts, limits_of(core))
    target = resolve_model(core, token, model, texts, kind="encoder", default_base="minilm", mixture=mixture)
    served = served_base(core, target.base)
    usage = _usage(served, texts)

    def response(vectors: list[Any]) -> dict[str, Any]:
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        out: dict[str, Any] = {"object": "list", "data": data, "model": target.label, "usage": usage}
        if target.routes is not None:
            out["routes"] = _routes_json(target)
        return out

    return then(served.batcher.submit(batch_rows(core, served, target, texts)), response)


def classify(
    core: HubCore, token: TokenRecord | None, model: str, texts: Any, labels: Any, *, mixture: Any = None
) -> Future[dict[str, Any]]:
    """Label scores for each text: cosine similarity of the text and each candidate label, both
    embedded under the text's mixture (the bed's label-description protocol), as a Future.

    ``auto`` routes with the labels too: a label set that is exactly one adapter's task picks it.
    """
    limits = limits_of(core)
    texts = check_texts(texts, limits)
    labels = check_texts(labels, limits, what="label")
    if len(labels) < 2 or len(labels) > limits.max_labels or len(set(labels)) != len(labels):
        raise InvalidParameterError(f"give 2 to {limits.max_labels} distinct candidate labels, got {len(labels)}")
    target = resolve_model(core, token, model, texts, kind="encoder", default_base="minilm", mixture=mixture,
                           labels=labels)
    served = served_base(core, target.base)
    expanded = [t for text in texts for t in (text, *labels)]
    mixtures = [m for m in target.mixtures for _ in range(1 + len(labels))]
    rows = batch_rows(core, served, Target(target.base, target.label, mixtures), expanded)
    usage = _usage(served, expanded)

    def response(vectors: list[Any]) -> dict[str, Any]:
        import torch

        data = []
        for i in range(len(texts)):
            block = torch.stack(vectors[i * (1 + len(labels)) : (i + 1) * (1 + len(labels))])
            sims = (block[1:] @ block[0]).tolist()
            ranked = sorted(zip(labels, sims), key=lambda p: -p[1])
            data.append({"object": "classification", "index": i, "label": ranked[0][0],
                         "scores": [{"label": label, "score": round(s, 6)} for label, s in ranked]})
        out: dict[str, Any] = {"object": "list", "data": data, "model": target.label, "usage": usage}
        if target.routes is not None:
            out["routes"] = _routes_json(target)
        return out

    return then(served.batcher.submit(rows), response)
