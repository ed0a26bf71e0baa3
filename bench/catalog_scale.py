"""A catalog of a million entries on PostgreSQL: search and page latency, and ``adapterhub list``.

Run (a PostgreSQL server's admin URL; a scratch database ``scalebench`` is created on it for each
size and dropped afterwards):

    python bench/catalog_scale.py --url postgresql+psycopg://pgtest@127.0.0.1:55432/postgres
    python bench/catalog_scale.py --url ... --sizes 10000 100000 --json out.json

For each size: a fresh database migrated to the newest schema; synthetic entries shaped like a team's
LLM LoRAs (namespaces, model-task names, 40 tasks, 14 base models, 2-4 of 60 tags, a one-line
description) loaded with ``COPY`` (the non-constraint indices are dropped for the load and rebuilt
after, as a bulk import would); ``VACUUM ANALYZE``. Then, through the store's own code
(``store.paging.list_page`` in a ``Catalog.reading()`` transaction, records built as the server
builds them):

    search   200 first pages (50 rows) of searches: a name fragment, a task, a tag, a base model,
             free text (common words, rare words, a word that matches nothing), mixed
    page     200 pages of the whole listing: the first page and deep pages (a cursor at a random
             name, then the page after it)
    list     the whole ``adapterhub list --limit 50 --json`` process (start-up, import, open,
             one page, JSON), ``ADAPTERHUB_DATABASE_URL`` at the catalog; median of 5 runs

Latencies are p50/p99 in milliseconds, wall clock (``time.perf_counter``) on whatever machine runs
this, client and server on the same host. ``run_catalog_bench`` returns a flat JSON-able dict
(``bench/scale_bench.py`` imports it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from adapterhub.store import Catalog
from adapterhub.store.paging import encode_cursor, list_page
from adapterhub.store.reads import AdapterFilter

SCRATCH_DB = "scalebench"
PAGE = 50
GOALS_MS = {"search_p50_ms": 50.0, "page_p50_ms": 20.0}  # issue 16, on the 1M PostgreSQL catalog

ORGS = [
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell", "cyberdyne",
    "soylent", "aperture", "blackmesa", "massive", "vandelay", "pied-piper", "oscorp", "gringotts", "nakatomi",
    "monarch",
]
BASES = [
    "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct",
    "mistralai/Mistral-7B-v0.3", "mistralai/Mixtral-8x7B-v0.1", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-72B", "google/gemma-2-2b", "google/gemma-3-270m", "HuggingFaceTB/SmolLM2-135M-Instruct",
    "microsoft/phi-3-mini-4k-instruct", "sentence-transformers/all-MiniLM-L6-v2", "bert-base-uncased",
]
TASKS = [
    "text-to-sql", "summarization", "translation-en-de", "translation-en-fr", "translation-en-ja", "chat",
    "code-completion", "code-review", "question-answering", "sentiment", "ner", "classification",
    "retrieval", "reranking", "math", "reasoning", "function-calling", "json-extraction", "tool-use",
    "medical-qa", "legal-qa", "finance-qa", "customer-support", "email-drafting", "paraphrase",
    "grammar-correction", "story-writing", "poetry", "dialogue-safety", "toxicity", "topic-labels",
    "intent-detection", "slot-filling", "table-qa", "captioning", "ocr-correction", "log-parsing",
    "regex-writing", "shell-commands", "unit-tests",
]
TAGS = [
    "sql", "chat", "code", "python", "java", "rust", "go", "typescript", "medical", "legal", "finance",
    "support", "en", "de", "fr", "ja", "zh", "es", "multilingual", "instruct", "dpo", "sft", "rlhf",
    "qlora", "dora", "rslora", "production", "staging", "experimental", "deprecated", "internal",
    "public", "eval-passed", "eval-failed", "small", "large", "long-context", "safety", "math", "reasoning",
    "agents", "tools", "json", "retrieval", "rag", "summaries", "translation", "style", "formal", "casual",
    "healthcare", "insurance", "retail", "gaming", "education", "science", "biology", "chemistry", "physics",
    "astronomy",
]
WORDS = [
    "fast", "tiny", "robust", "distilled", "merged", "domain", "adapted", "careful", "concise", "verbose",
    "friendly", "strict", "creative", "precise", "multilingual", "bilingual", "clinical", "contract",
    "invoice", "schema", "warehouse", "dashboard", "ticket", "chatbot", "assistant", "planner", "critic",
]
COPY_COLUMNS = (
    "name, base_model, rank, alpha, ranks, target_modules, task, tags, description, digest, size, config,"
    " source_repo, source_revision, revision, created"
)
CONFIG = json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]})


def _row(i: int, rng: random.Random) -> tuple[str, str, str, list[str], str]:
    """(name, base model, task, tags, description) of synthetic entry ``i``; names are unique."""
    task = TASKS[rng.randrange(len(TASKS))]
    base = BASES[rng.randrange(len(BASES))]
    word = WORDS[rng.randrange(len(WORDS))]
    name = f"{ORGS[i % len(ORGS)]}/{base.split('/')[-1].lower()}-{task}-{word}-{i:07d}"
    tags = rng.sample(TAGS, rng.randint(2, 4))
    description = f"A {word} {task.replace('-', ' ')} LoRA for {base}, trained on {rng.choice(WORDS)} data (run {i})"
    return name, base, task, tags, description


def _copy_chunks(n: int, seed: int = 0, chunk: int = 20_000) -> Iterator[tuple[str, str]]:
    """COPY text for ``adapters`` and ``adapter_tags`` (ids 1..n), ``chunk`` rows at a time.

    Nothing generated contains a tab, newline or backslash, so no COPY escaping is needed.
    """
    rng = random.Random(seed)
    for start in range(0, n, chunk):
        adapters, tags = io.StringIO(), io.StringIO()
        for i in range(start, min(n, start + chunk)):
            name, base, task, tag_list, description = _row(i, rng)
            digest = f"{i:064x}"
            adapters.write(
                f"{name}\t{base}\t16\t32.0\t\\N\t[\"q_proj\", \"v_proj\"]\t{task}\t{json.dumps(tag_list)}\t"
                f"{description}\t{digest}\t{10_000_000 + i}\t{CONFIG}\t\\N\t\\N\t{i:040x}\t2026-01-01 00:00:00+00\n"
            )
            for tag in tag_list:
                tags.write(f"{i + 1}\t{tag}\n")
        yield adapters.getvalue(), tags.getvalue()


def _admin_sql(admin_url: str, sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def load(url: str, n: int) -> float:
    """Fill the (freshly migrated) catalog at ``url`` with ``n`` entries; returns seconds."""
    start = time.perf_counter()
    with Catalog(url) as catalog:
        raw = catalog.engine.raw_connection()
        try:
            conn = raw.driver_connection
            assert conn is not None
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT indexname, indexdef FROM pg_indexes i WHERE tablename IN ('adapters', 'adapter_tags')"
                    " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
                )
                indices = cur.fetchall()
                for name, _ in indices:
                    cur.execute(f'DROP INDEX "{name}"')
                with cur.copy(f"COPY adapters ({COPY_COLUMNS}) FROM STDIN") as adapters_copy:
                    tag_text = io.StringIO()
                    for adapters_chunk, tags_chunk in _copy_chunks(n):
                        adapters_copy.write(adapters_chunk)
                        tag_text.write(tags_chunk)
                with cur.copy("COPY adapter_tags (adapter_id, tag) FROM STDIN") as tags_copy:
                    tags_copy.write(tag_text.getvalue())
                cur.execute("SET maintenance_work_mem = '1GB'")
                for _, definition in indices:
                    cur.execute(definition)
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
        finally:
            raw.close()
    return time.perf_counter() - start


def _searches(n: int, rng: random.Random) -> list[AdapterFilter]:
    """200 searches: the kinds a person types, common and rare."""
    kinds: list[Callable[[], AdapterFilter]] = [
        lambda: AdapterFilter(query=f"{rng.randrange(n):07d}"),  # a name fragment: one entry
        lambda: AdapterFilter(query=f"{rng.choice(ORGS)}/"),  # a namespace
        lambda: AdapterFilter(task=rng.choice(TASKS)),
        lambda: AdapterFilter(tag=rng.choice(TAGS)),
        lambda: AdapterFilter(base_model=rng.choice(BASES)),
        lambda: AdapterFilter(query=rng.choice(WORDS)),  # common free text
        lambda: AdapterFilter(query=rng.choice(TASKS).replace("-", " ")),  # free text in descriptions
        lambda: AdapterFilter(query=f"run {rng.randrange(n)})"),  # rare free text
        lambda: AdapterFilter(query="no-such-adapter-anywhere"),  # matches nothing
        lambda: AdapterFilter(task=rng.choice(TASKS), tag=rng.choice(TAGS)),  # combined
    ]
    return [kinds[i % len(kinds)]() for i in range(200)]


def _pages(n: int, rng: random.Random) -> list[str | None]:
    """200 cursors: the first page, and deep pages at random positions."""
    out: list[str | None] = [None] * 20
    for _ in range(180):
        name = _row(rng.randrange(n), random.Random(0))[0]  # a plausible position (need not exist)
        out.append(encode_cursor(name))
    rng.shuffle(out)
    return out


def _timed(catalog: Catalog, work: list[tuple[AdapterFilter, str | None]]) -> list[float]:
    times = []
    for where, cursor in work:
        start = time.perf_counter()
        with catalog.reading() as reader:
            list_page(reader, where, limit=PAGE, cursor=cursor)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _list_process(url: str, runs: int = 5) -> float:
    exe = shutil.which("adapterhub", path=str(Path(sys.executable).parent)) or "adapterhub"
    times = []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ADAPTERHUB_HOME": home, "ADAPTERHUB_DATABASE_URL": url}
        for _ in range(runs):
            start = time.perf_counter()
            proc = subprocess.run([exe, "list", "--limit", "50", "--json"], env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if proc.returncode != 0 or len(json.loads(proc.stdout)["items"]) != PAGE:
                raise RuntimeError(f"adapterhub list failed: {proc.stderr.strip()[-300:]}")
    return statistics.median(times)


def bench_size(admin_url: str, n: int, *, log: Callable[[str], None] = print) -> dict[str, float]:
    """One size on a fresh scratch database (created, dropped after)."""
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(database=SCRATCH_DB).render_as_string(hide_password=False)
    _admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
    _admin_sql(admin_url, f'CREATE DATABASE "{SCRATCH_DB}"')
    try:
        load_s = load(url, n)
        log(f"{n}: loaded in {load_s:.1f} s")
        rng = random.Random(n)
        with Catalog(url) as catalog:
            _timed(catalog, [(AdapterFilter(), None)] * 5)  # warm the pool and the caches
            search = _timed(catalog, [(where, None) for where in _searches(n, rng)])
            page = _timed(catalog, [(AdapterFilter(), cursor) for cursor in _pages(n, rng)])
        out = {
            "search_p50_ms": _percentile(search, 0.5),
            "search_p99_ms": _percentile(search, 0.99),
            "page_p50_ms": _percentile(page, 0.5),
            "page_p99_ms": _percentile(page, 0.99),
            "list_process_s": _list_process(url),
            "load_s": load_s,
        }
        log(f"{n}: {json.dumps({k: round(v, 2) for k, v in out.items()})}")
        return out
    finally:
        _admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')


def run_catalog_bench(url: str, sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)) -> dict[str, Any]:
    """Benchmark each size on the PostgreSQL server at ``url`` (an admin URL: the bench creates and
    drops a database named ``scalebench`` there).

    Returns:
        ``{"10000": {"search_p50_ms", "search_p99_ms", "page_p50_ms", "page_p99_ms",
        "list_process_s", "load_s"}, ...}``, one entry per size, keyed by the size as text.
    """
    if not url.startswith("postgresql"):
        raise SystemExit("catalog_scale measures PostgreSQL (COPY, pg_trgm): pass a postgresql+psycopg:// URL")
    return {str(n): bench_size(url, n, log=lambda line: print(line, file=sys.stderr, flush=True)) for n in sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="admin URL: postgresql+psycopg://user@host:port/postgres")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = run_catalog_bench(args.url, tuple(args.sizes))
    print(f"{'entries':>9} {'search p50':>10} {'p99':>8} {'page p50':>9} {'p99':>8} {'list -s':>8} {'load s':>7}")
    for size, r in results.items():
        print(
            f"{int(size):>9} {r['search_p50_ms']:>10.2f} {r['search_p99_ms']:>8.2f} {r['page_p50_ms']:>9.2f}"
            f" {r['page_p99_ms']:>8.2f} {r['list_process_s']:>8.3f} {r['load_s']:>7.1f}"
        )
    if "1000000" in results:
        met = {k: results["1000000"][k] < goal for k, goal in GOALS_MS.items()}
        print(f"goals at 1M (search p50 < 50 ms, page p50 < 20 ms): {met}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
