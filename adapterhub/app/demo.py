"""``run_demo``: the shipped task adapters, merged by LoRA-LEGO and the baselines, scored.

Steps, all through the ``AdapterHub`` facade on a fresh embedded catalog (SQLite under the demo's
home, whatever ``ADAPTERHUB_DATABASE_URL`` says), so the demo exercises what a user would run:

1. import every task adapter of the library (``examples/<task>/``) as ``library/<task>``, with its
   task and the metrics recorded when it was trained (test accuracy, zero-shot baseline), each in
   one write;
2. merge all of them with each demo method at rank 8 (``demo/<method>``), lineage recorded;
3. ``evaluate_adapter`` every merge: accuracy on each parent's task (test split), normalised
   accuracy (merged / own) and retained gain ((merged - zero-shot) / (own - zero-shot));
4. write ``demo.md`` (the table) and ``demo.png`` (per-task accuracy) with the merge-quality
   renderer (``adapterhub.eval.quality``), and return the rows;
5. route a mixed stream of test queries (``_route_and_score``);
6. the generative base: a few SmolLM2-135M adapters merged and scored on a small test subset
   (``adapterhub.app.demo_llm``);
7. shard pools: the library packed into shared pools and scored, and one MoS adapter trained
   (``adapterhub.app.demo_shard``, on a scratch catalog beside the demo's);
8. transfer: one library adapter moved to all-mpnet-base-v2 by Trans-LoRA (``adapterhub.app.demo_transfer``);
9. serve: a stream of embedding requests for different adapters, mixtures and ``auto``, answered
   in shared batches (``adapterhub.app.demo_serve``);
10. jobs: two merges submitted as one job, followed to the end (``adapterhub.app.demo_jobs``).

Imported adapters are reused when the demo runs again on the same home; ``demo/*`` entries are
remade, so a changed default shows up. ``quick=True`` uses three tasks and two methods.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub.app.demo_jobs import jobs_section
from adapterhub.app.demo_llm import generative_section
from adapterhub.app.demo_serve import serve_section
from adapterhub.app.demo_shard import MOS_STEPS, shard_section
from adapterhub.app.demo_transfer import TASK as TRANSFER_TASK
from adapterhub.app.demo_transfer import transfer_section
from adapterhub.app.hub import AdapterHub
from adapterhub.errors import AdapterNotFoundError, InvalidParameterError
from adapterhub.tasks import load_task
from adapterhub.store.records import MetricRecord

if TYPE_CHECKING:
    from adapterhub.eval.quality import MergeSpec

ProgressFn = Callable[[str], None]

DEMO_K = 8
TITLE = "adapterhub demo: LoRA-LEGO and baselines on the shipped task adapters"
GROUP = "all tasks"


def demo_methods(k: int = DEMO_K, *, quick: bool = False) -> list[MergeSpec]:
    """The demo's merges (``key`` is the catalog suffix): exact linear average, svd (at 1/sqrt(n),
    its convention picked on validation), ties, LoRA-LEGO and ``auto`` (the service's own pick for
    these adapters), all but the exact average at rank ``k``."""
    # torch-backed engines are imported on use, so importing this module stays cheap
    from adapterhub.eval.quality import MergeSpec
    from adapterhub.merge.lego import DEFAULT_OUTPUT_REWEIGHT

    def spec(key: str, label: str, method: str, weights: str = "default", **params: Any) -> MergeSpec:
        return MergeSpec(key, label, method, weights=weights, params=params, uses_k=False)

    lego = spec(f"lego-k{k}", "LoRA-LEGO", "lego", k=k, output_reweight=DEFAULT_OUTPUT_REWEIGHT)
    average = spec("linear-avg", "linear average (exact)", "linear", weights="avg")
    if quick:
        return [average, lego]
    return [
        average,
        spec(f"svd-sqrt-k{k}", "svd", "svd", weights="sqrt", k=k),
        spec(f"ties-k{k}", "ties", "ties", k=k),
        lego,
        spec(f"auto-k{k}", "auto", "auto", k=k),
    ]


def _exists(hub: AdapterHub, name: str) -> bool:
    try:
        hub.get(name)
    except AdapterNotFoundError:
        return False
    return True


def _recorded_metrics(task: str, meta: dict[str, Any], labels: dict[str, str], meta_name: str) -> list[MetricRecord]:
    """The metrics a library adapter was kept on (``adapterhub_meta.json``), as catalog rows."""
    records = []
    for split, results in meta.get("metrics", {}).items():
        if not isinstance(results, dict) or "adapter" not in results:
            continue
        extra = {"protocol": "similarity", "n": results["adapter"].get("n"), "source": f"{task}/{meta_name}"}
        records.append(MetricRecord(task=task, split=split, metric="accuracy", value=results["adapter"]["accuracy"],
                                    extra={**extra, "labels": labels}))
        if "macro_f1" in results["adapter"]:
            records.append(MetricRecord(task=task, split=split, metric="macro_f1",
                                        value=results["adapter"]["macro_f1"], extra=extra))
        if "zero_shot" in results:
            records.append(MetricRecord(task=task, split=split, metric="zero_shot_accuracy",
                                        value=results["zero_shot"]["accuracy"], extra=extra))
        if "adapter_head" in results:
            records.append(MetricRecord(task=task, split=split, metric="head_accuracy",
                                        value=results["adapter_head"]["accuracy"], extra={**extra, "protocol": "head"}))
    return records


def _import_library(hub: AdapterHub, folder: Path, tasks: list[str], say: ProgressFn) -> list[str]:
    """Add each task adapter as ``library/<task>`` with its recorded metrics (reused if present)."""
    from adapterhub.eval.library import META_NAME
    from adapterhub.lora import LoraAdapter
    from adapterhub.route.base import EXAMPLES_FILE

    names = []
    for task in tasks:
        meta = json.loads((folder / task / META_NAME).read_text(encoding="utf-8"))
        name = "library/" + task.replace("_", "-")
        names.append(name)
        if _exists(hub, name):
            continue
        labels = {lab["name"]: lab["description"] for lab in meta.get("labels", [])}
        examples = folder / task / EXAMPLES_FILE
        hub.add_adapter(
            LoraAdapter.load(folder / task, validate=False),  # values are checked while the blob is written
            name,
            task=meta["task"],
            tags=["library"],
            description=f"{meta.get('description', '')} Labels: " + "; ".join(f"{k}: {v}" for k, v in labels.items()),
            metrics=_recorded_metrics(task, meta, labels, META_NAME),
            source=str(folder / task),
            examples=examples if examples.is_file() else None,
        )
        say(f"imported {name} (test accuracy {meta['metrics']['test']['adapter']['accuracy']:.3f})")
    return names


def _merge_and_score(
    hub: AdapterHub, names: list[str], spec: MergeSpec, threads: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Make ``demo/<key>`` and score it: ``(table row, evaluate_adapter's result)``."""
    target = f"demo/{spec.key}"
    if _exists(hub, target):
        hub.remove(target)
    t0 = time.perf_counter()
    outcome = hub.merge(
        names, method=spec.method, weights=spec.weight_values(len(names)), params=dict(spec.params),
        name=target, seed=0, tags=["demo"],
    )
    t1 = time.perf_counter()
    result = hub.evaluate_adapter(target, threads=threads)
    t2 = time.perf_counter()
    from adapterhub.merge.registry import WEIGHT_CONVENTIONS

    label = spec.label
    if outcome.auto:
        label = f"auto: {outcome.method} ({outcome.auto['basis']})"
    row = {
        "name": target,
        "label": label,
        "method": outcome.method,
        "weights": WEIGHT_CONVENTIONS[outcome.auto["convention"]] if outcome.auto else spec.weights_label(),
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
    }
    return row, result


ROUTE_PER_TASK = 20  # test queries of each task in the demo's mixed stream
ROUTE_TEMPERATURE = 0.05  # cosine scores live in [-1, 1]: a small temperature (docs/routing.md)


def _route_and_score(hub: AdapterHub, names: list[str], tasks: list[str], per_task: int) -> dict[str, Any]:
    """Route a mixed stream of unlabeled test queries (``per_task`` of each task) over the imported
    adapters: the prototype router's top-1 and the hedged router's mixture (the best on text
    alone, docs/routing.md), scored beside each query's own adapter (the oracle); and how often
    top-1 picked the query's own adapter."""
    import torch

    from adapterhub.app.route_quality import held_out_stream
    from adapterhub.eval import evaluate

    stream = held_out_stream(tasks, "test", per_task)
    adapters = [hub.load(n) for n in names]
    rows: dict[str, dict[str, float]] = {}
    for own, task in enumerate(tasks):
        texts = stream[task].texts("test")
        row: dict[str, float] = {"oracle": evaluate(adapters[own], stream[task]).accuracy}
        for key, router, k in (("top1", "prototype", 1), ("hedged", "hedged", 3)):
            decisions = hub.route(texts, router=router, top_k=k, temperature=ROUTE_TEMPERATURE, among=names)
            w = torch.tensor([[dict(d.adapters).get(n, 0.0) for n in names] for d in decisions])
            row[key] = evaluate(adapters, stream[task], weights=w).accuracy
            if key == "top1":
                row["routed_to_own"] = float((w.argmax(dim=1) == own).float().mean())
        rows[task] = row
    mean = {key: sum(r[key] for r in rows.values()) / len(rows) for key in ("oracle", "top1", "hedged", "routed_to_own")}
    return {"per_task": per_task, "routers": ["prototype", "hedged"], "tasks": rows, "mean": mean}


def run_demo(
    *,
    home: str | Path | None = None,
    library: str | Path | None = None,
    out: str | Path | None = None,
    quick: bool = False,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """The end-to-end demo on a fresh catalog: import the shipped task adapters, merge them with
    LoRA-LEGO and the baselines, score every merge on every task, write a table and a plot.

    Args:
        home: the demo's ``ADAPTERHUB_HOME`` (default ``./demo-home``); its ``demo/`` entries
            are remade on every run, imported adapters are reused.
        library: folder of task adapters (default: the repository's ``examples/``).
        out: where ``demo.md`` and ``demo.png`` go (default ``<home>/report``).
        quick: three tasks and two methods, for a smoke test.
        threads: torch threads while evaluating.
        progress: called with one line per step.

    Returns:
        ``{"home", "library", "tasks", "split", "references": {task: {"zero_shot", "own"}},
        "rows": [one per merge], "seconds", "files": {"markdown", "png"}}``.

    Raises:
        LibraryNotFoundError: no task adapters found.
        InvalidParameterError: fewer than two task adapters.
    """
    from adapterhub.eval.library import META_NAME, find_library

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
    rows: list[dict[str, Any]] = []
    references: dict[str, dict[str, float]] = {}
    with AdapterHub(home_path, database_url=f"sqlite:///{home_path / 'catalog.db'}") as hub:
        names = _import_library(hub, folder, tasks, say)
        for spec in demo_methods(quick=quick):
            row, result = _merge_and_score(hub, names, spec, threads)
            for r in result["tasks"]:
                references.setdefault(r["task"], {"zero_shot": r["zero_shot_accuracy"], "own": r["own_accuracy"]})
            rows.append(row)
            say(f"{row['name']}: normalised accuracy {row['normalised_accuracy']:.3f}, retained gain "
                f"{row['retained_gain']:.2f} (merge {row['merge_seconds']:.1f} s, eval {row['eval_seconds']:.1f} s)")
        routing = _route_and_score(hub, names, tasks, ROUTE_PER_TASK // 2 if quick else ROUTE_PER_TASK)
        generative = generative_section(hub, folder / "smollm2", n_tasks=2 if quick else 3, threads=threads, say=say)
        transfer = (transfer_section(hub, "library/" + TRANSFER_TASK.replace("_", "-"), threads=threads, say=say)
                    if TRANSFER_TASK in tasks else {"skipped": f"{TRANSFER_TASK} is not in the library"})
        serve = serve_section(hub, names, [q for t in tasks for q in load_task(t).texts("test")[:32]], say=say)
        jobs = jobs_section(hub, names, say=say)
        say(f"routed {routing['per_task']} unlabeled test queries of each task: top-1 accuracy "
            f"{routing['mean']['top1']:.3f}, hedged mixture {routing['mean']['hedged']:.3f}, own adapter "
            f"{routing['mean']['oracle']:.3f} (own adapter picked {routing['mean']['routed_to_own']:.0%})")
    shard = shard_section(home_path, folder, tasks, threads=threads, mos_steps=MOS_STEPS // 3 if quick else MOS_STEPS,
                          say=say)
    data: dict[str, Any] = {
        "home": str(home_path),
        "library": str(folder),
        "tasks": tasks,
        "split": "test",
        "references": references,
        "rows": rows,
        "routing": routing,
        "generative": generative,
        "shard": shard,
        "transfer": transfer,
        "serve": serve,
        "jobs": jobs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out_dir = Path(out).expanduser().resolve() if out is not None else home_path / "report"
    data["files"] = {k: str(v) for k, v in write_demo(data, out_dir).items()}
    return data


def report_view(data: dict[str, Any]) -> dict[str, Any]:
    """The demo's result in the shape of a merge-quality report (one group, one rank, one seed,
    no standard errors), so the quality renderer draws its table and plot."""
    from adapterhub.eval.quality import reference_rows

    tasks, refs = data["tasks"], data["references"]
    rows = [
        {"key": r["name"], "label": r["label"], "weights": r["weights"], "k": r["k"], "rank": r["rank"],
         "normalised": r["normalised_accuracy"], "retained_gain": r["retained_gain"], "se": None, "gain_se": None,
         "accuracy": r["accuracy"], "seeds": [0]}
        for r in data["rows"]
    ]
    return {
        "plan": {"split": data["split"], "ks": [DEMO_K], "seeds": [0], "max_examples": None, "specs": []},
        "tasks": tasks,
        "groups": [{"name": GROUP, "subsets": [tasks]}],
        "reference_rows": {GROUP: reference_rows(tasks, {t: refs[t]["zero_shot"] for t in tasks},
                                                 {t: refs[t]["own"] for t in tasks})},
        "rows": {GROUP: rows},
        "lego_vs_best_baseline": [],
        "selection": None,
        "seconds": data["seconds"],
    }


def write_demo(data: dict[str, Any], folder: Path) -> dict[str, Path]:
    """``demo.md`` (the table) and ``demo.png`` (per-task accuracy) in ``folder``, written atomically."""
    from adapterhub.eval.quality import plot_task_accuracy, write_report

    intro = (
        f"All {len(data['tasks'])} task adapters merged into one; each merge scored on every task's "
        f"{data['split']} split (similarity protocol). Normalised accuracy = merged / the task's own adapter; "
        "retained gain = (merged - zero-shot) / (own - zero-shot); both averaged over the tasks. One seed (0); "
        "the full table with seeds, subsets and standard errors is docs/merge_quality.md."
    )
    footer = f"Catalog: `{data['home']}`; {data['seconds']:.0f} s in all."
    jobs = data.get("jobs")
    if jobs:
        footer = (f"Jobs: {len(jobs['stored'])} merges ran as one job on the {jobs['backend']} backend, "
                  f"{jobs['status']} in {jobs['seconds']} s (docs/jobs.md).\n\n" + footer)
    serve = data.get("serve")
    if serve:
        footer = (f"Serving: {serve['requests']} embedding requests over {serve['adapters']} adapters, 2 mixtures and "
                  f"auto in {serve['batches']} shared batches, {serve['requests_per_s']} requests/s against "
                  f"{serve['base_requests_per_s']} on the bare base (docs/serving.md).\n\n" + footer)
    return write_report(report_view(data), folder, "demo", title=TITLE, intro=intro, footer=footer,
                        plot=plot_task_accuracy, with_json=False)
