"""Plots of a report dict (``QualityReport.to_dict()`` or the demo's), as PNG through matplotlib Agg.

``plot_report``: retained gain against k per method, one panel per group (the quality table).
``plot_task_accuracy``: per-task accuracy of each merge beside zero-shot and the individual
adapters, for one group (the demo: one rank, every task visible).
matplotlib is imported on use: it is slow to import and only these two functions need it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapterhub.files import atomic_write


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    _pyplot().close(fig)
    return path


def plot_report(data: Mapping[str, Any], path: str | Path) -> Path:
    """Retained gain vs k per method, one panel per group (ablations left out: they are in the
    table), with the exact linear merges and zero-shot (0) as flat reference lines; ``lego`` in red,
    the ``auto`` rows in black."""
    plt = _pyplot()
    groups = [g["name"] for g in data["groups"]]
    ablations = {s["key"] for s in data["plan"]["specs"] if s["ablation"]}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.4 * len(groups), 5.0), squeeze=False, sharey=True)
    ks = data["plan"]["ks"]
    floor = -0.1
    colours = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]  # red is lego's
    linear_styles = {"linear/avg": ":", "linear/sqrt": "-.", "linear/sum": (0, (5, 2))}
    for ax, g in zip(axes[0], groups):
        rows = [r for r in data["rows"][g] if r["key"] not in ablations]
        keys: list[str] = []
        for r in rows:
            if r["k"] is not None and r["key"] not in keys:
                keys.append(r["key"])
        for i, key in enumerate(keys):
            pts = sorted((r["k"], r["retained_gain"], r.get("gain_se") or 0.0, r["label"].replace("**", ""),
                          r["weights"]) for r in rows if r["key"] == key)
            lego, auto = key.startswith("lego"), key.startswith("auto/")
            label = pts[0][3] if lego or auto else f"{pts[0][3]} w={pts[0][4]}"
            colour = "black" if auto else "crimson" if key == "lego" else colours[i % len(colours)]
            ax.errorbar([p[0] for p in pts], [max(p[1], floor) for p in pts], yerr=[p[2] for p in pts],
                        marker="o" if lego or auto else "s", markersize=6 if key == "lego" or auto else 3.5,
                        capsize=2, linewidth=2.6 if key == "lego" or auto else 1.1,
                        linestyle=(":" if key == "auto/rule" else "-") if lego or auto else "--", color=colour,
                        label=label)
        for r in rows:
            if r["k"] is None:
                ax.axhline(r["retained_gain"], color="grey", linewidth=1.0, linestyle=linear_styles.get(r["key"], ":"),
                           label=f"{r['label']}, exact (rank n·r)")
        ax.axhline(0.0, color="black", linewidth=1.2, label="zero-shot (base model)")
        ax.set_ylim(floor, 1.05)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_title(g)
        ax.set_xlabel("k (merged rank)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("retained gain (merged - zero-shot) / (own - zero-shot)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    ncol = 3
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7.5, frameon=False)
    fig.tight_layout(rect=(0, 0.03 + 0.03 * math.ceil(len(labels) / ncol), 1, 1))
    return _save(fig, path)


def plot_task_accuracy(data: Mapping[str, Any], path: str | Path, *, group: str = "all tasks") -> Path:
    """Per-task accuracy (%) of each of ``group``'s merges beside zero-shot and the individual
    adapters: grouped bars, one group of bars per task."""
    plt = _pyplot()
    tasks = [t for t in data["tasks"] if any(t in s for g in data["groups"] if g["name"] == group for s in g["subsets"])]
    refs = data["reference_rows"][group]
    series = [("zero-shot", refs["zero-shot"]["accuracy"]), ("individual", refs["individual"]["accuracy"])]
    series += [(f"{r['label']} (w={r['weights']}, rank {r['rank']})", r["accuracy"]) for r in data["rows"][group]]
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(tasks) + 3), 5.4))
    width = 0.8 / len(series)
    for i, (label, accs) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [100 * accs[t] for t in tasks], width, label=label,
               color="black" if label == "zero-shot" else "grey" if label == "individual" else None)
    split = data["plan"]["split"]
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"One merged adapter for {len(tasks)} tasks: {split} accuracy per task")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
