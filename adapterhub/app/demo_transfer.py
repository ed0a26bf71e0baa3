"""The demo's transfer section: one MiniLM library adapter moved to all-mpnet-base-v2 (Trans-LoRA).

Through the facade, as a user would: ``transfer_prepare`` builds the source-side kit from the
task's train inputs (the data is at hand at source time), ``transfer`` samples candidates with
SmolLM2 prompted by the 5 seeds, keeps what the discriminator calls real, has the MiniLM adapter
label them and distils a fresh LoRA on MPNet. It runs on the demo's catalog (the source is the
imported ``library/<task>``); the result, ``transferred/<task>-mpnet``, is remade on every run.

Small on purpose (``DEMO``): a few dozen synthetic inputs and candidates, so the section takes
about half a minute; the study with 250 inputs on every task, the baselines and the ablations is
``docs/transfer.md``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapterhub.app.hub import AdapterHub

TASK = "wn_adj_kind"
DEMO = {"samples": 32, "max_candidates": 64}
KIT_REAL = 32
"""Real inputs (and as many synthetic ones) the demo's discriminator trains on (the study: 128)."""


def transfer_section(hub: AdapterHub, source: str, *, threads: int | None = None,
                     say: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Prepare ``source``'s kit and transfer it to MPNet; returns the numbers the demo prints."""
    from adapterhub.tasks import load_task

    started = time.perf_counter()
    target = f"transferred/{source.split('/', 1)[-1]}-mpnet"  # outside library/: the merges read every library entry
    if hub.catalog.exists(target):
        hub.remove(target)
    task = load_task(TASK)
    with tempfile.TemporaryDirectory(prefix=".demo-transfer-", dir=hub.settings.home) as tmp:
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in task.texts("train")), encoding="utf-8")
        kit = hub.transfer_prepare(source, data=data, max_real=KIT_REAL, threads=threads)
    result = hub.transfer(source, to_base="mpnet", new_name=target, threads=threads, **DEMO)
    stats, test = result["stats"], result["metrics"]["test"]
    own = hub.show(source)
    source_accuracy = next((m["value"] for m in own["metrics"] if m["metric"] == "accuracy" and m["split"] == "test"),
                           None)
    section = {
        "source": source, "target": target, "task": TASK, "samples": DEMO["samples"],
        "discriminator_accuracy": kit["stats"]["discriminator_validation_accuracy"],
        "generated": stats["generated"], "accepted": stats["accepted"], "acceptance_rate": stats["acceptance_rate"],
        "source_accuracy": source_accuracy, "accuracy": test["accuracy"], "zero_shot": test["zero_shot_accuracy"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    say(f"transfer: {source} -> {target}: {stats['accepted']} of {stats['generated']} sampled inputs kept by the "
        f"discriminator; MPNet accuracy {100 * test['accuracy']:.1f}% (MPNet zero-shot "
        f"{100 * test['zero_shot_accuracy']:.1f}%) in {section['seconds']:.0f} s")
    return section
