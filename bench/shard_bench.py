"""Pack N synthetic Llama-7B-layer adapters into shared shard pools: time, peak memory, ratio, error.

Run (results as JSON on stdout, progress on stderr; ``--json PATH`` also writes them):
    .venv/bin/python bench/shard_bench.py --n 100
    .venv/bin/python bench/shard_bench.py --sizes 100,300,1000 --json /tmp/shard_bench.json
    .venv/bin/python bench/shard_bench.py --minilm          # the 7 shipped MiniLM adapters

The adapters (``shard_bench_data.py``: 2.5 MB fp16 each, shared low-rank structure) are generated
once into ``--cache`` as PEFT folders and read back lazily by the packer, one at a time, so the pack
time includes reading the library from safetensors and the generation does not. ``--sizes`` runs
each size in its own process and prints how time and memory grow. Peak memory is the process's
``VmHWM`` right after packing (not ``ru_maxrss``, which a spawned child inherits from its parent).

Every number comes with a reference measured in the same process:
* pack time vs the time to just read + write the unpacked library (safetensors ``load_file`` of
  every adapter, ``save_file`` to a temporary folder);
* reconstructing one adapter (``PackedLibrary.unpack``) vs loading it from its folder
  (``LoraAdapter.load``, which reads and checks every tensor), medians of 5;
* the packed error vs rank truncation (fp16) and int8 of a rank truncation, each at the rank whose
  bytes fit the packed bytes per adapter (pools amortised), and plain int8 (its own, larger bytes),
  on the first ``--baseline-sample`` adapters. Errors: relative Frobenius error of ΔW over the adapter.

The machine's load average is recorded: timings on a shared machine are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from shard_bench_data import ensure_cache, relative_error, truncation_rank  # noqa: E402

from adapterhub.lora.adapter import LoraAdapter  # noqa: E402
from adapterhub.shard.pack import pack_library  # noqa: E402
from adapterhub.shard.pack_baselines import int8_quantise, truncate_rank  # noqa: E402


def _rss_mb() -> float:
    """Peak RSS of this program in MB: ``VmHWM`` (Linux). ``ru_maxrss`` is a fallback only: it keeps
    the peak of the process image before ``exec``, i.e. of the parent that spawned this one."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _times_ms(fn: Callable[[], object], repeat: int = 5) -> list[float]:
    fn()  # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _median_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    return round(statistics.median(_times_ms(fn, repeat)), 2)


def _materialise(adapter: LoraAdapter) -> int:
    return sum(m.A.numel() + m.B.numel() for _, m in adapter.modules())


def read_write_seconds(folders: list[Path]) -> tuple[float, float]:
    """Seconds to read every adapter's safetensors and to write them all again (temp folder, deleted)."""
    read_s = write_s = 0.0
    with tempfile.TemporaryDirectory(prefix="shard-bench-rw-") as tmp:
        for i, folder in enumerate(folders):
            start = time.perf_counter()
            tensors = load_file(folder / "adapter_model.safetensors")
            read_s += time.perf_counter() - start
            start = time.perf_counter()
            save_file(tensors, os.path.join(tmp, f"{i}.safetensors"))
            write_s += time.perf_counter() - start
    return read_s, write_s


def baselines(library, packed, stats, sample: int) -> dict:  # type: ignore[no-untyped-def]
    """Packed error vs truncation / int8 at equal bytes per adapter, on the first ``sample`` adapters."""
    budget = stats.total_packed_bytes / len(library)
    rows: dict[str, list[float]] = {"packed": [], "truncate": [], "int8_truncate": [], "int8": []}
    sizes: dict[str, list[float]] = {k: [] for k in rows}
    ranks = {}
    for name in library.names[:sample]:
        original = library[name]
        rows["packed"].append(stats.errors[name])
        sizes["packed"].append(budget)
        k = truncation_rank(original, budget, value_bytes=original.module(original.module_paths[0]).A.element_size())
        k8 = truncation_rank(original, budget, value_bytes=1, overhead=4)
        ranks = {"truncate": k, "int8_truncate": k8}
        for key, rank in ranks.items():
            if rank < 1:  # nothing fits: the adapter is dropped
                rows[key].append(1.0)
                sizes[key].append(0)
                continue
            approx, size = truncate_rank(original, rank)
            if key == "int8_truncate":
                approx, size = int8_quantise(approx)
            rows[key].append(relative_error(original, approx))
            sizes[key].append(size)
        approx, size = int8_quantise(original)
        rows["int8"].append(relative_error(original, approx))
        sizes["int8"].append(size)
    unpacked = stats.unpacked_bytes / len(library)
    return {
        key: {
            "mean_rel_error": round(statistics.mean(errs), 4),
            "bytes_per_adapter": round(statistics.mean(sizes[key])),
            "ratio": round(unpacked / statistics.mean(sizes[key]), 2) if statistics.mean(sizes[key]) > 0 else None,
            **({"rank": ranks[key]} if key in ranks else {}),
        }
        for key, errs in rows.items()
    } | {"sample": min(sample, len(library))}


def run_one(args: argparse.Namespace) -> dict:
    library, gen_s = ensure_cache(Path(args.cache), args.n, atoms=args.atoms, noise=args.noise)
    if gen_s > 1:
        _log(f"generated missing adapters in {gen_s:.1f} s (not counted)")
    rss_before = _rss_mb()
    load_before = os.getloadavg()
    _log(f"packing {args.n} adapters")
    start = time.perf_counter()
    packed = pack_library(
        library, pool_size=args.pool_size, shards_per_vector=args.shards_per_vector,
        private_budget=args.private_budget, seed=args.seed, dtype=torch.float16,
        max_iter=args.max_iter, max_fit_points=args.max_fit_points,
    )
    pack_s = time.perf_counter() - start
    peak = _rss_mb()
    load_after = os.getloadavg()
    stats = packed.stats()
    _log(f"packed in {pack_s:.1f} s, peak RSS {peak:.0f} MB; timing references")
    names = library.names[:5]
    unpack = [t for n in names for t in _times_ms(lambda n=n: _materialise(packed.unpack(n)))]
    load = [t for n in names for t in _times_ms(lambda n=n: _materialise(LoraAdapter.load(library.folder(n))))]
    unpack_ms, load_ms = round(statistics.median(unpack), 2), round(statistics.median(load), 2)
    read_s, write_s = read_write_seconds([library.folder(n) for n in library.names])
    _log("baselines")
    base = baselines(library, packed, stats, args.baseline_sample)
    return {
        "n": args.n,
        "params": {"pool_size": args.pool_size, "shards_per_vector": args.shards_per_vector, "private_budget": args.private_budget,
                   "max_fit_points": args.max_fit_points, "max_iter": args.max_iter, "seed": args.seed, "dtype": "float16",
                   "atoms": args.atoms, "noise": args.noise, "threads": torch.get_num_threads()},
        "pack_s": round(pack_s, 2),
        "read_write_unpacked_s": round(read_s + write_s, 2),
        "read_unpacked_s": round(read_s, 2),
        "pack_vs_read_write": round(pack_s / max(read_s + write_s, 1e-9), 1),
        "peak_rss_mb": round(peak, 1),
        "rss_before_pack_mb": round(rss_before, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "unpack_one_ms": unpack_ms,
        "unpack_one_ms_min": round(min(unpack), 2),
        "load_one_ms": load_ms,
        "load_one_ms_min": round(min(load), 2),
        "unpack_vs_load": round(unpack_ms / max(load_ms, 1e-9), 2),
        "unpacked_mb": round(stats.unpacked_bytes / 2**20, 1),
        "packed_mb": round(stats.total_packed_bytes / 2**20, 2),
        "ratio": round(stats.ratio, 2),
        "mean_rel_error": round(stats.mean_error, 4),
        "packed_bytes": stats.packed_bytes,
        "baselines_equal_bytes": base,
        "loadavg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cpus": os.cpu_count(),
    }


def run_minilm(args: argparse.Namespace) -> dict:
    """The shipped 7-adapter MiniLM library at the service's defaults (pool 256, l = 1) and at l = 2."""
    from adapterhub.eval.library import META_NAME, library_dir

    folders = {meta.parent.name: meta.parent for meta in sorted(library_dir().glob(f"*/{META_NAME}"))}
    out = {}
    for l in (1, 2):
        start = time.perf_counter()
        lib = {name: LoraAdapter.load(folder) for name, folder in folders.items()}
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        packed = pack_library(lib, pool_size=256, shards_per_vector=l, seed=0)
        pack_s = time.perf_counter() - start
        stats = packed.stats()
        name = sorted(lib)[0]
        out[f"pool256_l{l}"] = {
            "adapters": len(lib), "pack_s": round(pack_s, 3), "load_all_s": round(load_s, 3),
            "read_write_unpacked_s": round(sum(read_write_seconds([Path(f) for f in folders.values()])), 3),
            "unpack_one_ms": _median_ms(lambda: _materialise(packed.unpack(name))),
            "load_one_ms": _median_ms(lambda: _materialise(LoraAdapter.load(folders[name]))),
            "ratio": round(stats.ratio, 2), "mean_rel_error": round(stats.mean_error, 4),
        }
    return {"minilm": out, "peak_rss_mb": round(_rss_mb(), 1), "loadavg": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def run_sizes(args: argparse.Namespace, argv: list[str]) -> dict:
    sizes = [int(s) for s in args.sizes.split(",")]
    _, gen_s = ensure_cache(Path(args.cache), max(sizes), atoms=args.atoms, noise=args.noise)
    _log(f"cache ready ({gen_s:.1f} s generating)")
    passthrough, skip = [], False
    for a in argv:  # drop --sizes/--json (and their values)
        if skip:
            skip = False
            continue
        if a in ("--sizes", "--json"):
            skip = True
            continue
        if a.startswith(("--sizes=", "--json=")):
            continue
        passthrough.append(a)
    runs = []
    for n in sizes:
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            _log(f"size {n}")
            subprocess.run([sys.executable, __file__, *passthrough, "--n", str(n), "--json", tmp.name], check=True, stdout=subprocess.DEVNULL)
            runs.append(json.loads(Path(tmp.name).read_text()))
    lo, hi = runs[0], runs[-1]
    growth = {
        "from_to": [lo["n"], hi["n"]],
        "pack_time_x": round(hi["pack_s"] / lo["pack_s"], 2),
        "peak_rss_x": round(hi["peak_rss_mb"] / lo["peak_rss_mb"], 2),
        "peak_rss_mb_per_adapter": round((hi["peak_rss_mb"] - lo["peak_rss_mb"]) / (hi["n"] - lo["n"]), 3) if hi["n"] > lo["n"] else None,
        "unpacked_mb_per_adapter": round(hi["unpacked_mb"] / hi["n"], 3),
    }
    if len(runs) > 2:  # the k-means sample stops growing at max_fit_points: the last step shows the slope
        a, b = runs[-2], runs[-1]
        growth["peak_rss_mb_per_adapter_last_step"] = round((b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["n"] - a["n"]), 3)
    header = f"{'N':>6} {'pack s':>8} {'r+w s':>7} {'peak MB':>8} {'ratio':>6} {'err':>6} {'unpack ms':>9} {'load ms':>8} {'trunc err':>9} {'int8tr err':>10}"
    print(header, file=sys.stderr)
    for r in runs:
        b = r["baselines_equal_bytes"]
        print(f"{r['n']:>6} {r['pack_s']:>8} {r['read_write_unpacked_s']:>7} {r['peak_rss_mb']:>8} {r['ratio']:>6} "
              f"{r['mean_rel_error']:>6} {r['unpack_one_ms']:>9} {r['load_one_ms']:>8} {b['truncate']['mean_rel_error']:>9} "
              f"{b['int8_truncate']['mean_rel_error']:>10}", file=sys.stderr)
    return {"runs": runs, "growth": growth}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of adapters")
    parser.add_argument("--sizes", help="comma-separated sizes, e.g. 100,300,1000: one process each, growth table")
    parser.add_argument("--minilm", action="store_true", help="the shipped 7-adapter MiniLM library instead")
    parser.add_argument("--json", help="also write the results to this path")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "adapterhub-shard-bench"))
    parser.add_argument("--pool-size", type=int, default=1024)
    parser.add_argument("--shards-per-vector", type=int, default=4)
    parser.add_argument("--private-budget", type=float, default=0.0, help="bytes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--max-fit-points", type=int, default=16384, help="k-means subsample per pool (16 per centre)")
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--baseline-sample", type=int, default=10, help="adapters the baselines are computed on")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.minilm:
        out = run_minilm(args)
    elif args.sizes:
        out = run_sizes(args, argv)
    else:
        out = run_one(args)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
