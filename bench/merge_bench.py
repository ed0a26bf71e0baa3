"""adapterhub.merge vs PEFT's ``add_weighted_adapter`` on the same Llama-7B-shaped inputs.

Run (each invocation stays under 8 minutes on 2 busy cores; PEFT's dense SVDs dominate):
    .venv/bin/python bench/merge_bench.py --n 2 --methods svd,cat,linear,lego --modules q_proj,down_proj
    .venv/bin/python bench/merge_bench.py --n 8 --methods svd,cat,linear,lego --modules q_proj,down_proj \
        --full-dir /tmp/llama-loras
    .venv/bin/python bench/merge_bench.py --n 2 --methods ties,magnitude,dare_linear,dare_ties --modules q_proj
    .venv/bin/python bench/merge_bench.py --n 8 --methods ties,magnitude,dare_linear,dare_ties --modules q_proj
    .venv/bin/python bench/merge_bench.py --n 8 --skip-peft --full-dir /tmp/llama-loras \
        --full-methods tsv,iso_c,iso_cts,knots,svd      # the spectral methods: 224 modules, one core

One process builds a one-layer model of Llama-shaped linear layers (only the ``--modules`` asked
for: PEFT's ``svd`` family does a full dense SVD per module, about 30 s for 4096x4096 and 60 s for
11008x4096 on one core), loads n random r=16 adapters into a ``PeftModel`` and times

  ours                       PEFT combination_type      compared
  svd (k=16)                 svd (svd_rank=16)          same result expected
  cat / linear               cat                        same (PEFT's "linear" adds cross terms)
  ties / magnitude (k=16)    ties_svd / magnitude_prune_svd (svd_rank=16)   same pruned delta,
                             ours refits it with a randomised SVD, PEFT with a full SVD; both
                             distances to the pruned delta are printed too (when the spectrum is
                             flat the two top-16 subspaces differ while both are near-optimal)
  dare_linear / dare_ties    dare_*_svd                 time only: random masks differ

printing per method the time ratio (PEFT / ours) and the max over modules of
``||delta_ours - delta_peft||_F / ||delta_peft||_F``. ``lego`` has no PEFT counterpart: it is
timed on the one-layer model and, with ``--full-dir``, on a full 32-layer adapter set (224
modules) read lazily from safetensors files (written there first if missing).
All torch work runs with ``--threads`` (default 1) so timings are comparable on a shared machine;
the full-set timing also prints the process's CPU time (``cpu_s``), which on one thread is the
one-core time even when other jobs share the cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic_adapters import MODULES, write_adapter, write_adapters  # noqa: E402

from adapterhub.lora import LoraAdapter  # noqa: E402
from adapterhub.merge import merge_adapters  # noqa: E402

RANK = 16
PAIRS = {  # ours -> (PEFT combination_type, comparable?)
    "svd": ("svd", True),
    "cat": ("cat", True),
    "linear": ("cat", True),
    "ties": ("ties_svd", True),
    "magnitude": ("magnitude_prune_svd", True),
    "dare_linear": ("dare_linear_svd", False),
    "dare_ties": ("dare_ties_svd", False),
}
DENSITY = 0.2


class _Block(nn.Module):
    def __init__(self, names: list[str], prefix: str) -> None:
        super().__init__()
        for full, (d_out, d_in) in MODULES.items():
            group, name = full.split(".")
            if group == prefix and name in names:
                self.add_module(name, nn.Linear(d_in, d_out, bias=False, device="meta"))


class _Layer(nn.Module):
    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.self_attn = _Block(names, "self_attn")
        self.mlp = _Block(names, "mlp")


class _Inner(nn.Module):
    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Layer(names)])


class LlamaShaped(nn.Module):
    """``model.layers.0.{self_attn,mlp}.<name>``: the paths a Llama LoRA targets (weights uninitialised)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.model = _Inner(names)
        self.to_empty(device="cpu")


def _peft_merge(
    model, adapter_names: list[str], combination: str, weights: list[float]
) -> tuple[float, dict[str, torch.Tensor]]:
    from peft.tuners.lora import LoraLayer

    kwargs: dict = {}
    if combination not in ("cat", "linear"):
        kwargs["svd_rank"] = RANK
    if combination.startswith(("ties", "dare", "magnitude")):
        kwargs["density"] = DENSITY
    torch.manual_seed(0)
    started = time.perf_counter()
    model.add_weighted_adapter(adapter_names, weights, "merged", combination_type=combination, **kwargs)
    elapsed = time.perf_counter() - started
    deltas = {}
    for name, module in model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and "merged" in module.lora_A:
            deltas[name] = module.get_delta_weight("merged").detach().clone()
    model.delete_adapter("merged")
    return elapsed, deltas


def _ours(adapters: list[LoraAdapter], method: str, weights: list[float]) -> tuple[float, LoraAdapter, object]:
    params: dict = {}
    if method in ("svd", "lego"):
        params["k"] = RANK
    if method in ("ties", "magnitude", "dare_linear", "dare_ties"):
        params = {"k": RANK, "density": DENSITY}
    started = time.perf_counter()
    result = merge_adapters(adapters, method, weights=weights, params=params)
    return time.perf_counter() - started, result.adapter, result.report


def _max_rel_diff(ours: LoraAdapter, theirs: dict[str, torch.Tensor]) -> float:
    worst = 0.0
    for path, delta in theirs.items():
        mine = ours.module(path).delta()
        worst = max(worst, float((mine - delta).norm() / delta.norm()))
    return worst


def _refit_errors(adapters: list[LoraAdapter], method: str, weights: list[float], ours: LoraAdapter,
                  theirs: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Worst relative distance of each rank-16 result to the pruned dense delta it approximates
    (PEFT's own ``ties`` / ``magnitude_prune`` on the same deltas): the fair accuracy comparison
    when the spectrum is flat and the two top-16 subspaces legitimately differ."""
    from peft.utils import merge_utils

    worst_ours = worst_peft = 0.0
    w = torch.tensor(weights)
    for path, delta_peft in theirs.items():
        deltas = [a.module(path).delta() for a in adapters]
        if method == "ties":
            target = merge_utils.ties(deltas, w, DENSITY, "total")
        else:
            target = merge_utils.magnitude_prune(deltas, w, DENSITY)
        worst_ours = max(worst_ours, float((ours.module(path).delta() - target).norm() / target.norm()))
        worst_peft = max(worst_peft, float((delta_peft - target).norm() / target.norm()))
    return worst_ours, worst_peft


def compare(n: int, methods: list[str], names: list[str], root: Path) -> list[dict]:
    from peft import PeftModel

    folders = []
    for i in range(n):
        folder = root / f"layer-{'-'.join(names)}-{i}"
        if not (folder / "adapter_model.safetensors").exists():
            write_adapter(folder, seed=100 + i, r=RANK, layers=1, names=names, task_type=None)
        folders.append(folder)
    adapters = [LoraAdapter.load(f) for f in folders]
    model = PeftModel.from_pretrained(LlamaShaped(names), folders[0], adapter_name="a0")
    for i, folder in enumerate(folders[1:], start=1):
        model.load_adapter(folder, adapter_name=f"a{i}")
    adapter_names = [f"a{i}" for i in range(n)]
    weights = [1.0] * n
    rows = []
    for method in methods:
        ours_s, ours_adapter, report = _ours(adapters, method, weights)
        row = {"n": n, "method": method, "modules": ",".join(names), "ours_s": round(ours_s, 4)}
        if method in PAIRS:
            combination, comparable = PAIRS[method]
            peft_s, theirs = _peft_merge(model, adapter_names, combination, weights)
            row.update(
                peft=combination,
                peft_s=round(peft_s, 3),
                speedup=round(peft_s / ours_s, 1),
                max_rel_diff=_max_rel_diff(ours_adapter, theirs) if comparable else None,
            )
            if method in ("ties", "magnitude"):
                ours_err, peft_err = _refit_errors(adapters, method, weights, ours_adapter, theirs)
                row.update(ours_err_vs_pruned=round(ours_err, 5), peft_err_vs_pruned=round(peft_err, 5))
        else:
            row.update(peft=None, mixing_share=report.mixing_share, shape_error=round(report.shape_error, 4))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def full_set(n: int, methods: list[str], folder: Path) -> None:
    t = time.perf_counter()
    folders = write_adapters(folder, n)
    print(f"# {n} full Llama-7B-shaped adapters in {folder} (ready in {time.perf_counter() - t:.1f}s)", flush=True)
    adapters = [LoraAdapter.load(f, validate=False) for f in folders]
    for method in methods:
        started, cpu = time.perf_counter(), time.process_time()
        result = merge_adapters(adapters, method, params={"k": 8})
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(json.dumps({
            "n": n, "method": method, "k": 8, "modules": len(result.report.modules), "full_set_s": round(elapsed, 2),
            "cpu_s": round(cpu, 2), "mixing_share": result.report.mixing_share, "shape_error": round(result.report.shape_error, 4),
            "peak_rss_mb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2, help="number of adapters")
    parser.add_argument("--methods", default="svd,cat,linear,lego")
    parser.add_argument("--modules", default="q_proj,down_proj", help="Llama module names in the one-layer model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full-dir", help="also time --full-methods on a full 224-module set stored here")
    parser.add_argument("--full-methods", default="lego,svd")
    parser.add_argument("--skip-peft", action="store_true", help="only the --full-dir timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), r={RANK}, n={args.n}", flush=True)
    if not args.skip_peft:
        with tempfile.TemporaryDirectory(prefix="merge-bench-") as tmp:
            compare(args.n, args.methods.split(","), args.modules.split(","), Path(tmp))
    if args.full_dir:
        full_set(args.n, args.full_methods.split(","), Path(args.full_dir))


if __name__ == "__main__":
    main()
