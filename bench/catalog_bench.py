"""How long listing a large catalog takes: ``Catalog.list()`` + ``to_dict`` + JSON, at 10k and 100k.

Run:
    python bench/catalog_bench.py                      # 10,000 and 100,000 rows, SQLite in a temp dir
    python bench/catalog_bench.py --sizes 0 10000 --repeat 5
    python bench/catalog_bench.py --url postgresql+psycopg://pgtest@127.0.0.1:55432/bench  # an EMPTY db

Each size gets a fresh catalog filled with ``Catalog.bulk_add`` (rows from ``synthetic_catalog.py``,
shaped like real LLM LoRA entries: a ~400-byte adapter_config.json, 2 tags, a task, a description).
Timings are the best of ``--repeat`` runs (a first, cold run is reported separately), on whatever
machine runs this; they are wall-clock seconds from ``time.perf_counter``.

Columns:
    open      Catalog(url) on the up-to-date database (the schema check)
    list      Catalog.list() -> list[AdapterRecord] (one SELECT, JSON decoded in one pass)
    to_dict   [r.to_dict() for r in records]
    json      json.dumps(dicts), compact (what ``adapterhub list --json`` prints to a pipe or file)
    json-cli  json.dumps(dicts, indent=2, default=str): what it prints to a terminal
    total     list + to_dict + json: the CLI-equivalent path without process start-up
    tag / query / page   list(tag=...), list(query=...), list(limit=50, offset=size//2)
    store     a whole child process: import adapterhub.store, open, list, to_dict, compact JSON to a
              pipe (the store's share of ``adapterhub list --json``; SQLite only)
    cli       the real ``adapterhub list --json`` in a subprocess (start-up included), if it runs
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthetic_catalog import synthetic_records

from adapterhub.store import Catalog

# The store's share of `adapterhub list --json`, as a child process (argv[1]: the catalog URL).
STORE_PROCESS = (
    "import json, sys\n"
    "from adapterhub.store import Catalog\n"
    "records = Catalog(sys.argv[1]).list()\n"
    "sys.stdout.write(json.dumps([r.to_dict() for r in records], default=str, separators=(',', ':')))\n"
)
COMPACT = (",", ":")


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(first run, best of the rest or the first, last result)."""
    times = []
    result = None
    for _ in range(repeat):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:] or times), result


def bench_size(n: int, url: str | None, repeat: int, home: Path, run_cli: bool) -> dict[str, Any]:
    db_url = url or f"sqlite:///{home / 'catalog.db'}"
    out: dict[str, Any] = {"rows": n}
    with Catalog(db_url) as catalog:
        start = time.perf_counter()
        catalog.bulk_add(synthetic_records(n))
        out["build"] = time.perf_counter() - start

    _, out["open"], _ = best_of(repeat, lambda: Catalog(db_url).close())
    with Catalog(db_url) as catalog:
        first, out["list"], records = best_of(repeat, catalog.list)
        out["list_cold"] = first
        assert len(records) == n
        _, out["to_dict"], dicts = best_of(repeat, lambda: [r.to_dict() for r in records])
        _, out["json"], text = best_of(repeat, lambda: json.dumps(dicts, default=str, separators=COMPACT))
        _, out["json_cli"], _ = best_of(repeat, lambda: json.dumps(dicts, indent=2, default=str))
        out["json_mb"] = len(text) / 1e6
        del records, dicts, text

        def cli_equivalent() -> int:
            return len(json.dumps([r.to_dict() for r in catalog.list()], default=str, separators=COMPACT))

        _, out["total"], _ = best_of(repeat, cli_equivalent)
        _, out["tag"], tagged = best_of(repeat, lambda: catalog.list(tag="t3"))
        _, out["query"], found = best_of(repeat, lambda: catalog.list(query="NUMBER 77"))
        _, out["page"], _ = best_of(repeat, lambda: catalog.list(limit=50, offset=n // 2))
        out["tag_rows"], out["query_rows"] = len(tagged), len(found)
    if url is None:
        out["db_mb"] = (home / "catalog.db").stat().st_size / 1e6

        def store_process() -> None:
            proc = subprocess.run([sys.executable, "-c", STORE_PROCESS, db_url], capture_output=True, check=True)
            assert len(json.loads(proc.stdout)) == n

        _, out["store"], _ = best_of(repeat, store_process)
    if run_cli and url is None:
        env = {**os.environ, "ADAPTERHUB_HOME": str(home)}
        env.pop("ADAPTERHUB_DATABASE_URL", None)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "adapterhub.cli.main", "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        ok = proc.returncode == 0 and len(json.loads(proc.stdout)) == n
        out["cli"] = elapsed if ok else None
        if not ok:
            out["cli_error"] = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1][:200]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", help="an EMPTY database URL to use instead of a temp SQLite file (one size only)")
    parser.add_argument("--no-cli", action="store_true", help="skip the `adapterhub list --json` subprocess")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    if args.url and len(args.sizes) != 1:
        parser.error("--url takes one --sizes value (the database must start empty)")

    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="adapterhub-bench-") as tmp:
            results.append(bench_size(n, args.url, args.repeat, Path(tmp), not args.no_cli))
        if not args.json:
            r = results[-1]
            cli = f"{r['cli']:.2f}" if r.get("cli") is not None else ("-" if "cli" not in r else "failed")
            store = f"{r['store']:.3f}" if "store" in r else "-"
            print(
                f"rows={r['rows']:>7}  build={r['build']:.2f}s  open={r['open']:.4f}s  "
                f"list={r['list']:.3f}s (cold {r['list_cold']:.3f})  "
                f"to_dict={r['to_dict']:.3f}s  json={r['json']:.3f}s  json-cli={r['json_cli']:.3f}s  "
                f"total={r['total']:.3f}s  tag={r['tag']:.3f}s ({r['tag_rows']})  "
                f"query={r['query']:.3f}s ({r['query_rows']})  page={r['page']:.4f}s  "
                f"json={r['json_mb']:.1f}MB  db={r.get('db_mb', 0):.1f}MB  store={store}s  cli={cli}s",
                flush=True,
            )
            if r.get("cli_error"):
                print(f"  cli failed: {r['cli_error']}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
