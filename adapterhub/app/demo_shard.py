"""The demo's shard section: the MiniLM library packed into shared pools, and one MoS adapter trained.

It runs on a scratch catalog beside the demo's (``<home>/shard-demo``, remade on every run), because
a lossy pack replaces each packed adapter's weights by their reconstruction: packing the demo's own
``library/*`` entries would change what the merge and routing sections read on the next run.
Everything goes through the facade, as a user would run it: ``add_adapter``, ``shard_pack``,
``shard_stats``, ``evaluate_adapter`` (reads the packed weights transparently, rebuilt from the
pools) and ``train(method="mos")``.

The pack uses settings read off the curve (``PACK``); ``docs/shard_pools.md`` has the whole curve and the finding
that, on this library, rank truncation + int8 beats pooling at equal bytes. The MoS adapter gets a
short step budget (``MOS_STEPS``) to keep the demo under three minutes; the study with full training
and three seeds is in the same document.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapterhub.app.hub import AdapterHub

ProgressFn = Callable[[str], None]

PACK = {"pool_size": 256, "shards_per_vector": 4}
PRIVATE_SHARE = 0.10
"""Pool settings from the curve in docs/shard_pools.md (l = 4, 256 shards a pool, 10% of the library's
bytes kept private for the worst-reconstructed rank vectors): about 3.4x smaller at about 1.4 points."""
MOS_TASK = "wn_pos"
MOS_STEPS = 12
MOS_BATCH = 16
"""The demo's MoS adapter trains for a few seconds only (a MiniLM step is ~1 s on two cores): it shows the
workflow and both stored forms; the quality comparison with full training is docs/shard_pools.md."""


def _import_scratch(hub: AdapterHub, folder: Path, tasks: list[str]) -> dict[str, float]:
    """Add each task adapter as ``library/<task>``; returns its recorded test accuracy by name."""
    from adapterhub.eval.library import META_NAME
    from adapterhub.lora import LoraAdapter

    recorded = {}
    for task in tasks:
        meta = json.loads((folder / task / META_NAME).read_text(encoding="utf-8"))
        name = "library/" + task.replace("_", "-")
        hub.add_adapter(LoraAdapter.load(folder / task, validate=False), name, task=meta["task"], tags=["library"])
        recorded[name] = meta["metrics"]["test"]["adapter"]["accuracy"]
    return recorded


def shard_section(
    home: Path, library: Path, tasks: list[str], *, threads: int | None = None, mos_steps: int = MOS_STEPS,
    say: ProgressFn = lambda _msg: None,
) -> dict[str, Any]:
    """Pack ``tasks``' adapters of ``library`` into shared pools and score the packed adapters; train
    one MoS adapter. Returns ``{"pack": {...}, "mos": {...}, "seconds"}``."""
    started = time.perf_counter()
    scratch = home / "shard-demo"
    shutil.rmtree(scratch, ignore_errors=True)
    with AdapterHub(scratch, database_url=f"sqlite:///{scratch / 'catalog.db'}") as hub:
        recorded = _import_scratch(hub, library, tasks)
        base_model = hub.get(next(iter(recorded))).base_model
        t0 = time.perf_counter()
        unpacked = sum(hub.get(name).size for name in recorded)
        hub.shard_pack(base_model, private_budget=PRIVATE_SHARE * unpacked, **PACK)
        pack_seconds = time.perf_counter() - t0
        stats = hub.shard_stats(base_model)[0]
        packed = {}
        for name, original in recorded.items():
            result = hub.evaluate_adapter(name, record=False, threads=threads)
            packed[name] = {"original": original, "packed": result["tasks"][0]["accuracy"]}
        loss = sum(v["original"] - v["packed"] for v in packed.values()) / len(packed)
        pack = {"stats": stats, "seconds": round(pack_seconds, 1), "adapters": packed, "mean_loss": loss}
        say(f"shard pools: {len(packed)} adapters packed in {pack_seconds:.1f} s, "
            f"{stats['ratio']:.1f}x smaller (mean relative ΔW error {stats['mean_error']:.2f}); "
            f"accuracy {100 * loss:+.1f} points lost on average (docs/shard_pools.md: rank truncation + int8 "
            "does better at equal bytes on this library)")

        t0 = time.perf_counter()
        trained = hub.train(MOS_TASK, name="demo/mos-" + MOS_TASK.replace("_", "-"), method="mos",
                            max_steps=mos_steps, batch_size=MOS_BATCH, threads=threads)
        form = trained.get("mos") or {}
        metrics = trained["metrics"]["test"]
        mos = {"task": MOS_TASK, "steps": mos_steps, "accuracy": metrics.get("accuracy"),
               "zero_shot": metrics.get("zero_shot_accuracy"), "parameters": form.get("parameters"),
               "lora_rank_parameters": form.get("lora_rank_parameters"), "pool_bytes": form.get("bytes"),
               "seconds": round(time.perf_counter() - t0, 1)}
        say(f"MoS ({MOS_TASK}, {mos_steps} steps): accuracy {mos['accuracy']:.3f} vs zero-shot "
            f"{mos['zero_shot']:.3f}, {mos['parameters']:,} trainable parameters (a rank-8 LoRA: "
            f"{mos['lora_rank_parameters']:,}), stored as a plain rank-8 PEFT LoRA plus its pool form")
    return {"pack": pack, "mos": mos, "seconds": round(time.perf_counter() - started, 1)}
