"""Trans-LoRA on the bed: MiniLM library adapters moved to all-mpnet-base-v2, beside every baseline.

Issue 13. Per task and seed, in this order (so partial results are useful; each finished unit is
appended to the JSON, and a rerun skips what is there):

1. source side: seeds = the first 5 inputs stored with the library adapter (``adapterhub_examples.jsonl``);
   the discriminator (MiniLM + rank-4 LoRA + head) is trained on 128 real train inputs and 128
   generated ones (``transfer.prepare_source``);
2. one candidate pool of ``--pool`` samples from SmolLM2-135M-Instruct prompted by the seeds; the
   discriminator scores each. **top** = the ``--samples`` candidates it rates most real (the
   service's default rule); **threshold** = the candidates it calls real (p > 0.5, the paper's rule;
   at most ``--samples``); **unfiltered** = the first ``--samples`` candidates (the paper's
   ablation); **other-task** = ``--samples`` real train inputs of another task (the paper's
   "random real text" ablation);
3. each set is labelled by the teacher (MiniLM + the library adapter) and a fresh rank-8 LoRA on
   MPNet is distilled on it (``transfer.train_student``), then scored on the real test split;
4. references, once per task: source + LoRA (MiniLM), MPNet zero-shot, MPNet head-only and LoRA
   trained on the 5 seeds with their true labels (seeds only), MPNet LoRA on the full real train
   split (the upper bound); and the MMD between each synthetic set and the real test inputs in
   MiniLM's base embedding space (the paper's Table 8 shape), with real-vs-real as the floor.

The student's epochs are chosen first, on the validation split of ``SELECT_TASK`` (the "top" set,
epochs in ``EPOCH_GRID``), and used for every task. Run: ``python scripts/transfer_study.py`` (the
selection, all 7 library tasks at seed 0, then seeds 1-2 of the "top" and "unfiltered" students on
``wn_pos`` and ``wn_adj_kind``), then ``scripts/transfer_report.py`` writes ``docs/transfer.md`` and its figure.
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
DEFAULT_OUT = ROOT / "docs" / "transfer.json"
SEED_TASKS = ["wn_pos", "wn_adj_kind"]
SELECT_TASK = "wn_adj_kind"
EPOCH_GRID = (1, 2, 4)
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


def candidate_sets(task_name: str, seed: int, args, ablations: bool) -> tuple[dict, dict[str, list[str]]]:
    """The kit, the pool and every synthetic (or ablation) set of one task and seed."""
    task = load_task(task_name)
    minilm, lm = cached_base_model(), cached_smollm2()
    seeds, _ = seeds_of(task_name)
    kit = prepare_source(task, task.texts("train"), generator=lm, discriminator_base=minilm, seeds=seeds, seed=seed)
    pool_config = TransferConfig(samples=args.pool, max_candidates=args.pool, filter=False, seed=seed)
    pool, gen = synthesize(lm, seeds, task, pool_config, judge=None)
    started = time.perf_counter()
    p = p_real(minilm, kit.discriminator.adapter, pool).tolist()
    judge_seconds = time.perf_counter() - started
    ranked = sorted(range(len(pool)), key=lambda i: -p[i])[: args.samples]
    sets = {"top": [pool[i] for i in sorted(ranked)], "unfiltered": pool[: args.samples]}
    if ablations:
        sets["threshold"] = [t for t, q in zip(pool, p) if q > 0.5][: args.samples]
        other = load_task(OTHER_TASK[task_name]).texts("train")
        sets["other_task"] = random.Random(seed).sample(other, min(args.samples, len(other)))
    info = {"task": task_name, "seed": seed, "kit": kit.stats, "pool": len(pool), **gen,
            "acceptance_rate": round(sum(q > 0.5 for q in p) / max(1, len(p)), 4),
            "top_min_p_real": round(min(p[i] for i in ranked), 4) if ranked else None,
            "judge_seconds": round(judge_seconds, 2), "sizes": {k: len(v) for k, v in sets.items()},
            "examples": {"most_real": [pool[i] for i in ranked[:5]],
                         "rejected": [t for t, q in zip(pool, p) if q <= 0.5][:5]}}
    return info, sets


def distil_and_score(task_name: str, texts: list[str], seed: int, epochs: int, split: str = "test") -> tuple[float, float]:
    """(accuracy on ``split``, seconds) of an MPNet student distilled from the library adapter on ``texts``."""
    task = load_task(task_name)
    minilm, mpnet = cached_base_model(), cached_mpnet()
    source = LoraAdapter.load(ROOT / "examples" / task_name)
    started = time.perf_counter()
    probs = teacher_probs(minilm, source, task, texts)
    result = train_student(mpnet, task, texts, probs, target_modules=MPNET_TARGET_MODULES, seed=seed, epochs=epochs)
    seconds = round(time.perf_counter() - started, 1)
    return acc(result.adapter, task, mpnet, split=split), seconds


def transfer_unit(task_name: str, seed: int, args, ablations: bool, epochs: int) -> dict:
    out, sets = candidate_sets(task_name, seed, args, ablations)
    real_test = cached_base_model().encode(load_task(task_name).texts("test"))
    out["mmd"] = {name: round(mmd_rbf(cached_base_model().encode(texts), real_test), 4)
                  for name, texts in sets.items() if len(texts) > 1}
    real = load_task(task_name).texts("train")[: args.samples]
    out["mmd"]["real_train"] = round(mmd_rbf(cached_base_model().encode(real), real_test), 4)
    for name, texts in sets.items():
        if texts:
            out[name], out[f"{name}_seconds"] = distil_and_score(task_name, texts, seed, epochs)
    out["epochs"] = epochs
    return out


def select_epochs(data: dict, args, save) -> int:
    """The student's epochs: best validation accuracy of the "top" student on ``SELECT_TASK``, seed 0."""
    if "selection" not in data:
        _, sets = candidate_sets(SELECT_TASK, 0, args, False)
        scores = {}
        for epochs in EPOCH_GRID:
            scores[str(epochs)], _ = distil_and_score(SELECT_TASK, sets["top"], 0, epochs, split="validation")
            print(f"selection: {epochs} epochs -> validation {scores[str(epochs)]}", flush=True)
        data["selection"] = {"task": SELECT_TASK, "set": "top", "validation_accuracy": scores,
                             "epochs": int(max(scores, key=lambda k: (scores[k], -int(k))))}
        save()
    return int(data["selection"]["epochs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--extra-seeds", default="1,2")
    parser.add_argument("--samples", type=int, default=250)
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--upper-steps", type=int, default=100)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    data = json.loads(out_path.read_text()) if out_path.is_file() else {"meta": {}, "references": {}, "units": []}
    data["meta"] = {k: getattr(args, k) for k in ("samples", "pool", "upper_steps")}
    done = {(u["task"], u["seed"]) for u in data["units"]}

    def save() -> None:
        out_path.write_text(json.dumps(data, indent=1))

    epochs = select_epochs(data, args, save)
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
        unit = transfer_unit(task_name, seed, args, ablations, epochs)
        unit["seconds"] = round(time.perf_counter() - started, 1)
        data["units"].append(unit)
        save()
        print(json.dumps({k: v for k, v in unit.items() if k != "examples"}), flush=True)
    if out_path == DEFAULT_OUT:  # the docs' JSON: rewrite docs/transfer.md and its figure from it
        import transfer_report

        transfer_report.main()


if __name__ == "__main__":
    main()
