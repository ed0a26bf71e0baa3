"""Trans-LoRA on the bed: MiniLM library adapters moved to all-mpnet-base-v2, beside every baseline.

Issue 13. Per task and seed, in this order (so partial results are useful; each finished unit is
appended to the JSON, and a rerun skips what is there):

1. source side: seeds = the first 5 inputs stored with the library adapter (``adapterhub_examples.jsonl``);
   the discriminator (MiniLM + rank-4 LoRA + head) is trained on 128 real train inputs and 128
   generated ones (``transfer.prepare_source``);
2. one candidate pool of ``--pool`` samples from SmolLM2-135M-Instruct prompted by the seeds; the
   discriminator scores each. **filtered** = the first ``--samples`` candidates it calls real;
   **unfiltered** = the first ``--samples`` candidates (the paper's ablation); **other-task** =
   ``--samples`` real train inputs of another task (the paper's "random real text" ablation);
3. each set is labelled by the teacher (MiniLM + the library adapter) and a fresh rank-8 LoRA on
   MPNet is distilled on it (``transfer.train_student``), then scored on the real test split;
4. references, once per task: source + LoRA (MiniLM), MPNet zero-shot, MPNet head-only and LoRA
   trained on the 5 seeds with their true labels (seeds only), MPNet LoRA on the full real train
   split (the upper bound); and the MMD between each synthetic set and the real test inputs in
   MiniLM's base embedding space (the paper's Table 8 shape), with real-vs-real as the floor.

Run: ``python scripts/transfer_study.py`` (all 7 library tasks, seed 0, then seeds 1-2 on
``wn_pos`` and ``wn_adj_kind``); ``--plot`` writes ``docs/transfer.md``'s figure and table.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from adapterhub.eval.bed import score_on_task
from adapterhub.eval.heads import fit_linear_head
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import cached_base_model
from adapterhub.models.causal import cached_smollm2
from adapterhub.models.mpnet import MPNET_TARGET_MODULES, cached_mpnet
from adapterhub.models.train import train_adapter
from adapterhub.route.base import parse_examples
from adapterhub.tasks import load_task
from adapterhub.transfer import TransferConfig, p_real, prepare_source, synthesize, teacher_probs, train_student
from adapterhub.transfer.distill import task_with_train

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["wn_noun_supersense", "wn_verb_supersense", "wn_pos", "wn_adj_kind", "wn_animal_class", "chat_topic",
         "chat_language"]
SEED_TASKS = ["wn_pos", "wn_adj_kind"]
OTHER_TASK = {t: TASKS[(i + 1) % len(TASKS)] for i, t in enumerate(TASKS)}


def mmd_rbf(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² with an RBF kernel at the median pairwise distance of the pooled sample."""
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    sigma2 = d2[d2 > 0].median()
    k = torch.exp(-d2 / (2 * sigma2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
                 - 2 * kxy.mean())


def seeds_of(task_name: str) -> tuple[list[str], list[int]]:
    """The adapter's first 5 stored inputs and their true labels (looked up in the train split)."""
    texts = parse_examples((ROOT / "examples" / task_name / "adapterhub_examples.jsonl").read_bytes())[:5]
    task = load_task(task_name)
    label_of = {e.text: e.label for e in task.split("train")}
    return texts, [label_of[t] for t in texts]


def acc(adapter, task, model, **kw) -> float:
    return round(100 * score_on_task(adapter, task, model, **kw).accuracy, 2)


def references(task_name: str, args) -> dict:
    task = load_task(task_name)
    minilm, mpnet = cached_base_model(), cached_mpnet()
    source = LoraAdapter.load(ROOT / "examples" / task_name)
    seeds, labels = seeds_of(task_name)
    out = {"source_lora": acc(source, task, minilm), "source_zero_shot": acc(None, task, minilm),
           "target_zero_shot": acc(None, task, mpnet)}
    feats = mpnet.encode(seeds)
    head = fit_linear_head(feats, torch.tensor(labels), task.num_labels)
    out["target_seeds_head"] = acc(None, task, mpnet, protocol="head", head=head)
    seeds_task = task_with_train(task, seeds, labels)
    lora5 = train_adapter(mpnet, seeds_task, target_modules=MPNET_TARGET_MODULES, epochs=20, batch_size=5, seed=0)
    out["target_seeds_lora"] = acc(lora5.adapter, task, mpnet)
    started = time.perf_counter()
    full = train_adapter(mpnet, task, target_modules=MPNET_TARGET_MODULES, epochs=2, batch_size=32,
                         max_steps=args.upper_steps, seed=0)
    out["target_full_lora"] = acc(full.adapter, task, mpnet)
    out["target_full_lora_steps"] = full.metrics["steps"]
    out["target_full_lora_seconds"] = round(time.perf_counter() - started, 1)
    return out


def transfer_unit(task_name: str, seed: int, args, ablations: bool) -> dict:
    task = load_task(task_name)
    minilm, mpnet, lm = cached_base_model(), cached_mpnet(), cached_smollm2()
    source = LoraAdapter.load(ROOT / "examples" / task_name)
    seeds, _ = seeds_of(task_name)
    real = task.texts("train")
    kit = prepare_source(task, real, generator=lm, discriminator_base=minilm, seeds=seeds, seed=seed)
    pool_config = TransferConfig(samples=args.pool, max_candidates=args.pool, filter=False, seed=seed)
    pool, gen = synthesize(lm, seeds, task, pool_config, judge=None)
    started = time.perf_counter()
    p = p_real(minilm, kit.discriminator.adapter, pool)
    judge_seconds = time.perf_counter() - started
    filtered = [t for t, q in zip(pool, p.tolist()) if q > 0.5][: args.samples]
    unfiltered = pool[: args.samples]
    sets = {"filtered": filtered, "unfiltered": unfiltered}
    if ablations:
        rng = random.Random(seed)
        other = load_task(OTHER_TASK[task_name]).texts("train")
        sets["other_task"] = rng.sample(other, min(args.samples, len(other)))
    out: dict = {"task": task_name, "seed": seed, "kit": kit.stats, "pool": len(pool), **gen,
                 "acceptance_rate": round(float((p > 0.5).float().mean()), 4),
                 "judge_seconds": round(judge_seconds, 2), "sizes": {k: len(v) for k, v in sets.items()}}
    real_test = minilm.encode(task.texts("test"))
    out["mmd"] = {name: round(mmd_rbf(minilm.encode(texts), real_test), 4) for name, texts in sets.items()}
    real_train = real[: len(filtered) or 1]
    out["mmd"]["real_train"] = round(mmd_rbf(minilm.encode(real_train), real_test), 4)
    for name, texts in sets.items():
        started = time.perf_counter()
        probs = teacher_probs(minilm, source, task, texts)
        result = train_student(mpnet, task, texts, probs, target_modules=MPNET_TARGET_MODULES, seed=seed,
                               epochs=args.epochs)
        out[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
        out[name] = acc(result.adapter, task, mpnet)
    out["examples"] = {"filtered": filtered[:5], "rejected": [t for t, q in zip(pool, p.tolist()) if q <= 0.5][:5]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--extra-seeds", default="1,2")
    parser.add_argument("--samples", type=int, default=250)
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--upper-steps", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "docs" / "transfer.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    data = json.loads(out_path.read_text()) if out_path.is_file() else {"meta": {}, "references": {}, "units": []}
    data["meta"] = {k: getattr(args, k) for k in ("samples", "pool", "epochs", "upper_steps")}
    done = {(u["task"], u["seed"]) for u in data["units"]}

    def save() -> None:
        out_path.write_text(json.dumps(data, indent=1))

    tasks = args.tasks.split(",")
    plan = [(t, int(s), True) for s in args.seeds.split(",") for t in tasks]
    plan += [(t, int(s), False) for s in args.extra_seeds.split(",") if s for t in SEED_TASKS if t in tasks]
    for task_name, seed, ablations in plan:
        if task_name not in data["references"]:
            started = time.perf_counter()
            data["references"][task_name] = references(task_name, args)
            print(f"{task_name} references {data['references'][task_name]} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
            save()
        if (task_name, seed) in done:
            continue
        started = time.perf_counter()
        unit = transfer_unit(task_name, seed, args, ablations)
        unit["seconds"] = round(time.perf_counter() - started, 1)
        data["units"].append(unit)
        save()
        print(json.dumps({k: v for k, v in unit.items() if k != "examples"}), flush=True)


if __name__ == "__main__":
    main()
