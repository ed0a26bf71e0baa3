"""1,000 concurrent ``/v1/embeddings`` requests against ``adapterhub serve --workers 2``.

The serving requirement: under a burst far past what the server can compute, no request gets a
500; each is answered (200) or refused (429 from the rate limit with ``Retry-After``, 503 from the
bounded inference queue), malformed requests get a 4xx in OpenAI's error shape, and ``/v1/health``
keeps answering throughout. The server is a real subprocess on a fresh home holding two shipped
MiniLM adapters; a small queue and rate limit make both kinds of refusal happen.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from adapterhub.app import AdapterHub
from adapterhub.eval.library import library_dir
from tests.helpers import free_port, wait_until_serving

REQUESTS = 1000
DIM = 384  # MiniLM's embedding size
HEALTH_BOUND_S = 5.0
ADAPTERS = ("lib/pos", "lib/topic")


def request_body(i: int) -> tuple[str, object]:
    """The ``i``-th request: (kind, JSON body); kinds ``valid``, ``malformed`` and ``unknown``."""
    texts = [f"request {i} text {j}: the cat sat on the mat" for j in range(1 + i % 3)]
    slot = i % 25
    if slot == 0:
        return "malformed", {"model": ADAPTERS[0]}  # no input
    if slot == 1:
        return "malformed", {"model": ADAPTERS[1], "input": 5}
    if slot == 2:
        return "malformed", {"model": "mixture", "input": texts}  # no mixture field
    if slot == 3:
        return "unknown", {"model": "lib/no-such-adapter", "input": texts}
    if slot == 4:
        return "unknown", {"model": "mixture", "input": texts, "mixture": {"lib/missing": 1.0}}
    model = ("lib/pos", "lib/topic", "base", "mixture")[i % 4]
    body: dict[str, object] = {"model": model, "input": texts if i % 2 else texts[0]}
    if model == "mixture":
        body["mixture"] = {"lib/pos": 0.7, "lib/topic": 0.3}
    return "valid", body


def inputs_of(body: dict) -> int:
    return 1 if isinstance(body["input"], str) else len(body["input"])


def is_openai_error(response: httpx.Response) -> bool:
    error = response.json().get("error")
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error) and bool(error["message"])


def check(kind: str, body: object, response: httpx.Response) -> str | None:
    """What is wrong with ``response`` to ``body`` (None: nothing)."""
    status = response.status_code
    if status >= 500 and status != 503:
        return f"{status} for {body}: {response.text[:300]}"
    if status == 200:
        if kind != "valid":
            return f"200 for the {kind} request {body}"
        payload = response.json()
        data = payload.get("data", [])
        if len(data) != inputs_of(body) or payload.get("model") != body["model"]:  # type: ignore[index]
            return f"{len(data)} embeddings of model {payload.get('model')} for {body}"
        for item in data:
            vector = item["embedding"]
            if len(vector) != DIM or not all(isinstance(v, float) for v in vector):
                return f"an embedding of {len(vector)} values for {body}"
        return None
    if not is_openai_error(response):
        return f"{status} without an OpenAI error body for {body}: {response.text[:300]}"
    if status == 429:
        return None if response.headers.get("retry-after", "").isdigit() else f"429 without Retry-After for {body}"
    if status == 503:
        if kind == "malformed" or response.json()["error"]["type"] != "overloaded_error":
            return f"503 for {body}: {response.text[:300]}"
        return None
    if kind == "valid":
        return f"{status} for the valid request {body}: {response.text[:300]}"
    allowed = {422} if kind == "malformed" else {404}
    return None if status in allowed else f"{status} for the {kind} request {body}: {response.text[:300]}"


def poll_health(url: str, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    """GET /v1/health every 100 ms until ``stop``; each latency, or what went wrong."""
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                response = client.get(f"{url}/v1/health")
                if response.status_code != 200 or response.json() != {"status": "ok"}:
                    failures.append(f"health answered {response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as exc:
                failures.append(f"health failed: {type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - start)
            stop.wait(0.1)


async def fire(url: str) -> list[tuple[str, object, httpx.Response | BaseException]]:
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(90, pool=90)) as client:

        async def one(i: int) -> tuple[str, object, httpx.Response | BaseException]:
            kind, body = request_body(i)
            try:
                if i == 7:  # not JSON at all
                    kind, body = "malformed", b"{not json"
                    return kind, body, await client.post("/v1/embeddings", content=body,
                                                         headers={"content-type": "application/json"})
                return kind, body, await client.post("/v1/embeddings", json=body)
            except httpx.HTTPError as exc:
                return kind, body, exc

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


@pytest.fixture
def server(tmp_path: Path):
    home = tmp_path / "home"
    with AdapterHub(home) as hub:
        hub.add(library_dir() / "wn_pos", "lib/pos", task="wn_pos")
        hub.add(library_dir() / "chat_topic", "lib/topic", task="chat_topic")
    port = free_port()
    env = {**os.environ, "ADAPTERHUB_HOME": str(home), "ADAPTERHUB_SERVE_MAX_QUEUE": "16", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapterhub.cli.main", "serve", "--workers", "2", "--port", str(port),
         "--rate-limit", "40", "--max-batch", "8", "--batch-wait-ms", "5", "--log-level", "warning"],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/v1/health", proc)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def warm_up(url: str) -> None:
    """Load the model in both workers (each connection may reach either) before the burst."""

    def one() -> None:
        assert httpx.post(f"{url}/v1/embeddings", json={"model": "lib/pos", "input": "warm"}, timeout=120).status_code == 200

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)


@pytest.mark.slow
def test_a_thousand_concurrent_requests_on_two_workers(server):
    url, proc = server
    warm_up(url)
    time.sleep(1.5)  # the rate buckets refill after the warm-up
    stop, latencies, health_failures = threading.Event(), [], []
    poller = threading.Thread(target=poll_health, args=(url, stop, latencies, health_failures), daemon=True)
    poller.start()
    start = time.perf_counter()
    try:
        results = asyncio.run(fire(url))
    finally:
        elapsed = time.perf_counter() - start
        stop.set()
        poller.join(timeout=60)

    problems, counts = [], Counter()
    for kind, body, response in results:
        if isinstance(response, BaseException):
            problems.append(f"no answer to {body}: {type(response).__name__}: {response}")
            counts["no answer"] += 1
            continue
        status = response.status_code
        counts[str(status) if status in (200, 429, 503) else "4xx" if status < 500 else "5xx"] += 1
        problem = check(kind, body, response)
        if problem:
            problems.append(problem)
    p50 = statistics.median(latencies) if latencies else float("nan")
    print(f"\n{REQUESTS} requests in {elapsed:.1f} s: "
          + ", ".join(f"{k}: {counts[k]}" for k in ("200", "429", "503", "4xx", "5xx", "no answer"))
          + f"; health polls {len(latencies)}, p50 {p50 * 1000:.0f} ms, max {max(latencies, default=0) * 1000:.0f} ms")

    assert problems[:10] == [] and len(problems) == 0
    assert counts["5xx"] == 0 and counts["no answer"] == 0
    assert sum(counts.values()) == REQUESTS
    assert counts["200"] > 0 and counts["429"] + counts["503"] > 0
    assert health_failures == [] and len(latencies) >= 3
    assert max(latencies) < HEALTH_BOUND_S
    assert proc.poll() is None  # the server is still up
    deadline = time.monotonic() + 30
    while True:  # and answers a fresh request once the rate bucket refilled
        fresh = httpx.post(f"{url}/v1/embeddings", json={"model": "lib/topic", "input": ["after", "load"]}, timeout=60)
        if fresh.status_code not in (429, 503) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert fresh.status_code == 200, fresh.text
    assert [len(item["embedding"]) for item in fresh.json()["data"]] == [DIM, DIM]
    assert httpx.get(f"{url}/v1/health", timeout=10).status_code == 200
