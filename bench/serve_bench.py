"""Serving load generator: many LoRA adapters on MiniLM through one ``Batcher`` (numbers in docs/serving.md).

Run (the default run stays under about 6 minutes on 2 busy cores):
    .venv/bin/python bench/serve_bench.py --json /tmp/serve_bench.json --plot docs/serving.png

A stream of requests, each one text of ~32 tokens and one adapter drawn uniformly (fixed seed)
from K distinct adapters, K in ``--adapters`` (1, 8, 64, 512), is driven by ``--clients``
concurrent client threads (closed loop: each submits, waits for its result, submits the next)
through the same ``Batcher`` settings (32 rows, 5 ms wait) for every contender:

  base         the bare base model (HF ``BertModel``, no adapter): the limit
  ours         ``EncoderEngine.embed``, one gathered-factor pass per batch, adapters from an
               ``AdapterCache`` (budget: ``--cache-adapters`` adapters; a miss builds the served
               factors from the in-memory adapter, so with K above the budget misses are timed too)
  peft_mixed   ``PeftModel`` with all adapters ``load_adapter``-ed, ``forward(adapter_names=...)``
  peft_loop    the batch's rows grouped by adapter, ``set_adapter`` + one sub-batch per group

Adapters 0-6 are the shipped rank-8 MiniLM task adapters, the rest copies of them with every
factor perturbed by seeded Gaussian noise (half of its standard deviation): same shapes and targets.
Latency is submit -> result per request; throughput is timed requests over the wall time of the
timed part (``--warmup`` requests run untimed first). Each setting runs ``--repeats`` times, with
the contenders' order rotated each repeat; the table gives mean ± standard error of throughput.
Before timing, one mixed batch is checked: ours vs PEFT's mixed batch (and PEFT's per-adapter loop)
agree to 1e-4. A memory phase first runs ours alone with K = the largest K (process RSS, cache bytes
against its budget, hits/misses/evictions), before PEFT holds any adapter.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapterhub.eval.library import library_dir  # noqa: E402
from adapterhub.lora import LoraAdapter, LoraModule  # noqa: E402
from adapterhub.models import cached_base_model  # noqa: E402
from adapterhub.models.base import mean_pool  # noqa: E402
from adapterhub.serving import AdapterCache, Batcher, served_adapter  # noqa: E402
from adapterhub.serving.encoder import EncoderEngine  # noqa: E402

CONTENDERS = ("base", "ours", "peft_mixed", "peft_loop")
Row = tuple[str, str]  # (text, adapter key)


def rss_mb() -> float:
    """The process's resident set size (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def shipped_adapters() -> list[LoraAdapter]:
    """The shipped MiniLM task adapters (examples/<task>/), sorted by task."""
    out = []
    for cfg in sorted(library_dir().glob("*/adapter_config.json")):
        if "MiniLM" in json.loads(cfg.read_text()).get("base_model_name_or_path", ""):
            out.append(LoraAdapter.load(cfg.parent))
    return out


def synthetic_adapters(shipped: list[LoraAdapter], n: int) -> list[LoraAdapter]:
    """``n`` adapters: the shipped ones, then seeded perturbations of them (same shapes, same targets)."""
    out = list(shipped[:n])
    for i in range(len(out), n):
        src = shipped[i % len(shipped)]
        g = torch.Generator().manual_seed(1000 + i)
        modules = {}
        for path, m in src.modules():
            A, B = m.A.float(), m.B.float()
            A = A + 0.5 * A.std() * torch.randn(A.shape, generator=g)
            B = B + 0.5 * B.std() * torch.randn(B.shape, generator=g)
            modules[path] = LoraModule(A, B, m.scale)
        out.append(LoraAdapter.from_modules(
            modules, base_model=src.base_model, config_overrides={"exclude_modules": ["pooler.dense"]}))
    return out


def make_texts(tokenizer, n: int, tokens: int, seed: int = 0) -> list[str]:
    """``n`` texts of about ``tokens`` tokens (special tokens included), cut from the shipped examples."""
    words: list[str] = []
    for f in sorted(library_dir().glob("*/adapterhub_examples.jsonl")):
        words += " ".join(json.loads(line)["text"] for line in f.read_text().splitlines()[:200]).split()
    rng = random.Random(seed)
    texts = []
    while len(texts) < n:
        start = rng.randrange(len(words) - 2 * tokens)
        ids = tokenizer(" ".join(words[start : start + 2 * tokens]), add_special_tokens=False)["input_ids"]
        texts.append(tokenizer.decode(ids[: tokens - 2]))  # + [CLS] and [SEP]
    return texts


def drive(batcher: Batcher, requests: list[Row], clients: int) -> tuple[float, list[float]]:
    """Closed loop: ``clients`` threads each submit one request and wait for it, until all are done.

    Returns the wall seconds and every request's submit -> result latency (seconds)."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies = [0.0] * len(requests)
    errors: list[BaseException] = []

    def client() -> None:
        while True:
            with lock:
                i = next(counter)
            if i >= len(requests):
                return
            t = time.perf_counter()
            try:
                batcher.submit([requests[i]]).result()
            except BaseException as exc:  # reported after the run
                errors.append(exc)
                return
            latencies[i] = time.perf_counter() - t

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]!r}")
    return elapsed, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Bench:
    """The models, the adapters and one batch function per contender."""

    def __init__(self, n_adapters: int, cache_adapters: int) -> None:
        self.base = cached_base_model()
        self.base.model.eval()
        self.adapters = synthetic_adapters(shipped_adapters(), n_adapters)
        self.keys = [f"a{i}" for i in range(n_adapters)]
        self.by_key = dict(zip(self.keys, self.adapters))
        self.engine = EncoderEngine(self.base)
        self.adapter_bytes = served_adapter("probe", self.adapters[0], self.engine.linears, self.engine.dtype).nbytes
        self.budget = cache_adapters * self.adapter_bytes
        self.cache = self.new_cache()
        self.peft = None
        self.peft_loaded = 0
        self.mem: dict[str, float] = {"max_cache_bytes": 0, "max_rss_mb": 0.0}

    def new_cache(self) -> AdapterCache:
        def load(key: str):
            return served_adapter(key, self.by_key[key], self.engine.linears, self.engine.dtype)

        return AdapterCache(load, self.budget)

    def load_peft(self, n: int) -> float:
        """A ``PeftModel`` on a copy of the base with adapters 0..n-1 loaded with ``load_adapter``."""
        from peft import PeftModel

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
            for i, (key, adapter) in enumerate(zip(self.keys[:n], self.adapters[:n])):
                folder = adapter.save(Path(tmp) / key)
                if i == 0:
                    self.peft = PeftModel.from_pretrained(copy.deepcopy(self.base.model), str(folder), adapter_name=key)
                else:
                    self.peft.load_adapter(str(folder), adapter_name=key)
        self.peft.eval()
        self.peft_loaded = n
        return time.perf_counter() - started

    # ---- the batch functions (run on the batcher's thread) ----
    @torch.no_grad()
    def run_base(self, rows: list[Row]) -> list[torch.Tensor]:
        batch = self.base.tokenize([t for t, _ in rows])
        out = self.base.model(**batch)
        return list(mean_pool(out.last_hidden_state, batch["attention_mask"]))

    def run_ours(self, rows: list[Row]) -> list[torch.Tensor]:
        keys = [k for _, k in rows]
        with self.cache.pinned([k for k in keys if k]) as served:
            emb = self.engine.embed([t for t, _ in rows], [[(served[k], 1.0)] if k else [] for k in keys])
        self.mem["max_cache_bytes"] = max(self.mem["max_cache_bytes"], self.cache.nbytes)
        self.mem["max_rss_mb"] = max(self.mem["max_rss_mb"], rss_mb())
        return list(emb)

    @torch.no_grad()
    def run_peft_mixed(self, rows: list[Row]) -> list[torch.Tensor]:
        batch = self.base.tokenize([t for t, _ in rows])
        out = self.peft(**batch, adapter_names=[k or "__base__" for _, k in rows])
        return list(mean_pool(out.last_hidden_state, batch["attention_mask"]))

    @torch.no_grad()
    def run_peft_loop(self, rows: list[Row]) -> list[torch.Tensor]:
        batch = self.base.tokenize([t for t, _ in rows])
        groups: dict[str, list[int]] = {}
        for i, (_, k) in enumerate(rows):
            groups.setdefault(k, []).append(i)
        out = torch.empty(len(rows), self.base.hidden_size)
        for key, idx in groups.items():
            sub = {name: v[idx] for name, v in batch.items()}
            if key:
                self.peft.set_adapter(key)
                hidden = self.peft(**sub).last_hidden_state
            else:
                with self.peft.disable_adapter():
                    hidden = self.peft(**sub).last_hidden_state
            out[idx] = mean_pool(hidden, sub["attention_mask"])
        return list(out)

    def runner(self, name: str) -> Callable[[list[Row]], list[torch.Tensor]]:
        return getattr(self, f"run_{name}")

    def check(self, texts: list[str], n: int) -> dict[str, float]:
        """One mixed batch of 32 rows (two on the bare base) through ours and both PEFT paths."""
        rows = [(texts[i], self.keys[(i * 7) % n] if i % 16 else "") for i in range(32)]
        cache = self.cache
        self.cache = self.new_cache()
        try:
            ours = torch.stack(self.run_ours(rows))
        finally:
            self.cache = cache
        mixed = torch.stack(self.run_peft_mixed(rows))
        loop = torch.stack(self.run_peft_loop(rows))
        bare = torch.stack(self.run_base(rows))
        return {
            "ours_vs_peft_mixed": float((ours - mixed).abs().max()),
            "peft_loop_vs_peft_mixed": float((loop - mixed).abs().max()),
            "base_rows_vs_base": float((ours[[0, 16]] - bare[[0, 16]]).abs().max()),
            "adapters_change_output": float((ours - bare).abs().max()),
            "distinct_adapters": len({k for _, k in rows if k}),
        }


def run_setting(bench: Bench, name: str, requests: list[Row], warmup: int, args) -> dict:
    if name == "ours":
        bench.cache = bench.new_cache()
    batcher = Batcher(bench.runner(name), max_rows=args.max_rows, max_wait_s=args.max_wait_ms / 1000,
                      max_queue=max(1024, 4 * args.clients), name=f"bench-{name}")
    try:
        drive(batcher, requests[:warmup], args.clients)
        before = dict(bench.cache.stats.to_dict()), batcher.stats.batches, batcher.stats.rows
        elapsed, lat = drive(batcher, requests[warmup:], args.clients)
    finally:
        batcher.close()
    out = {
        "req_s": len(lat) / elapsed,
        "p50_ms": percentile(lat, 0.5) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3,
        "mean_batch_rows": (batcher.stats.rows - before[2]) / max(1, batcher.stats.batches - before[1]),
        "seconds": elapsed,
    }
    if name == "ours":
        after = bench.cache.stats.to_dict()
        out["cache"] = {k: after[k] - before[0][k] for k in after}
    return out


def stream(texts: list[str], keys: list[str], n: int, seed: int) -> list[Row]:
    rng = random.Random(seed)
    return [(texts[rng.randrange(len(texts))], keys[rng.randrange(len(keys))]) for _ in range(n)]


def mean_se(values: list[float]) -> tuple[float, float]:
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def summarise(results: list[dict], ks: list[int]) -> list[dict]:
    rows = []
    for k in ks:
        cell = {c: [r for r in results if r["K"] == k and r["contender"] == c] for c in CONTENDERS}
        by_rep = {c: {r["rep"]: r["req_s"] for r in v} for c, v in cell.items()}

        def paired(c: str, ref: str) -> list[float]:  # per-repeat ratios: both ran minutes apart at most
            return [x / by_rep[ref][rep] for rep, x in by_rep[c].items() if rep in by_rep[ref]]

        for c, v in cell.items():
            if not v:
                continue
            m, se = mean_se([r["req_s"] for r in v])
            row = {
                "K": k, "contender": c, "runs": len(v), "req_s": m, "req_s_se": se,
                "req_s_min": min(r["req_s"] for r in v), "req_s_max": max(r["req_s"] for r in v),
                "p50_ms": statistics.fmean(r["p50_ms"] for r in v), "p99_ms": statistics.fmean(r["p99_ms"] for r in v),
            }
            for ref in ("base", "peft_mixed"):
                ratios = paired(c, ref) if cell[ref] else []
                row[f"to_{ref}"], row[f"to_{ref}_se"] = mean_se(ratios) if ratios else (None, None)
                row[f"to_{ref}_all"] = [round(x, 3) for x in ratios]
            rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print("\nreq/s: mean ± SE over repeats (min..max); p50/p99: mean over repeats; ratios: mean ± SE of the "
          "per-repeat ratios (each contender against the base / PEFT mixed run of the same repeat and K)")
    print(f"{'K':>4} {'contender':<11} {'req/s':>14} {'min..max':>11} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'/base':>13} {'/peft_mixed':>13}")
    for r in rows:
        def ratio(ref: str) -> str:
            return f"{r[f'to_{ref}']:.2f} ± {r[f'to_{ref}_se']:.2f}" if r[f"to_{ref}"] is not None else "-"

        print(f"{r['K']:>4} {r['contender']:<11} {r['req_s']:>7.1f} ± {r['req_s_se']:<4.1f} "
              f"{r['req_s_min']:>5.0f}..{r['req_s_max']:<4.0f} {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} "
              f"{ratio('base'):>13} {ratio('peft_mixed'):>13}")


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c, marker in zip(CONTENDERS, "osD^"):
        pts = [r for r in rows if r["contender"] == c]
        if pts:
            ax.errorbar([r["K"] for r in pts], [r["req_s"] for r in pts], yerr=[r["req_s_se"] for r in pts],
                        marker=marker, capsize=3, label=c)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("distinct adapters in the request stream (K)")
    ax.set_ylabel("throughput (requests/s)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", default="1,8,64,512", help="distinct adapters per stream (K)")
    parser.add_argument("--requests", type=int, default=320, help="timed requests per setting and repeat")
    parser.add_argument("--warmup", type=int, default=64, help="untimed requests before each setting")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64, help="concurrent closed-loop client threads")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per text (special tokens included)")
    parser.add_argument("--max-rows", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--cache-adapters", type=int, default=128, help="cache budget, in adapters")
    parser.add_argument("--peft-max", type=int, default=64, help="largest K PEFT is loaded and measured for")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the raw runs and the summary here")
    parser.add_argument("--plot", help="write the throughput plot here (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.adapters.split(",")]
    contenders = [c for c in CONTENDERS if c in args.contenders.split(",")]
    t0 = time.perf_counter()
    rss_start = rss_mb()
    bench = Bench(max(ks), args.cache_adapters)
    texts = make_texts(bench.base.tokenizer, 256, args.tokens, args.seed)
    mean_tokens = statistics.fmean(len(x) for x in bench.base.tokenizer(texts)["input_ids"])
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.clients} clients, "
          f"batcher {args.max_rows} rows / {args.max_wait_ms} ms, {args.requests} timed + {args.warmup} warm-up "
          f"requests per setting, {args.repeats} repeats, texts {mean_tokens:.1f} tokens on average", flush=True)
    print(f"# {max(ks)} adapters ({len(shipped_adapters())} shipped + perturbed copies), {bench.adapter_bytes / 2**20:.2f} MiB "
          f"of served factors each; cache budget {args.cache_adapters} adapters = {bench.budget / 2**20:.1f} MiB "
          f"(all {max(ks)}: {max(ks) * bench.adapter_bytes / 2**20:.1f} MiB); setup {time.perf_counter() - t0:.1f}s", flush=True)

    memory = None
    if "ours" in contenders:  # ours alone at the largest K, before PEFT holds anything
        k = max(ks)
        rss_before = rss_mb()
        bench.mem = {"max_cache_bytes": 0, "max_rss_mb": rss_before}
        res = run_setting(bench, "ours", stream(texts, bench.keys[:k], args.warmup + args.requests, args.seed + k),
                          args.warmup, args)
        memory = {
            "K": k, "rss_process_start_mb": rss_start, "rss_before_mb": rss_before, "rss_peak_mb": bench.mem["max_rss_mb"],
            "rss_after_mb": rss_mb(), "cache_bytes_max": bench.mem["max_cache_bytes"], "cache_bytes_end": bench.cache.nbytes,
            "cache_entries_end": len(bench.cache), "budget_bytes": bench.budget, "all_adapters_bytes": k * bench.adapter_bytes,
            "cache_stats_timed": res["cache"], "cache_stats_total": bench.cache.stats.to_dict(), "req_s": res["req_s"],
        }
        mib = 2**20
        print(f"# memory, ours alone at K={k}: cache max {memory['cache_bytes_max'] / mib:.1f} MiB (budget "
              f"{bench.budget / mib:.1f}, all {k}: {memory['all_adapters_bytes'] / mib:.1f}), {len(bench.cache)} entries; "
              f"RSS {rss_before:.0f} -> peak {memory['rss_peak_mb']:.0f} MiB (+{memory['rss_peak_mb'] - rss_before:.0f}); "
              f"timed part: {res['cache']}", flush=True)

    peft_ks = [k for k in ks if k <= args.peft_max]
    load_s = None
    if peft_ks and {"peft_mixed", "peft_loop"} & set(contenders):
        load_s = bench.load_peft(max(peft_ks))
        print(f"# PEFT: {max(peft_ks)} adapters loaded with load_adapter in {load_s:.1f}s; measured at K in {peft_ks}"
              + (f" only (not above --peft-max {args.peft_max})" if len(peft_ks) < len(ks) else ""), flush=True)
        check = bench.check(texts, max(peft_ks))
        print(f"# check, one batch of 32 rows ({check['distinct_adapters']} adapters + 2 bare-base rows): max |ours - "
              f"PEFT mixed| = {check['ours_vs_peft_mixed']:.2e}, |PEFT loop - PEFT mixed| = "
              f"{check['peft_loop_vs_peft_mixed']:.2e}, bare rows vs base {check['base_rows_vs_base']:.2e} "
              f"(adapters move embeddings by up to {check['adapters_change_output']:.2f})", flush=True)
        if max(check["ours_vs_peft_mixed"], check["peft_loop_vs_peft_mixed"], check["base_rows_vs_base"]) > 1e-4:
            raise SystemExit("embeddings disagree by more than 1e-4")
    else:
        check = None

    results = []
    for rep in range(args.repeats):
        for k in ks:
            requests = stream(texts, bench.keys[:k], args.warmup + args.requests, args.seed + k)
            names = [c for c in contenders if not (c.startswith("peft") and k not in peft_ks)]
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                res = run_setting(bench, name, requests, args.warmup, args)
                results.append({"rep": rep, "K": k, "contender": name, **res})
                print(f"  rep {rep} K={k:<4} {name:<11} {res['req_s']:7.1f} req/s  p50 {res['p50_ms']:6.1f} ms  "
                      f"p99 {res['p99_ms']:6.1f} ms  {res['mean_batch_rows']:.1f} rows/batch"
                      + (f"  cache {res['cache']}" if "cache" in res else ""), flush=True)
    rows = summarise(results, ks)
    print_table(rows)
    at64 = {r["contender"]: r for r in rows if r["K"] == 64}
    if "ours" in at64 and "base" in at64 and "peft_mixed" in at64:
        o = at64["ours"]
        print(f"\ngoal at K=64: ours {o['to_base']:.2f}x base, per repeat {o['to_base_all']} (goal >= 0.8: "
              f"{'met' if o['to_base'] >= 0.8 else 'NOT met'} on the mean), {o['to_peft_mixed']:.2f}x PEFT mixed, per "
              f"repeat {o['to_peft_mixed_all']} (goal >= 1.5: {'met' if o['to_peft_mixed'] >= 1.5 else 'NOT met'})")
    print(f"# total {time.perf_counter() - t0:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "torch": torch.__version__, "mean_tokens": mean_tokens, "adapter_bytes": bench.adapter_bytes,
            "peft_load_s": load_s, "peft_ks": peft_ks, "check": check, "memory": memory, "runs": results, "summary": rows,
        }, indent=1))
    if args.plot:
        plot(rows, args.plot, f"MiniLM, batch {args.max_rows} x {mean_tokens:.0f} tokens, {args.threads} threads, "
             f"{args.clients} clients (mean ± SE of {args.repeats})")


if __name__ == "__main__":
    main()
