"""How fast the web pages answer on the demo catalog (issue 17: < 200 ms p50 per page).

Run:

    python bench/web_bench.py                 # table of p50/p99 per page
    python bench/web_bench.py --n 100 --json web_bench.json

The catalog is the demo's: the shipped task adapters of ``examples/`` imported as ``adapterhub
demo`` imports them (``library/<task>``, with their recorded metrics), plus two merges of all of
them (``demo/linear-avg``, exact; ``demo/lego-k8``), so adapter pages have metrics with baselines
and a lineage graph with seven parents. The server is ``create_app`` under uvicorn on loopback in
this process, and each page is fetched ``--n`` times over HTTP (after 3 warm-up requests) with
one keep-alive ``httpx`` client, signed out; latency is wall clock per request (``perf_counter``),
client and server on the same host.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PAGES = {
    "catalog": "/ui/",
    "catalog search": "/ui/?q=wn",
    "catalog by metric": "/ui/?sort=accuracy",
    "adapter (library)": "/ui/adapters/library/wn-pos",
    "adapter (merge, lineage)": "/ui/adapters/demo/lego-k8",
    "compare (3)": "/ui/compare?a=library/wn-pos&a=library/wn-animal-class&a=demo/lego-k8",
    "compose": "/ui/compose",
    "sign in": "/ui/signin",
}
TARGET_P50_MS = 200.0


def demo_catalog(home: Path) -> Any:
    """A hub at ``home`` holding the demo catalog (see the module docstring); returns the facade."""
    from adapterhub.app import AdapterHub
    from adapterhub.app.demo import _import_library
    from adapterhub.eval.library import META_NAME, find_library

    hub = AdapterHub(home)
    folder = find_library(None)
    tasks = sorted(p.parent.name for p in folder.glob(f"*/{META_NAME}"))
    names = _import_library(hub, folder, tasks, lambda _msg: None)
    hub.merge(names, method="linear", weights=[1 / len(names)] * len(names), name="demo/linear-avg")
    hub.merge(names, method="lego", k=8, name="demo/lego-k8")
    return hub


@contextmanager
def serving(hub: Any) -> Iterator[str]:
    """``create_app(hub)`` under uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    from adapterhub.server import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(hub), host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def measure(url: str, n: int) -> dict[str, dict[str, float]]:
    """p50/p99/mean (ms) and bytes for each page of ``PAGES``."""
    import httpx

    results: dict[str, dict[str, float]] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for label, path in PAGES.items():
            for _ in range(3):
                client.get(path).raise_for_status()
            times = []
            for _ in range(n):
                start = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
            times.sort()
            results[label] = {"p50_ms": statistics.median(times), "p99_ms": times[min(n - 1, int(0.99 * n))],
                              "mean_ms": statistics.fmean(times), "bytes": len(response.content), "n": n}
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'page':<26} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'bytes':>8}", "-" * 62]
    for label, r in results.items():
        lines.append(f"{label:<26} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['mean_ms']:>8.1f} {int(r['bytes']):>8}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50, help="requests per page (default 50)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adapterhub-web-bench-") as tmp:
        started = time.perf_counter()
        hub = demo_catalog(Path(tmp) / "home")
        built = time.perf_counter() - started
        try:
            with serving(hub) as url:
                results = measure(url, args.n)
        finally:
            hub.close()
    print(f"demo catalog: {len(PAGES)} pages, {args.n} requests each (catalog built in {built:.1f} s)")
    print(table(results))
    slow = [label for label, r in results.items() if r["p50_ms"] >= TARGET_P50_MS]
    print(f"target p50 < {TARGET_P50_MS:.0f} ms: {'met by every page' if not slow else 'MISSED by ' + ', '.join(slow)}")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "pages": PAGES, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
