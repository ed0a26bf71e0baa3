"""The demo's serving section: many requests for different adapters answered in shared batches.

Through the facade, as ``adapterhub serve``'s ``/v1/embeddings`` does (the server adds only HTTP):
a stream of requests, each for one of the library adapters, a mixture of two, or ``auto``, is
submitted from several threads at once. The batcher puts requests for different adapters in one
base forward pass. The same stream on the bare base model is the speed limit. One request is
checked against the same request served alone. The benchmark with 1-512 adapters, PEFT's mixed
batch and one adapter at a time is ``bench/serve_bench.py`` (``docs/serving.md``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from adapterhub.app.hub import AdapterHub

REQUESTS = 128
CLIENTS = 32


def _stream(hub: AdapterHub, models: Sequence[tuple[str, Any]], texts: Sequence[str]) -> tuple[float, list[Any]]:
    """Seconds to answer one request per text (model ``models[i % len]``) from ``CLIENTS`` threads."""

    def one(i: int) -> Any:
        model, mixture = models[i % len(models)]
        return hub.serve_embeddings(None, model, [texts[i]], mixture=mixture).result()

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(one, range(len(texts))))
    return time.perf_counter() - started, answers


def serve_section(hub: AdapterHub, names: Sequence[str], texts: Sequence[str],
                  say: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Serve ``REQUESTS`` embedding requests spread over ``names``, two mixtures and ``auto``."""
    import torch

    texts = [texts[i % len(texts)] for i in range(REQUESTS)]
    models: list[tuple[str, Any]] = [(n, None) for n in names]
    models += [("mixture", {names[0]: 0.5, names[1]: 0.5}), ("mixture", {names[-1]: 0.7, names[0]: 0.3}), ("auto", None)]
    # build the engine and fit the auto router first: one-off costs, not part of the timing
    hub.serve_embeddings(None, "auto", texts[:1]).result()
    base_seconds, _ = _stream(hub, [("base", None)], texts)
    batcher = hub.inference["minilm"].batcher
    before = (batcher.stats.batches, batcher.stats.rows)
    seconds, answers = _stream(hub, models, texts)
    batches = batcher.stats.batches - before[0]
    alone = hub.serve_embeddings(None, models[1][0], [texts[1]]).result()
    diff = (torch.tensor(alone["data"][0]["embedding"]) - torch.tensor(answers[1]["data"][0]["embedding"])).abs().max()
    section = {
        "requests": REQUESTS, "models": len(models), "adapters": len(names), "batches": batches,
        "rows_per_batch": round((batcher.stats.rows - before[1]) / max(batches, 1), 1),
        "requests_per_s": round(REQUESTS / seconds, 1), "base_requests_per_s": round(REQUESTS / base_seconds, 1),
        "max_diff_vs_alone": float(diff),
    }
    say(f"serve: {REQUESTS} embedding requests over {len(names)} adapters, 2 mixtures and auto in {batches} shared "
        f"batches ({section['rows_per_batch']} inputs each): {section['requests_per_s']} requests/s against "
        f"{section['base_requests_per_s']} on the bare base; a batched answer equals the request served alone "
        f"to {section['max_diff_vs_alone']:.1e}")
    return section
