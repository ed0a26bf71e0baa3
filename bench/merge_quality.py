"""The merge-quality table over the shipped task library (thin wrapper of adapterhub.eval.merge_quality).

Writes docs/merge_quality.md, .json and .png: merges of 2, 4 and all task adapters with every
method (linear, svd, ties, dare_ties, magnitude; LoRA-LEGO with and without each reweighting,
k-means and k-medoids) at k = 4, 8, 16, scored on each task's test split beside the zero-shot
baseline and the individual adapters; three seeds for the all-task merge; weight conventions of
ties/dare_ties/magnitude picked on the validation split first.

Run in the background with a time limit and a deliberate thread count (other processes share the
two cores; evaluation uses --threads, merges one thread):
    timeout 1h /work/venv/bin/python bench/merge_quality.py --threads 2 > /tmp/merge_quality.log 2>&1 &
    /work/venv/bin/python bench/merge_quality.py --quick --out /tmp/mq      # about 2 minutes
    /work/venv/bin/python bench/merge_quality.py --split validation --stem lego_validation   # tuning study
Same as `adapterhub quality [--quick] [--out docs/]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="all-task merge, k=8, one seed, core methods")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="output folder (default docs/)")
    parser.add_argument("--stem", default="merge_quality", help="file name stem (default merge_quality)")
    parser.add_argument("--library", type=Path, default=None, help="task adapters (default examples/)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for evaluation (default 2)")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="seeds of the all-task merge")
    parser.add_argument("--ks", type=int, nargs="*", default=None, help="merge ranks")
    parser.add_argument("--max-examples", type=int, default=None, help="cap per task (stratified)")
    parser.add_argument("--split", default="test", choices=("test", "validation"), help="reported split")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from adapterhub.eval.library import load_library
    from adapterhub.eval.merge_quality import default_plan, quick_plan, run_merge_quality
    from adapterhub.eval.tasks import load_task
    from adapterhub.models.base import cached_base_model

    started = time.perf_counter()
    library = load_library(args.library)
    adapters = {task: adapter for task, (adapter, _meta) in library.items()}
    tasks = {task: load_task(task) for task in adapters}
    plan = quick_plan() if args.quick else default_plan()
    import dataclasses

    changes = {"split": args.split}
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.ks:
        changes["ks"] = tuple(args.ks)
    if args.max_examples is not None:
        changes["max_examples"] = args.max_examples
    plan = dataclasses.replace(plan, **changes)

    def say(message: str) -> None:
        print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {message}", flush=True)

    say(f"{len(adapters)} task adapters: {', '.join(sorted(adapters))}; {args.threads} torch thread(s)")
    report = run_merge_quality(adapters, tasks, model=cached_base_model(), plan=plan, progress=say)
    title = "Merge quality" if args.split == "test" else "Merge quality on the validation split (tuning study)"
    paths = report.write(args.out, args.stem, title=title)
    print(report.to_markdown(title=title))
    for kind, path in paths.items():
        say(f"wrote {kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
