"""The merge-quality table over the shipped task library: `adapterhub quality` with the study options.

Writes docs/merge_quality.md, .json and .png: merges of 2, 4 and all task adapters with every
method (linear, svd, ties, dare_ties, magnitude; LoRA-LEGO with and without each reweighting,
k-means and k-medoids) at k = 4, 8, 16, scored on each task's test split beside the zero-shot
baseline and the individual adapters; three seeds for the all-task merge; weight conventions of
ties/dare_ties/magnitude picked on the validation split first.

It calls ``adapterhub.app.quality.merge_quality`` (what `adapterhub quality` runs) and adds the
options a study needs: another file stem, the validation split, and a timestamped log.

Run in the background with a time limit and a deliberate thread count (other processes share the
cores; evaluation uses --threads, merges one thread):
    timeout 1h .venv/bin/python bench/merge_quality.py --threads 2 > /tmp/merge_quality.log 2>&1 &
    .venv/bin/python bench/merge_quality.py --quick --out /tmp/mq      # about 2 minutes
    .venv/bin/python bench/merge_quality.py --split validation --stem lego_validation   # tuning study
    timeout 2h .venv/bin/python bench/merge_quality.py --base smollm2 --stem merge_quality_smollm2  # the LLM table
    .venv/bin/python bench/merge_quality.py --library examples/variants/shared_init --stem merge_quality_shared_init \
        --ks 8 --all-only --no-select         # a variant library: the all-task merge at k = 8
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
    parser.add_argument("--base", default="minilm", choices=("minilm", "smollm2"),
                        help="the library's base (smollm2: examples/smollm2, generative plan)")
    parser.add_argument("--all-only", action="store_true", help="only the all-task merge (no pairs or fours)")
    parser.add_argument("--no-select", action="store_true",
                        help="skip the validation step (no auto rows, methods at their default conventions)")
    parser.add_argument("--split", default="test", choices=("test", "validation"), help="reported split")
    args = parser.parse_args(argv)

    from adapterhub.app.quality import merge_quality

    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {message}", flush=True)

    say(f"{args.threads} torch thread(s) for evaluation")
    data = merge_quality(
        quick=args.quick, out=args.out, library=args.library, seeds=args.seeds, ks=args.ks,
        max_examples=args.max_examples, split=args.split, threads=args.threads, progress=say, stem=args.stem,
        base=args.base, all_only=args.all_only, select=not args.no_select,
    )
    print(Path(data["files"]["markdown"]).read_text(encoding="utf-8"))
    for kind, path in data["files"].items():
        say(f"wrote {kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
