"""``adapterhub demo``: the shipped task adapters, merged by LoRA-LEGO and the baselines, scored.

Steps, all through the ``AdapterHub`` facade on a fresh embedded catalog (SQLite under the demo's
home, whatever ``ADAPTERHUB_DATABASE_URL`` says):

1. import every task adapter of the library (``examples/<task>/``) as ``library/<task>``, with its
   task and the metrics recorded when it was trained (test accuracy, zero-shot baseline);
2. merge all of them with each demo method at rank 8 (``demo/<method>``), lineage recorded;
3. ``evaluate_adapter`` every merge: accuracy on each parent's task (test split), normalised
   accuracy (merged / own) and retained gain ((merged - zero-shot) / (own - zero-shot));
4. write ``demo.md`` (the table) and ``demo.png`` (the plot) and return the rows.

Imported adapters are reused when the demo runs again on the same home; ``demo/*`` entries are
remade, so a changed default shows up. ``quick=True`` uses three tasks and two methods.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.errors import InvalidParameterError

if TYPE_CHECKING:
    from adapterhub.app import AdapterHub

ProgressFn = Callable[[str], None]

META_NAME = "adapterhub_meta.json"
DEMO_K = 8


@dataclass(frozen=True)
class DemoMethod:
    """One merge the demo makes: catalog suffix, label, method, weight convention, parameters."""

    slug: str
    label: str
    method: str
    weights: str = "default"  # "default", "avg" (1/n), "sqrt" (1/sqrt(n)), "sum" (1)
    params: dict[str, Any] = field(default_factory=dict)

    def weights_label(self) -> str:
        """``1/n``, ``1/√n`` or ``1``, with ``(default)`` when it is the method's own default."""
        from adapterhub.merge import REGISTRY

        if self.weights == "default":
            return ("1/n" if REGISTRY.get(self.method).default_weights == "uniform" else "1") + " (default)"
        return {"avg": "1/n", "sqrt": "1/√n", "sum": "1"}[self.weights]

    def weight_values(self, n: int) -> list[float] | None:
        return {
            "default": None,
            "avg": [1.0 / n] * n,
            "sqrt": [1.0 / math.sqrt(n)] * n,
            "sum": [1.0] * n,
        }[self.weights]


def demo_methods(k: int = DEMO_K, *, quick: bool = False) -> list[DemoMethod]:
    """The demo's merges: exact linear average, svd (its default weights 1, and 1/sqrt(n)), ties
    and LoRA-LEGO, all but the exact average at rank ``k``."""
    from adapterhub.merge.lego import DEFAULT_OUTPUT_REWEIGHT

    lego = DemoMethod(f"lego-k{k}", "LoRA-LEGO", "lego", params={"k": k, "output_reweight": DEFAULT_OUTPUT_REWEIGHT})
    average = DemoMethod("linear-avg", "linear average (exact)", "linear", weights="avg")
    if quick:
        return [average, lego]
    return [
        average,
        DemoMethod(f"svd-k{k}", "svd", "svd", params={"k": k}),
        DemoMethod(f"svd-sqrt-k{k}", "svd", "svd", weights="sqrt", params={"k": k}),
        DemoMethod(f"ties-k{k}", "ties", "ties", params={"k": k}),
        lego,
    ]


def find_library(library: str | Path | None = None) -> Path:
    """The folder of task adapters: ``library`` if given, else ``examples/`` of the source checkout
    this package runs from, else ``./examples``.

    Raises:
        LibraryNotFoundError: none of them holds ``<task>/adapterhub_meta.json``.
    """
    from adapterhub.eval.library import LibraryNotFoundError, library_dir

    candidates = [Path(library).expanduser()] if library is not None else [library_dir(), Path.cwd() / "examples"]
    for folder in candidates:
        if any(folder.glob(f"*/{META_NAME}")):
            return folder.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise LibraryNotFoundError(
        f"no task adapters (<task>/{META_NAME}) in {where}; run from the repository root or pass --library PATH"
    )


def _import_library(hub: AdapterHub, folder: Path, tasks: list[str], say: ProgressFn) -> list[str]:
    """Add each task adapter as ``library/<task>`` with its recorded metrics (reused if present)."""
    names = []
    for task in tasks:
        meta = json.loads((folder / task / META_NAME).read_text(encoding="utf-8"))
        name = "library/" + task.replace("_", "-")
        names.append(name)
        if hub.catalog.exists(name):
            continue
        labels = {lab["name"]: lab["description"] for lab in meta.get("labels", [])}
        hub.add(
            folder / task, name, task=meta["task"], tags=["library"],
            description=f"{meta.get('description', '')} Labels: " + "; ".join(f"{k}: {v}" for k, v in labels.items()),
        )
        for split, results in meta.get("metrics", {}).items():
            if not isinstance(results, dict) or "adapter" not in results:
                continue
            extra = {"protocol": "similarity", "n": results["adapter"].get("n"), "source": f"{task}/{META_NAME}"}
            hub.catalog.add_metric(name, task=task, split=split, metric="accuracy",
                                   value=results["adapter"]["accuracy"], extra={**extra, "labels": labels})
            if "macro_f1" in results["adapter"]:
                hub.catalog.add_metric(name, task=task, split=split, metric="macro_f1",
                                       value=results["adapter"]["macro_f1"], extra=extra)
            if "zero_shot" in results:
                hub.catalog.add_metric(name, task=task, split=split, metric="zero_shot_accuracy",
                                       value=results["zero_shot"]["accuracy"], extra=extra)
            if "adapter_head" in results:
                hub.catalog.add_metric(name, task=task, split=split, metric="head_accuracy",
                                       value=results["adapter_head"]["accuracy"], extra={**extra, "protocol": "head"})
        say(f"imported {name} (test accuracy {meta['metrics']['test']['adapter']['accuracy']:.3f})")
    return names


def run_demo(
    *,
    home: str | Path | None = None,
    library: str | Path | None = None,
    out: str | Path | None = None,
    quick: bool = False,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the demo (see the module docstring); returns the table as data and the files written.

    Raises:
        LibraryNotFoundError: no task adapters found.
        InvalidParameterError: fewer than two task adapters.
    """
    from adapterhub.app import AdapterHub

    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    home_path = (Path(home).expanduser() if home is not None else Path.cwd() / "demo-home").resolve()
    folder = find_library(library)
    tasks = sorted(p.parent.name for p in folder.glob(f"*/{META_NAME}"))
    if quick:
        tasks = tasks[:3]
    if len(tasks) < 2:
        raise InvalidParameterError(f"the demo merges at least two task adapters; {folder} has {len(tasks)}")
    say(f"demo catalog: {home_path} (library: {folder})")
    hub = AdapterHub(home_path, database_url=f"sqlite:///{home_path / 'catalog.db'}")
    rows: list[dict[str, Any]] = []
    references: dict[str, dict[str, float]] = {}
    try:
        names = _import_library(hub, folder, tasks, say)
        for spec in demo_methods(quick=quick):
            target = f"demo/{spec.slug}"
            if hub.catalog.exists(target):
                hub.remove(target)
            t0 = time.perf_counter()
            outcome = hub.merge(
                names, method=spec.method, weights=spec.weight_values(len(names)), params=dict(spec.params),
                name=target, seed=0, tags=["demo"],
            )
            t1 = time.perf_counter()
            result = hub.evaluate_adapter(target, threads=threads)
            t2 = time.perf_counter()
            for r in result["tasks"]:
                references.setdefault(r["task"], {"zero_shot": r["zero_shot_accuracy"], "own": r["own_accuracy"]})
            rows.append({
                "name": target,
                "label": spec.label,
                "method": spec.method,
                "weights": spec.weights_label(),
                "weight_values": list(outcome.weights),
                "k": spec.params.get("k"),
                "rank": outcome.record.rank,
                "params": outcome.params,
                "accuracy": {r["task"]: r["accuracy"] for r in result["tasks"]},
                "normalised_accuracy": result["mean"].get("normalised_accuracy"),
                "retained_gain": result["mean"].get("retained_gain"),
                "mixing_share": outcome.report.get("mixing_share"),
                "merge_seconds": round(t1 - t0, 2),
                "eval_seconds": round(t2 - t1, 2),
            })
            say(f"{target}: normalised accuracy {rows[-1]['normalised_accuracy']:.3f}, retained gain "
                f"{rows[-1]['retained_gain']:.2f} (merge {t1 - t0:.1f} s, eval {t2 - t1:.1f} s)")
    finally:
        hub.close()
    data = {
        "home": str(home_path),
        "library": str(folder),
        "tasks": tasks,
        "split": "test",
        "references": references,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out_dir = Path(out).expanduser().resolve() if out is not None else home_path / "report"
    data["files"] = {k: str(v) for k, v in write_demo(data, out_dir).items()}
    return data


def _ref_summary(data: dict[str, Any], which: str) -> tuple[dict[str, float], float, float]:
    refs = data["references"]
    accs = {t: refs[t]["zero_shot" if which == "zero-shot" else "own"] for t in refs}
    norm = [accs[t] / refs[t]["own"] for t in refs]
    gain = [(accs[t] - refs[t]["zero_shot"]) / (refs[t]["own"] - refs[t]["zero_shot"]) for t in refs]
    return accs, sum(norm) / len(norm), sum(gain) / len(gain)


def render_demo_markdown(data: dict[str, Any]) -> str:
    """The demo's table as Markdown (the same numbers the CLI prints)."""
    tasks = data["tasks"]
    lines = [
        "# adapterhub demo: LoRA-LEGO and baselines on the shipped task adapters",
        "",
        f"All {len(tasks)} task adapters merged into one; each merge scored on every task's test split "
        "(similarity protocol). Normalised accuracy = merged / the task's own adapter; retained gain = "
        "(merged - zero-shot) / (own - zero-shot); both averaged over the tasks. One seed (0); the full "
        "table with seeds, subsets and standard errors is docs/merge_quality.md.",
        "",
        "| merge | weights | k | rank | norm. acc. | retained gain | " + " | ".join(tasks) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(tasks),
    ]
    for which in ("zero-shot", "individual"):
        accs, norm, gain = _ref_summary(data, which)
        lines.append(f"| **{which}** | | | | {norm:.3f} | {gain:.2f} | "
                     + " | ".join(f"{100 * accs[t]:.1f}" for t in tasks) + " |")
    for r in data["rows"]:
        lines.append(
            f"| {r['label']} | {r['weights']} | {r['k'] if r['k'] is not None else 'exact'} | {r['rank']} | "
            f"{r['normalised_accuracy']:.3f} | {r['retained_gain']:.2f} | "
            + " | ".join(f"{100 * r['accuracy'][t]:.1f}" for t in tasks) + " |"
        )
    lines += ["", f"Catalog: `{data['home']}`; {data['seconds']:.0f} s in all.", ""]
    return "\n".join(lines)


def plot_demo(data: dict[str, Any], path: Path) -> Path:
    """Per-task accuracy of each merge beside zero-shot and the individual adapters (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adapterhub.files import atomic_write

    tasks = data["tasks"]
    series = [("zero-shot", _ref_summary(data, "zero-shot")[0]), ("individual", _ref_summary(data, "individual")[0])]
    series += [(f"{r['label']} (w={r['weights']}, rank {r['rank']})", r["accuracy"]) for r in data["rows"]]
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(tasks) + 3), 5.4))
    width = 0.8 / len(series)
    for i, (label, accs) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [100 * accs[t] for t in tasks], width, label=label,
               color="black" if label == "zero-shot" else "grey" if label == "individual" else None)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"One merged adapter for {len(tasks)} tasks: test accuracy per task")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def write_demo(data: dict[str, Any], folder: Path) -> dict[str, Path]:
    """``demo.md`` and ``demo.png`` in ``folder`` (atomic writes)."""
    from adapterhub.files import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": folder / "demo.md", "png": folder / "demo.png"}
    with atomic_write(paths["markdown"], "w") as f:
        f.write(render_demo_markdown(data))
    plot_demo(data, paths["png"])
    return paths
