"""The packing curve: storage ratio against accuracy loss for the shipped MiniLM library (issue 12, item 2).

The 7 adapters of ``examples/`` (rank 8, float16 factors) are packed by ``adapterhub.shard.pack_library``
over a grid of shards per vector ``l``, pool sizes and private budgets. For each point: the storage
ratio from ``PackStats`` (unpacked bytes / packed bytes; pools, indices, coefficients, private units and
the passthrough heads all counted), the relative ΔW error, and every unpacked adapter's test accuracy on
its own task against the original adapter's (loss in points; mean over the 7 tasks ± SE over tasks).

Alternatives at equal bytes (``adapterhub.shard.pack_baselines``): rank truncation to k = 1, 2, 3, 4, 6 and int8
factors, plus the two composed (truncate, then int8), which is what a user would try first.
Everything here is deterministic (k-means is seeded), so each point ran once; the noise is the
test-sample noise of the per-task differences (paired: same examples), reported as the SE over tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shard_study import Units, mean_se, run_unit

# (shards per vector, pool size, private budget as a fraction of the unpacked bytes)
GRID: list[tuple[int, int, float]] = (
    [(1, s, 0.0) for s in (32, 128)]
    + [(4, s, 0.0) for s in (64, 256, 1024)]
    + [(16, s, 0.0) for s in (256, 1024, 4096)]
    + [(4, 256, b) for b in (0.05, 0.1, 0.2)]
)
TRUNC_RANKS = (1, 2, 3, 4, 6)


def load_minilm_library() -> dict[str, Any]:
    """The shipped MiniLM adapters (``examples/<task>/``), keyed by task."""
    from adapterhub.eval.library import load_library

    return {task: adapter for task, (adapter, _) in load_library(Path(__file__).resolve().parent.parent / "examples").items()}


def score_library(adapters: Mapping[str, Any], model: Any) -> dict[str, dict[str, float]]:
    """Each adapter on its own task's whole test split (similarity protocol, as the service scores it)."""
    from adapterhub.eval.evaluate import evaluate

    out = {}
    for task, adapter in sorted(adapters.items()):
        r = evaluate(adapter, task, split="test", model=model)
        out[task] = {"accuracy": r.accuracy, "n": r.n, "predictions": list(r.predictions)}
    return out


def paired_loss(original: Mapping[str, dict], scored: Mapping[str, dict]) -> dict[str, Any]:
    """Accuracy loss in points per task (original - reconstructed), their mean ± SE over tasks, and the
    mean number of test predictions that changed (what the loss is made of)."""
    per_task = {t: 100 * (original[t]["accuracy"] - scored[t]["accuracy"]) for t in sorted(scored)}
    changed = {t: sum(a != b for a, b in zip(original[t]["predictions"], scored[t]["predictions"], strict=True))
               for t in sorted(scored)}
    m, se = mean_se(per_task.values())
    return {"loss_points": per_task, "mean_loss": m, "se_loss": se, "changed_predictions": changed,
            "accuracy": {t: scored[t]["accuracy"] for t in sorted(scored)}}


def _evaluate_variant(make: Callable[[], tuple[dict[str, Any], int, dict[str, Any]]], original: Mapping[str, dict],
                      unpacked_bytes: int, model: Any) -> dict[str, Any]:
    """Build a library variant (adapters, total bytes, extra facts), score it, compare with the originals."""
    started = time.perf_counter()
    adapters, total, facts = make()
    build_s = round(time.perf_counter() - started, 1)
    scored = score_library(adapters, model)
    return {**facts, "bytes": total, "ratio": unpacked_bytes / total, "build_s": build_s, **paired_loss(original, scored)}


def run_packing(path: Path, *, quick: bool = False) -> Units:
    """Run (or resume) the packing curve; every point is written to ``path`` as it finishes."""
    from adapterhub.models.base import cached_base_model
    from adapterhub.shard import int8_quantise, pack_library, truncate_rank

    library = load_minilm_library()
    if quick:
        library = {t: library[t] for t in sorted(library)[:2]}
    model = cached_base_model()
    units = Units(path, {"tasks": sorted(library), "grid": GRID, "trunc_ranks": TRUNC_RANKS,
                         "dtype": str(next(next(iter(library.values())).modules())[1].A.dtype)})
    probe = pack_library(library, pool_size=1, shards_per_vector=1)  # unpacked bytes: PackStats' own count
    unpacked = probe.stats().unpacked_bytes
    units.meta["unpacked_bytes"] = unpacked
    units.save()
    original = run_unit(units, "original", lambda: {"scores": score_library(library, model)})["scores"]

    def packed(l: int, size: int, frac: float) -> Callable[[], tuple[dict[str, Any], int, dict[str, Any]]]:
        def make() -> tuple[dict[str, Any], int, dict[str, Any]]:
            lib = pack_library(library, pool_size=size, shards_per_vector=l, private_budget=frac * unpacked, seed=0)
            stats = lib.stats()
            facts = {"method": "pack", "shards_per_vector": l, "pool_size": size, "private_fraction": frac,
                     "packed_bytes": stats.packed_bytes, "mean_error": stats.mean_error, "errors": stats.errors}
            return {n: lib.unpack(n) for n in lib.names}, stats.total_packed_bytes, facts
        return make

    def baseline(kind: str, rank: int | None) -> Callable[[], tuple[dict[str, Any], int, dict[str, Any]]]:
        def make() -> tuple[dict[str, Any], int, dict[str, Any]]:
            out, total = {}, 0
            for task, adapter in library.items():
                if rank is not None:
                    adapter, size = truncate_rank(adapter, rank)
                if kind != "trunc":
                    adapter, size = int8_quantise(adapter)
                out[task], total = adapter, total + size
            return out, total, {"method": kind, "rank": rank}
        return make

    grid = GRID if not quick else [(4, 64, 0.0)]
    for rank in (TRUNC_RANKS if not quick else (1,)):
        run_unit(units, f"trunc/k{rank}", lambda r=rank: _evaluate_variant(baseline("trunc", r), original, unpacked, model))
    run_unit(units, "int8", lambda: _evaluate_variant(baseline("int8", None), original, unpacked, model))
    for rank in ((1, 2, 4) if not quick else (1,)):
        run_unit(units, f"trunc_int8/k{rank}",
                 lambda r=rank: _evaluate_variant(baseline("trunc_int8", r), original, unpacked, model))
    for l, size, frac in grid:
        run_unit(units, f"pack/l{l}/p{size}/b{frac:g}",
                 lambda l=l, s=size, f=frac: _evaluate_variant(packed(l, s, f), original, unpacked, model))
    return units
