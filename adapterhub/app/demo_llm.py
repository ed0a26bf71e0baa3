"""The demo's generative row: SmolLM2-135M task adapters imported, merged by LoRA-LEGO, scored.

The encoder demo (``adapterhub.app.demo``) scores whole test splits in seconds; a 135M-parameter
causal LM scores ~17 examples per second on two cores, so this section takes a few task adapters
of ``examples/smollm2/`` and a small fixed test subset per task (``PER_TASK``, said in the output)
to keep the whole demo under three minutes. Everything goes through the facade, as a user would:
``add_adapter``, ``merge`` and ``evaluate_adapter(limit=...)`` (which scores the merge on each
parent's task beside the zero-shot base and the parent itself, on the same examples).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapterhub.app.hub import AdapterHub
from adapterhub.errors import AdapterNotFoundError

PER_TASK = 24
"""Test examples per task in the demo (a fixed seeded subset: ``adapterhub.eval.generative.subset_indices``)."""

PREFERRED = ("wn_pos", "chat_language", "wn_antonym")
"""Two classification tasks and one generation task, when the library has them."""

ProgressFn = Callable[[str], None]


def _pick(folder: Path, n: int) -> list[str]:
    from adapterhub.eval.library import META_NAME

    available = sorted(p.parent.name for p in folder.glob(f"*/{META_NAME}"))
    chosen = [t for t in PREFERRED if t in available]
    return (chosen + [t for t in available if t not in chosen])[:n]


def generative_section(
    hub: AdapterHub, library: Path, *, n_tasks: int = 3, per_task: int = PER_TASK, threads: int | None = None,
    say: ProgressFn = lambda _msg: None,
) -> dict[str, Any]:
    """Import ``n_tasks`` SmolLM2 adapters as ``smollm2/<task>``, merge them (LoRA-LEGO, k = 8), score.

    Returns:
        ``{"base", "per_task", "tasks": {task: {"zero_shot", "own", "merged"}}, "mean", "seconds"}``,
        or ``{"skipped": reason}`` when the library or the base model is not installed.
    """
    from adapterhub.models.base import BaseModelNotFoundError
    from adapterhub.lora import LoraAdapter
    from adapterhub.merge.lego import DEFAULT_OUTPUT_REWEIGHT

    started = time.perf_counter()
    tasks = _pick(library, n_tasks)
    if len(tasks) < 2:
        return {"skipped": f"fewer than two SmolLM2 task adapters in {library}"}
    names = []
    for task in tasks:
        name = "smollm2/" + task.replace("_", "-")
        names.append(name)
        try:
            hub.get(name)
        except AdapterNotFoundError:
            hub.add_adapter(LoraAdapter.load(library / task, validate=False), name, task=task, tags=["library", "smollm2"],
                            source=str(library / task))
    target = "demo/smollm2-lego-k8"
    try:
        hub.get(target)
        hub.remove(target)
    except AdapterNotFoundError:
        pass
    hub.merge(names, method="lego", params={"k": 8, "output_reweight": DEFAULT_OUTPUT_REWEIGHT}, name=target,
              seed=0, tags=["demo"])
    try:
        result = hub.evaluate_adapter(target, limit=per_task, threads=threads)
    except BaseModelNotFoundError as e:
        return {"skipped": str(e)}
    rows = {r["task"]: {"zero_shot": r["zero_shot_accuracy"], "own": r["own_accuracy"], "merged": r["accuracy"]}
            for r in result["tasks"]}
    mean = {k: sum(r[k] for r in rows.values()) / len(rows) for k in ("zero_shot", "own", "merged")}
    data = {"base": "HuggingFaceTB/SmolLM2-135M-Instruct", "per_task": per_task, "tasks": rows, "mean": mean,
            "merge": target, "seconds": round(time.perf_counter() - started, 1)}
    say(f"SmolLM2: {len(tasks)} task adapters merged by LoRA-LEGO (k=8) on {per_task} test examples a task: "
        f"zero-shot {mean['zero_shot']:.3f}, own adapters {mean['own']:.3f}, merged {mean['merged']:.3f}")
    return data
