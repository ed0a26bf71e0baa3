"""Train the SmolLM2-135M task-adapter library: one rank-8 LoRA on all seven projections per task, CPU only.

For every shipped task (classification and generation, ``list_tasks(None)``) this script measures,
on a fixed seeded subset of the test split (``--test-limit``, the same subset for every row):

* ``zero_shot`` — the base model asked the task's instruction prompt (``adapterhub.models.prompts``);
* ``few_shot``  — the same prompt after five solved train examples as earlier chat turns;
* ``adapter``   — the task's LoRA, trained with AdamW on the answer tokens (``train_causal_adapter``).

Each task trains from **its own seed** (``task_seed``: a CRC of the task name), so the adapters do
not share their initial A matrices, as adapters from different authors never do. The factors are
stored in bfloat16 (half the bytes; the scores below are measured on the stored bf16 factors).
A task's adapter is kept (``examples/smollm2/<task>/``: a PEFT folder plus
``adapterhub_meta.json``) only if it beats the better of zero-shot and few-shot by ``--min-gain``
points. ``metrics.check`` records the adapter's accuracy on a small subset in float32, which a slow
test reproduces on any CPU. ``examples/smollm2/library.json`` and ``README.md`` summarise every task.

Run (about 4 minutes per task on 2 cores):
    timeout 1h .venv/bin/python scripts/train_smollm2_library.py
    .venv/bin/python scripts/train_smollm2_library.py --tasks wn_pos wn_antonym   # a subset
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_library import with_dtype  # noqa: E402  (the same bf16 cast as the MiniLM library)

from adapterhub.eval.generative import evaluate_lm  # noqa: E402
from adapterhub.eval.library import META_NAME  # noqa: E402
from adapterhub.files import atomic_write  # noqa: E402
from adapterhub.models.causal import load_smollm2  # noqa: E402
from adapterhub.models.prompts import FEW_SHOT  # noqa: E402
from adapterhub.models.train_causal import train_causal_adapter  # noqa: E402
from adapterhub.tasks import list_tasks, load_task  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECK_LIMIT = 24


def write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def task_seed(name: str) -> int:
    """One seed per task, fixed by its name: independent initialisations across the library."""
    return zlib.crc32(name.encode()) % 100_000


def summary(result) -> dict:
    return {"accuracy": round(result.accuracy, 4), "accuracy_stderr": round(result.accuracy_stderr, 4),
            "macro_f1": round(result.macro_f1, 4), "n": result.n}


def run_task(name: str, args: argparse.Namespace, lm) -> dict:
    task = load_task(name)
    row: dict = {"task": name, "kind": task.kind, "seed": task_seed(name)}
    started = time.perf_counter()
    zero = evaluate_lm(None, task, lm, limit=args.test_limit)
    few = evaluate_lm(None, task, lm, limit=args.test_limit, shots=FEW_SHOT)
    row["baseline_s"] = round(time.perf_counter() - started, 1)
    saved = args.out / name
    if args.rescore and (saved / "adapter_model.safetensors").is_file():  # scored again, not trained again
        from adapterhub.lora import LoraAdapter

        adapter, params, losses = LoraAdapter.load(saved), recipe(args, task, row["seed"]), [float("nan")]
        row["train_s"] = args.rescore.get(name, float("nan"))
    else:
        result = train_causal_adapter(
            lm, task, rank=args.rank, alpha=args.alpha, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
            max_steps=args.steps, seed=row["seed"],
        )
        row["train_s"] = result.metrics["seconds"]
        adapter, params, losses = with_dtype(result.adapter, torch.bfloat16), result.params, result.losses
    started = time.perf_counter()
    own = evaluate_lm(adapter, task, lm, limit=args.test_limit)
    validation = evaluate_lm(adapter, task, lm, split="validation", limit=args.validation_limit)
    row["adapter_eval_s"] = round(time.perf_counter() - started, 1)
    row.update(zero_shot=summary(zero), few_shot=summary(few), adapter=summary(own),
               validation=summary(validation), final_loss=round(losses[-1], 4))
    best_baseline = max(zero.accuracy, few.accuracy)
    row["gain_points"] = round(100 * (own.accuracy - best_baseline), 1)
    row["kept"] = row["gain_points"] >= args.min_gain
    print(json.dumps({k: row[k] for k in ("task", "gain_points", "kept", "train_s")}), flush=True)
    if row["kept"]:
        folder = args.out / name
        if not args.rescore:
            if folder.exists():
                shutil.rmtree(folder)
            adapter.save(folder)
        row["check"] = {"split": "test", "limit": CHECK_LIMIT, "dtype": "float32"}  # filled in by main, in fp32
        meta = {"task": name, "base": "smollm2", "kind": task.kind, "instruction": task.instruction,
                "labels": [{"name": lab.name, "answer": lab.answer} for lab in task.labels],
                "params": params, "metrics": {k: row[k] for k in (
                    "zero_shot", "few_shot", "adapter", "validation", "gain_points", "train_s")},
                "test_limit": args.test_limit}
        write_text(folder / META_NAME, json.dumps(meta, indent=2) + "\n")
    return row


def recipe(args: argparse.Namespace, task, seed: int) -> dict:
    """The training parameters ``train_causal_adapter`` records, for an adapter scored again (``--rescore``)."""
    from adapterhub.models.causal import LLAMA_TARGET_MODULES

    return {"task": task.name, "protocol": "generative", "rank": args.rank, "alpha": args.alpha,
            "target_modules": list(LLAMA_TARGET_MODULES), "epochs": args.epochs, "lr": args.lr, "weight_decay": 0.0,
            "batch_size": args.batch_size, "seed": seed, "max_steps": args.steps, "max_examples": None,
            "optimizer": "AdamW", "dtype": "bfloat16"}


def record_checks(rows: list[dict], out: Path) -> None:
    """The float32 accuracy of each kept adapter on a small subset, for the slow reproduction test."""
    from adapterhub.lora import LoraAdapter

    lm32 = load_smollm2(dtype=torch.float32)
    for row in rows:
        if not row.get("kept"):
            continue
        folder = out / row["task"]
        result = evaluate_lm(LoraAdapter.load(folder), row["task"], lm32, limit=CHECK_LIMIT)
        row["check"]["accuracy"] = round(result.accuracy, 6)
        meta = json.loads((folder / META_NAME).read_text())
        meta["metrics"]["check"] = row["check"]
        write_text(folder / META_NAME, json.dumps(meta, indent=2) + "\n")


def write_readme(out: Path, rows: list[dict], args: argparse.Namespace) -> None:
    def pct(row: dict, key: str) -> str:
        r = row[key]
        return f"{100 * r['accuracy']:.1f} ± {100 * r['accuracy_stderr']:.1f}"

    lines = [
        "# SmolLM2-135M-Instruct task adapters",
        "",
        "One rank-8 LoRA (alpha 16) on `q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj` of",
        "`HuggingFaceTB/SmolLM2-135M-Instruct` per task, trained by `scripts/train_smollm2_library.py` with",
        f"AdamW (lr {args.lr}, batch {args.batch_size}, {args.steps} steps) on the answer tokens of the task's",
        "instruction prompt, each task from its own seed. Factors stored in bfloat16.",
        "",
        f"Accuracy (%) ± binomial SE on a fixed seeded subset of {args.test_limit} test examples per task",
        "(classification: log-likelihood ranking of the label answers; generation: greedy exact match).",
        "`few-shot`: five solved train examples as earlier chat turns. Kept: adapter ≥ the better baseline",
        f"+ {args.min_gain:g} points.",
        "",
        "| task | kind | zero-shot | few-shot | adapter | gain (pts) | train s | seed | kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['kind']} | {pct(row, 'zero_shot')} | {pct(row, 'few_shot')} | "
            f"{pct(row, 'adapter')} | {row['gain_points']:+.1f} | {row['train_s']:.0f} | {row['seed']} | "
            f"{'yes' if row['kept'] else 'no'} |"
        )
    lines += ["", "Reproduce: `.venv/bin/python scripts/train_smollm2_library.py` (about 4 minutes per task on 2 cores).", ""]
    write_text(out / "README.md", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=None, help="default: every shipped task")
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "smollm2")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--test-limit", type=int, default=200)
    parser.add_argument("--validation-limit", type=int, default=100)
    parser.add_argument("--min-gain", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rescore", type=Path, default=None, metavar="LOG",
                        help="score saved adapters again instead of training them (train seconds read from the "
                             "JSON lines of an earlier run's LOG)")
    args = parser.parse_args()
    if args.rescore:
        lines = [json.loads(x) for x in args.rescore.read_text().splitlines() if x.startswith('{"task"')]
        args.rescore = {x["task"]: x["train_s"] for x in lines}
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lm = load_smollm2()
    print(f"loaded in {time.perf_counter() - started:.1f} s ({lm.dtype})", flush=True)
    rows = [run_task(name, args, lm) for name in (args.tasks or list_tasks(None))]
    del lm
    record_checks(rows, args.out)
    previous = {}
    index = args.out / "library.json"
    if index.exists():
        previous = {r["task"]: r for r in json.loads(index.read_text())["tasks"]}
    previous.update({r["task"]: r for r in rows})
    ordered = [previous[n] for n in list_tasks(None) if n in previous]
    write_text(index, json.dumps({"base": "smollm2", "tasks": ordered}, indent=2) + "\n")
    write_readme(args.out, ordered, args)


if __name__ == "__main__":
    main()
