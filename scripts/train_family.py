"""Train a *family* of MiniLM task adapters that genuinely share rank-one units (LoRA-LEGO's premise).

LoRA-LEGO assumes that different LoRAs are built from shared units worth clustering. The shipped
libraries cannot test that: their adapters are trained from scratch (independent inits, or one
shared random init), so their units have nothing in common beyond the init. A family where the
premise holds is what a team gets by continued training from one common adapter: here the common
start is a rank-8 multi-task adapter (the truncated SVD, weights 1/sqrt(n), of the seven
independent task adapters in ``examples/``), and each task adapter is trained from it for one
epoch (its own seed, same rank and alpha as the library). The merge table on this family
(``bench/merge_quality.py --library examples/variants/shared_units``) shows whether LEGO's
clustering wins when there are shared units to find.

Writes ``examples/variants/shared_units/<task>/`` (PEFT folder, ``adapterhub_meta.json`` with the
test and validation accuracy of the adapter and of zero-shot, and the task's examples file) and a
README. About 5 minutes on 2 cores:
    .venv/bin/python scripts/train_family.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapterhub.eval import evaluate  # noqa: E402
from adapterhub.eval.library import META_NAME, load_library  # noqa: E402
from adapterhub.files import atomic_write  # noqa: E402
from adapterhub.merge import merge_adapters  # noqa: E402
from adapterhub.merge.registry import convention_weights  # noqa: E402
from adapterhub.models.base import load_base_model  # noqa: E402
from adapterhub.models.train import train_adapter  # noqa: E402
from adapterhub.route.base import EXAMPLES_FILE  # noqa: E402
from adapterhub.tasks import list_tasks, load_task  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "examples" / "variants" / "shared_units")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    library = load_library(ROOT / "examples")
    names = sorted(library)
    base = load_base_model()
    start = merge_adapters(
        [library[t][0] for t in names], "svd", weights=convention_weights("sqrt", len(names)), params={"k": 8},
    ).adapter
    rows = []
    for i, name in enumerate(names):
        task = load_task(name)
        run = train_adapter(base, task, rank=8, alpha=16, epochs=args.epochs, seed=args.seed + 1 + list_tasks().index(name),
                            init=start)
        metrics = {
            split: {
                "zero_shot": {"accuracy": round(evaluate(None, task, split=split, model=base).accuracy, 4)},
                "adapter": {"accuracy": round(evaluate(run.adapter, task, split=split, model=base).accuracy, 4)},
            }
            for split in ("test", "validation")
        }
        folder = args.out / name
        if folder.exists():
            shutil.rmtree(folder)
        run.adapter.save(folder)
        meta = {
            "task": name, "base_model": base.base_model_id, "protocol": "similarity", "training": run.params,
            "init": "svd (k=8, w=1/sqrt(n)) of the independent library's adapters", "metrics": metrics,
            "created_by": "scripts/train_family.py",
        }
        with atomic_write(folder / META_NAME, "w") as f:
            f.write(json.dumps(meta, indent=2) + "\n")
        shutil.copyfile(ROOT / "examples" / name / EXAMPLES_FILE, folder / EXAMPLES_FILE)
        rows.append((name, metrics["test"]["zero_shot"]["accuracy"], metrics["test"]["adapter"]["accuracy"],
                     library[name][1]["metrics"]["test"]["adapter"]["accuracy"]))
        print(f"[{i + 1}/{len(names)}] {name}: test {rows[-1][2]:.3f} (from scratch {rows[-1][3]:.3f}, "
              f"zero-shot {rows[-1][1]:.3f})", flush=True)
    lines = [
        "# A family of adapters that share units (LoRA-LEGO's premise)", "",
        "Each task adapter was trained for one epoch from one common rank-8 multi-task adapter (the truncated SVD, "
        "weights 1/sqrt(n), of the seven independent task adapters in `examples/`), by `scripts/train_family.py`. "
        "Test accuracy (%):", "",
        "| task | zero-shot | family adapter | independent adapter |", "|---|---|---|---|",
        *[f"| {n} | {100 * z:.1f} | {100 * a:.1f} | {100 * o:.1f} |" for n, z, a, o in rows], "",
    ]
    with atomic_write(args.out / "README.md", "w") as f:
        f.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
