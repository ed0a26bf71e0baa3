"""Trans-LoRA across model families: a MiniLM (encoder) library adapter moved to SmolLM2-135M (a causal LM).

Issue 13, "transfer between two different families". The teacher is the MiniLM adapter (class
distribution over label descriptions); the student is a fresh rank-8 LoRA on SmolLM2's seven
projections, trained on the teacher's answer word for each synthetic input (cross-entropy on the
answer tokens, as the paper does for generation), then scored as the generative bed scores
(answer log-likelihood, a fixed seeded subset of ``--limit`` test examples). Beside it: SmolLM2
zero-shot and the SmolLM2 library adapter trained on the real data (``examples/smollm2/<task>``).
The synthetic sets are ``transfer_study.candidate_sets`` (same kit, pool and "top" rule).

Run: ``python scripts/transfer_cross.py`` → ``docs/transfer_cross.json`` (read by ``transfer_report.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from transfer_study import ROOT, acc, candidate_sets

from adapterhub.eval.bed import score_on_task
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import cached_base_model
from adapterhub.models.causal import LLAMA_TARGET_MODULES, cached_smollm2
from adapterhub.tasks import load_task
from adapterhub.transfer import teacher_probs, train_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="wn_pos,wn_adj_kind")
    parser.add_argument("--samples", type=int, default=250)
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "docs" / "transfer_cross.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    data = json.loads(out_path.read_text()) if out_path.is_file() else {"meta": vars(args), "units": []}
    done = {u["task"] for u in data["units"]}
    minilm, lm = cached_base_model(), cached_smollm2()
    for task_name in args.tasks.split(","):
        if task_name in done:
            continue
        started = time.perf_counter()
        task = load_task(task_name)
        info, sets = candidate_sets(task_name, 0, args, ablations=False)
        source = LoraAdapter.load(ROOT / "examples" / task_name)
        texts = sets["top"]
        probs = teacher_probs(minilm, source, task, texts)
        t0 = time.perf_counter()
        student = train_student(lm, task, texts, probs, target_modules=LLAMA_TARGET_MODULES, epochs=2, batch_size=8,
                                seed=0)
        distil_seconds = time.perf_counter() - t0
        own = LoraAdapter.load(ROOT / "examples" / "smollm2" / task_name)
        unit = {
            "task": task_name, "samples": len(texts), "acceptance_rate": info["acceptance_rate"],
            "source_lora_minilm": acc(source, task, minilm),
            "smollm2_zero_shot": round(100 * score_on_task(None, task, lm, limit=args.limit).accuracy, 2),
            "smollm2_own_lora": round(100 * score_on_task(own, task, lm, limit=args.limit).accuracy, 2),
            "smollm2_transferred": round(100 * score_on_task(student.adapter, task, lm, limit=args.limit).accuracy, 2),
            "limit": args.limit, "distil_steps": student.metrics["steps"], "distil_seconds": round(distil_seconds, 1),
            "seconds": round(time.perf_counter() - started, 1),
        }
        data["units"].append(unit)
        out_path.write_text(json.dumps(data, indent=1))
        print(json.dumps(unit), flush=True)


if __name__ == "__main__":
    main()
