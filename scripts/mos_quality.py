"""MoS at the parameter budget of LoRA rank 2 against plain LoRA rank 2, 8 (and 16), per task, 3 seeds.

Issue 12, item 1. MoS is ``MosConfig(budget_rank=2, rank=8, shards_per_vector=2, private_rank=1)``
(the CLI defaults), trained by ``adapterhub.shard.mos_train.train_mos_adapter``; LoRA by the
service's trainers (``models.train.train_adapter`` on MiniLM, ``models.train_causal.train_causal_adapter``
on SmolLM2), all with alpha 16 and AdamW. Every method gets the same learning-rate grid; the rate
is chosen per method (one rate for all tasks) by the mean *validation* accuracy of seed 0, and
only the chosen rate is run for the other seeds. Test accuracy is reported; scoring is the app's
(``eval.bed.score_on_task``: similarity protocol on MiniLM, answer log-likelihood on SmolLM2).

Order of work (so partial results are useful): seed 0 of every (method, rate, task), the other
seeds of the chosen rates, then the LoRA rank-16 reference (the "8x" point of the paper's claim:
MoS at rank-2 budget has 1/8 of rank 16's parameters, 1/4 of rank 8's).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shard_study import Units, run_unit

MOS_KW = {"budget_rank": 2, "rank": 8, "shards_per_vector": 2, "private_rank": 1}
LORA_RANKS = {"lora_r2": 2, "lora_r8": 8, "lora_r16": 16}
MINILM_TASKS = ["wn_pos", "wn_adj_kind"]
"""The two library tasks cheapest to train and score, which choose the rates and get three seeds: on two
cores shared with a load of 7-13, a MiniLM step took 2-9 s instead of 0.5 s, and seven tasks x three seeds
did not fit the deadline. The other five run at the chosen rates (``--tasks ... --part extra``)."""


@dataclass
class Protocol:
    """The study's settings for one base (recorded in the JSON's meta)."""

    base: str
    tasks: list[str]
    seeds: list[int]
    max_steps: int
    epochs: int
    batch_size: int
    lrs: dict[str, list[float]]  # method -> learning-rate grid (seed 0)
    late: list[str] = field(default_factory=list)  # methods run after the core three (reference points)
    test_limit: int | None = None  # fixed seeded subset (causal LM only)
    validation_limit: int | None = None
    alpha: float = 16.0


def protocol_for(base: str, quick: bool = False) -> Protocol:
    """MiniLM: 2 of the 7 library tasks (``MINILM_TASKS``), at most 50 steps (<= 3 epochs), batch 32, whole splits.
    SmolLM2 (reduced: 3-8 s a step on one shared core): the 2 cheapest classification tasks to score
    (4 and 3 answer options), 40 steps of batch 8, 100 test / 50 validation examples (fixed seeded
    subsets), rank 16 not run; every method gets the rate grid {1e-3, 3e-3} (rank 8 at 1e-3 alone
    lost ~20 points to rank 2 at 3e-3 in 40 steps: an untuned rate, not a rank effect).
    On MiniLM, MoS and rank 2 (the two at the small budget) get the rate grid {1e-3, 3e-3}; ranks 8 and 16
    run at the library recipe's 1e-3 (the cores did not allow a grid for every method).
    Validation is scored for seed 0 only (it only chooses the rate)."""
    grid = [1e-3, 3e-3]
    if base == "minilm":
        from adapterhub.eval.library import load_library

        tasks = [t for t in MINILM_TASKS if t in load_library("examples")] if not quick else ["wn_adj_kind"]
        return Protocol(base, tasks, [0, 1, 2] if not quick else [0], 50 if not quick else 4, 3, 32,
                        {"lora_r2": grid, "lora_r8": [1e-3], "mos": grid, "lora_r16": [1e-3]}, late=["lora_r16"])
    tasks = ["wn_pos", "wn_adj_kind"] if not quick else ["wn_pos"]
    return Protocol(base, tasks, [0, 1, 2] if not quick else [0], 40 if not quick else 2, 2, 8,
                    {"lora_r2": grid, "lora_r8": grid, "mos": grid}, test_limit=100 if not quick else 8,
                    validation_limit=50 if not quick else 8)


def lora_parameters(adapter: Any) -> int:
    """Stored LoRA factor values (A and B) of an adapter: the trainable parameters of plain LoRA."""
    return sum(m.A.numel() + m.B.numel() for _, m in adapter.modules())


def _train(model: Any, p: Protocol, task: str, method: str, lr: float, seed: int) -> tuple[Any, dict[str, Any]]:
    """Train one adapter; returns it and the training facts worth keeping."""
    common = {"lr": lr, "batch_size": p.batch_size, "max_steps": p.max_steps, "epochs": p.epochs}
    if method == "mos":
        from adapterhub.shard import MosConfig
        from adapterhub.shard.mos_train import train_mos_adapter

        res = train_mos_adapter(model, task, MosConfig(**MOS_KW, alpha=p.alpha, seed=seed), **common)
        facts = {"parameters": res.metrics["mos_parameters"], "lora_rank_parameters": res.metrics["lora_rank_parameters"]}
    else:
        rank = LORA_RANKS[method]
        if p.base == "minilm":
            from adapterhub.models.train import train_adapter

            res = train_adapter(model, task, rank=rank, alpha=p.alpha, seed=seed, **common)
        else:
            from adapterhub.models.train_causal import train_causal_adapter

            res = train_causal_adapter(model, task, rank=rank, alpha=p.alpha, seed=seed, **common)
        facts = {"parameters": lora_parameters(res.adapter)}
    facts.update(steps=len(res.losses), train_s=res.metrics["seconds"], first_loss=round(res.losses[0], 4),
                 final_loss=round(res.losses[-1], 4))
    return res.adapter, facts


def _score(adapter: Any, task: str, model: Any, split: str, p: Protocol) -> dict[str, Any]:
    from adapterhub.eval.bed import score_on_task

    limit = p.test_limit if split == "test" else p.validation_limit
    r = score_on_task(adapter, task, model, split=split, limit=limit)
    return {"accuracy": r.accuracy, "accuracy_stderr": r.accuracy_stderr, "macro_f1": r.macro_f1, "n": r.n}


def unit_key(task: str, method: str, lr: float, seed: int) -> str:
    return f"{task}/{method}/lr{lr:g}/s{seed}"


def merged_units(path: Path, base: str) -> dict[str, dict[str, Any]]:
    """Finished units of this study in ``path``'s folder: ``shard_pools_mos_<base>.json`` and its siblings
    ``shard_pools_mos_<base>_<part>.json`` (other processes running other tasks of the same study at the
    same time), read fresh from disk."""
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(path.parent.glob(f"shard_pools_mos_{base}*.json")):
        try:
            out.update(json.loads(f.read_text()).get("units", {}))
        except (OSError, ValueError):  # a sibling being replaced right now: read it next time
            continue
    return out


def chosen_lr(units: dict[str, dict[str, Any]], p: Protocol, method: str) -> float | None:
    """The rate of ``method`` with the best mean validation accuracy of seed 0 over the tasks (None until all ran)."""
    best: tuple[float, float] | None = None
    for lr in p.lrs[method]:
        recs = [units.get(unit_key(t, method, lr, p.seeds[0])) for t in p.tasks]
        if any(r is None for r in recs):
            return None
        score = sum(r["validation"]["accuracy"] for r in recs) / len(recs)  # type: ignore[index]
        if best is None or score > best[0] + 1e-12:
            best = (score, lr)
    return best[1] if best else None


def run_mos(base: str, path: Path, *, quick: bool = False, tasks: list[str] | None = None) -> Units:
    """Run (or resume) the MoS study on one base, writing every unit to ``path`` as it finishes.

    ``tasks`` (default: the protocol's) lets several processes share the study, each on its own tasks
    and its own file ``<stem>_<part>.json``; the rate for seeds > 0 is chosen over *all* the protocol's
    tasks (waiting for the other processes' selection runs), and no unit another file holds is run again.
    """
    import torch

    from adapterhub.eval.bed import load_bed_model

    p = protocol_for(base, quick)
    mine = tasks or p.tasks
    units = Units(path, {"protocol": asdict(p), "mos_config": MOS_KW, "threads": torch.get_num_threads()})
    units.save()
    if base == "minilm":
        from adapterhub.models.base import load_base_model

        model = load_base_model(None)  # a private copy: training mutates (and restores) it
    else:
        model = load_bed_model(base)
    for task in mine:  # the zero-shot baseline
        if f"{task}/zero_shot" not in merged_units(path, base):
            run_unit(units, f"{task}/zero_shot", lambda t=task: {
                "test": _score(None, t, model, "test", p), "validation": _score(None, t, model, "validation", p)})

    def one(task: str, method: str, lr: float, seed: int) -> None:
        def work() -> dict[str, Any]:
            adapter, facts = _train(model, p, task, method, lr, seed)
            val = _score(adapter, task, model, "validation", p) if seed == p.seeds[0] else None
            return {**facts, "task": task, "method": method, "lr": lr, "seed": seed, "validation": val,
                    "test": _score(adapter, task, model, "test", p)}

        if unit_key(task, method, lr, seed) not in merged_units(path, base):
            run_unit(units, unit_key(task, method, lr, seed), work)

    def wait_lr(method: str) -> float:
        while (lr := chosen_lr(merged_units(path, base), p, method)) is None:
            print(f"{time.strftime('%H:%M:%S')} waiting for the other tasks' selection runs of {method}", flush=True)
            time.sleep(60)
        return lr

    core = [m for m in p.lrs if m not in p.late]
    for methods in (core, p.late):
        for task in mine:  # seed 0, every rate (the selection runs); task by task, so a cut run has whole tasks
            if task not in p.tasks:  # a task outside the protocol's: it does not choose, it takes the chosen rate
                for method in methods:
                    one(task, method, wait_lr(method), p.seeds[0])
                continue
            for lr in sorted({lr for m in methods for lr in p.lrs[m]}):
                for method in methods:
                    if lr in p.lrs[method]:
                        one(task, method, lr, p.seeds[0])
        for seed in p.seeds[1:]:
            pending = list(methods)
            while pending:  # a method whose rate is already chosen first: no idle wait while another one's is not
                ready = [m for m in pending if chosen_lr(merged_units(path, base), p, m) is not None]
                method = ready[0] if ready else pending[0]
                lr = wait_lr(method)
                for task in mine:
                    one(task, method, lr, seed)
                pending.remove(method)
    units.meta["chosen_lr"] = {m: chosen_lr(merged_units(path, base), p, m) for m in p.lrs}
    units.save()
    return units
