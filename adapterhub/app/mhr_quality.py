"""The "new task with 16 shots" study of issue 10: MHR-z and MHR-μ against the few-shot baselines.

For each held-out task, the inventory is the other shipped adapters; the seed picks 16 shots from
the task's TRAIN split, stratified by class. Methods:

- ``mhr_z``: routing logits only (``adapterhub.route.mhr_train.train_mhr(variant="z")``);
- ``mhr_mu``: the inventory's factor average, then A and B fine-tuned (``variant="mu"``);
- ``lora_scratch``: a fresh rank-8 LoRA trained on the same shots (``models.train.train_adapter``);
- ``head_only``: a linear head fitted on the frozen base model's embeddings of the shots (head
  protocol — the only method scored by a head);
- ``zero_shot``: the base model, no adapter; ``uniform_avg``: MHR-μ before any step (no shots);
  ``own_adapter``: the held-out task's own library adapter, trained on its whole train split (the
  ceiling, read from its metadata).

Learning rate and steps of each trained method are chosen on the VALIDATION split (a capped,
fixed subset) with seed 0's shots; the chosen setting is then run for every seed and scored on
TEST. Steps are read off snapshots of one run per learning rate (MHR) or by rerunning (scratch).
A diagnostic (``z_curve``) then trains MHR-z longer than the grid, to tell "under-trained" from
"plateaued"; it plays no part in the selection.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adapterhub.eval import load_library
from adapterhub.eval.evaluate import embed_texts, evaluate
from adapterhub.eval.heads import fit_linear_head
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import BaseModel, cached_base_model
from adapterhub.models.train import train_adapter
from adapterhub.route.mhr import mixed_adapter, stack_inventory
from adapterhub.route.mhr_train import sample_shots, train_mhr
from adapterhub.tasks import Task, load_task
from adapterhub.threads import torch_threads

TRAINED = ("mhr_z", "mhr_mu", "lora_scratch")
METHODS = ("mhr_z", "mhr_mu", "lora_scratch", "head_only", "zero_shot", "uniform_avg", "own_adapter")
Log = Callable[[str], None]


@dataclass
class StudyConfig:
    """What the study runs (defaults: the full study; ``quick()``: a smoke run of a few minutes)."""

    tasks: tuple[str, ...] = ("wn_pos", "wn_adj_kind", "chat_topic")
    seeds: tuple[int, ...] = (0, 1, 2)
    shots: int = 16
    n_heads: int = 4
    grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "mhr_z": (1.0, 3.0), "mhr_mu": (1e-3,), "lora_scratch": (3e-3,)})
    step_grid: tuple[int, ...] = (4, 8, 16)
    scratch_steps: tuple[int, ...] = (8, 16)
    val_limit: int = 100
    threads: int = 2
    z_curve_steps: tuple[int, ...] = (16, 32, 64, 96)

    @classmethod
    def quick(cls) -> "StudyConfig":
        return cls(tasks=("wn_pos",), seeds=(0,), grid={"mhr_z": (1.0,), "mhr_mu": (1e-3,), "lora_scratch": (3e-3,)},
                   step_grid=(2, 4), scratch_steps=(4,), val_limit=60, z_curve_steps=())


def _val_subset(task: Task, limit: int) -> Task:
    """The task with its validation split cut to a fixed (seed-0 shuffled) ``limit`` examples."""
    val = task.split("validation")
    keep = sorted(torch.randperm(len(val), generator=torch.Generator().manual_seed(0)).tolist()[:limit])
    kept = [val[i] for i in keep]
    return dataclasses.replace(task, examples=tuple(e for e in task.examples if e.split != "validation") + tuple(kept))


def _shot_task(task: Task, idx: Sequence[int]) -> Task:
    """The task whose train split is only the shots (what ``train_adapter`` reads)."""
    train = task.split("train")
    return dataclasses.replace(task, examples=tuple(train[i] for i in idx))


def _acc(adapter: LoraAdapter | None, task: Task, split: str, base: BaseModel) -> float:
    return evaluate(adapter, task, split=split, model=base).accuracy


def _train(method: str, base: BaseModel, inventory: list[LoraAdapter], names: list[str], task: Task, idx: list[int],
           cfg: StudyConfig, *, lr: float, steps: Sequence[int], seed: int) -> dict[int, LoraAdapter]:
    """Adapters after each of ``steps`` for one method, learning rate and seed."""
    train = task.split("train")
    texts, labels = [train[i].text for i in idx], [train[i].label for i in idx]
    if method == "lora_scratch":
        shot_task = _shot_task(task, idx)
        return {s: train_adapter(base, shot_task, epochs=s, batch_size=cfg.shots, lr=lr, seed=seed).adapter for s in steps}
    variant = "z" if method == "mhr_z" else "mu"
    res = train_mhr(base, inventory, texts, labels, task.label_descriptions, variant=variant, n_heads=cfg.n_heads,
                    steps=max(steps), lr=lr, batch_size=cfg.shots, seed=seed, inventory_names=names,
                    snapshot_steps=list(steps))
    return res.snapshots


def _head_only(base: BaseModel, task: Task, idx: list[int]) -> float:
    train = task.split("train")
    feats = embed_texts([train[i].text for i in idx], None, model=base)
    head = fit_linear_head(feats, torch.tensor([train[i].label for i in idx]), task.num_labels)
    return evaluate(None, task, protocol="head", head=head, split="test", model=base).accuracy


def run_task(name: str, cfg: StudyConfig, base: BaseModel, library: dict[str, tuple[LoraAdapter, dict]], log: Log) -> dict:
    """Every method on one held-out task: selection on validation (seed 0), then test for every seed."""
    task = _val_subset(load_task(name), cfg.val_limit)
    names = [n for n in library if n != name]
    inventory = [library[n][0] for n in names]
    out: dict[str, Any] = {"task": name, "inventory": names, "n_test": len(task.split("test")),
                           "n_validation_used": len(task.split("validation")), "selection": {}, "seeds": {}}
    shots = {seed: sample_shots(task, cfg.shots, seed) for seed in cfg.seeds}
    first = cfg.seeds[0]
    chosen: dict[str, tuple[float, int]] = {}
    kept: dict[str, LoraAdapter] = {}
    for method in TRAINED:
        steps = cfg.scratch_steps if method == "lora_scratch" else cfg.step_grid
        scores = []
        for lr in cfg.grid[method]:
            t0 = time.perf_counter()
            snaps = _train(method, base, inventory, names, task, shots[first], cfg, lr=lr, steps=steps, seed=first)
            for s, adapter in snaps.items():
                acc = _acc(adapter, task, "validation", base)
                scores.append({"lr": lr, "steps": s, "validation_accuracy": acc})
                if max(scores, key=lambda r: r["validation_accuracy"]) is scores[-1]:
                    kept[method] = adapter
            log(f"{name} {method} lr={lr:g}: val {[round(r['validation_accuracy'], 3) for r in scores[-len(snaps):]]} "
                f"({time.perf_counter() - t0:.0f}s)")
        best = max(scores, key=lambda r: r["validation_accuracy"])  # first best: smaller lr, fewer steps
        chosen[method] = (best["lr"], best["steps"])
        out["selection"][method] = {"grid": scores, "chosen": {"lr": best["lr"], "steps": best["steps"]}}
    zero = _acc(None, task, "test", base)
    uniform = _acc(mixed_adapter(stack_inventory(inventory)), task, "test", base)
    own = library[name][1]["metrics"]["test"]["adapter"]["accuracy"] if name in library else float("nan")
    for seed in cfg.seeds:
        row: dict[str, Any] = {"shots": shots[seed], "zero_shot": zero, "uniform_avg": uniform, "own_adapter": own}
        for method in TRAINED:
            lr, steps = chosen[method]
            adapter = kept[method] if seed == first else _train(
                method, base, inventory, names, task, shots[seed], cfg, lr=lr, steps=[steps], seed=seed)[steps]
            row[method] = _acc(adapter, task, "test", base)
        row["head_only"] = _head_only(base, task, shots[seed])
        log(f"{name} seed {seed}: " + ", ".join(f"{m} {row[m]:.3f}" for m in METHODS))
        out["seeds"][str(seed)] = row
    out["summary"] = {m: mean_se([out["seeds"][str(s)][m] for s in cfg.seeds]) for m in METHODS}
    if cfg.z_curve_steps:
        out["z_curve"] = z_curve(name, cfg, base, library, lr=chosen["mhr_z"][0], log=log)
    return out


def z_curve(name: str, cfg: StudyConfig, base: BaseModel, library: dict[str, tuple[LoraAdapter, dict]], *,
            lr: float, log: Log) -> dict:
    """Diagnostic, not part of the selection: MHR-z trained longer than the step grid, seed 0's shots,
    validation and test accuracy after each of ``cfg.z_curve_steps`` (is MHR-z just under-trained?)."""
    task = _val_subset(load_task(name), cfg.val_limit)
    names = [n for n in library if n != name]
    seed = cfg.seeds[0]
    t0 = time.perf_counter()
    snaps = _train("mhr_z", base, [library[n][0] for n in names], names, task, sample_shots(task, cfg.shots, seed), cfg,
                   lr=lr, steps=cfg.z_curve_steps, seed=seed)
    points = [{"steps": s, "validation_accuracy": _acc(a, task, "validation", base), "test_accuracy": _acc(a, task, "test", base)}
              for s, a in sorted(snaps.items())]
    log(f"{name} mhr_z curve lr={lr:g}: " + ", ".join(
        f"{p['steps']}: val {p['validation_accuracy']:.3f} test {p['test_accuracy']:.3f}" for p in points)
        + f" ({time.perf_counter() - t0:.0f}s)")
    return {"lr": lr, "seed": seed, "points": points}


def mean_se(values: Sequence[float]) -> dict[str, float]:
    """Mean and standard error of the mean (sample sd / sqrt(n); 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "se": sd / math.sqrt(n), "n": n}


def run_study(cfg: StudyConfig, *, log: Log = print, library: str | Path | None = None) -> dict:
    """The whole study; returns the JSON-ready results (config, per task, per seed, summaries)."""
    started = time.perf_counter()
    with torch_threads(cfg.threads):
        base = cached_base_model()
        lib = load_library(library)
        tasks = [run_task(name, cfg, base, lib, log) for name in cfg.tasks]
    return {"config": dataclasses.asdict(cfg), "tasks": tasks, "seconds": round(time.perf_counter() - started, 1),
            "torch": torch.__version__}


LABELS = {"mhr_z": "MHR-z", "mhr_mu": "MHR-μ", "lora_scratch": "LoRA from scratch", "head_only": "head-only (head protocol)",
          "zero_shot": "zero-shot", "uniform_avg": "uniform average of inventory (no shots)",
          "own_adapter": "own adapter, full train split (ceiling)"}


def markdown_table(results: dict) -> str:
    """Rows: methods; columns: held-out tasks and their mean; cells: test accuracy % mean ± SE over seeds."""
    tasks = results["tasks"]
    head = "| method | " + " | ".join(t["task"] for t in tasks) + " | mean |"
    lines = [head, "|---" * (len(tasks) + 2) + "|"]
    for m in METHODS:
        cells = [f"{100 * t['summary'][m]['mean']:.1f} ± {100 * t['summary'][m]['se']:.1f}" for t in tasks]
        avg = sum(t["summary"][m]["mean"] for t in tasks) / len(tasks)
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {100 * avg:.1f} |")
    return "\n".join(lines)


def selection_table(results: dict) -> str:
    lines = ["| task | " + " | ".join(LABELS[m] for m in TRAINED) + " |", "|---" * (len(TRAINED) + 1) + "|"]
    for t in results["tasks"]:
        cells = [f"lr {t['selection'][m]['chosen']['lr']:g}, {t['selection'][m]['chosen']['steps']} steps" for m in TRAINED]
        lines.append(f"| {t['task']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(results: dict, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.json`` (everything) and ``<stem>.png`` (bars with SE); the tables are for the caller to print."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.png"]
    paths[0].write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")
    plot(results, paths[1])
    return paths


def plot(results: dict, path: Path) -> None:
    """Grouped bars: test accuracy per held-out task and method, SE over seeds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    methods = [m for m in METHODS if m != "own_adapter"]
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for k, m in enumerate(methods):
        xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(tasks))]
        ax.bar(xs, [100 * t["summary"][m]["mean"] for t in tasks], width,
               yerr=[100 * t["summary"][m]["se"] for t in tasks], capsize=2, label=LABELS[m])
    for i, t in enumerate(tasks):
        ax.hlines(100 * t["summary"]["own_adapter"]["mean"], i - 0.45, i + 0.45, colors="k", linestyles="dashed")
    ax.set_xticks(range(len(tasks)), [t["task"] for t in tasks])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"New task from {results['config']['shots']} shots (held out of the inventory); dashed: own adapter")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=3, loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
