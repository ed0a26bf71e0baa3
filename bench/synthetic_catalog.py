"""Synthetic catalog rows for the benchmarks: shaped like real LLM LoRA entries, no blobs needed.

Shared by ``catalog_bench.py`` and ``startup_bench.py`` so that both measure the same rows. Tests
do not import benchmarks; ``tests/store/test_store_perf.py`` builds its own rows, whose exact
shape its assertions check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from adapterhub.store import AdapterRecord

CONFIG = {
    "peft_type": "LORA",
    "r": 16,
    "lora_alpha": 32,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "base_model_name_or_path": "meta-llama/Llama-3.2-1B",
    "lora_dropout": 0.05,
    "bias": "none",
    "task_type": "CAUSAL_LM",
    "fan_in_fan_out": False,
    "use_rslora": False,
    "init_lora_weights": True,
    "modules_to_save": None,
}


def synthetic_records(n: int) -> Iterator[AdapterRecord]:
    """``n`` rows: a ~400-byte adapter_config.json, 2 tags, a task, a description, 97 namespaces."""
    for i in range(n):
        yield AdapterRecord(
            name=f"team{i % 97:02d}/adapter-{i:07d}",
            digest=hashlib.sha256(str(i).encode()).hexdigest(),
            size=10_000_000 + i,
            rank=16,
            alpha=32.0,
            target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
            config={**CONFIG, "revision": f"r{i}"},
            base_model="meta-llama/Llama-3.2-1B" if i % 3 else "Qwen/Qwen2.5-0.5B",
            task=f"task-{i % 40}",
            tags=(f"t{i % 11}", "lora"),
            description=f"LoRA adapter number {i} for task {i % 40}",
        )
