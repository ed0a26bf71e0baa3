"""The "new task with 16 shots" study of issue 10 (MHR-z, MHR-μ vs LoRA from scratch, head-only, zero-shot).

Writes docs/routing_mhr.json and docs/routing_mhr.png and prints the Markdown tables quoted in
docs/routing_mhr.md. It calls ``adapterhub.app.mhr_quality.run_study``: for each held-out task the
inventory is the other shipped adapters, each seed picks 16 stratified TRAIN shots, learning rate
and steps are chosen on a validation subset with seed 0's shots, test accuracy is reported as
mean ± SE over seeds.

Run in the background with a log and a deliberate thread count (other processes share the cores);
three single-thread processes, one per held-out task, take 10-17 minutes on a shared 2-core box:
    nohup .venv/bin/python bench/mhr_quality.py --jobs 3 --threads 1 > /tmp/mhr.log 2>&1 &
    .venv/bin/python bench/mhr_quality.py --quick --out /tmp/mhr      # one task, one seed, a few minutes
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapterhub.app.mhr_quality import StudyConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one task, one seed, one learning rate, few steps")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="output folder (default docs/)")
    parser.add_argument("--stem", default="routing_mhr", help="file name stem (default routing_mhr)")
    parser.add_argument("--library", type=Path, default=None, help="task adapters (default examples/)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--tasks", nargs="*", default=None, help="held-out tasks (default wn_pos wn_adj_kind chat_topic)")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="seeds (default 0 1 2)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run the held-out tasks in this many processes (each with --threads), then merge")
    args = parser.parse_args(argv)

    from adapterhub.app.mhr_quality import StudyConfig, markdown_table, run_study, selection_table, write_outputs

    cfg = StudyConfig.quick() if args.quick else StudyConfig()
    cfg.threads = args.threads
    if args.tasks:
        cfg.tasks = tuple(args.tasks)
    if args.seeds:
        cfg.seeds = tuple(args.seeds)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {line}", flush=True)

    if args.jobs > 1 and len(cfg.tasks) > 1:
        results = _parallel(args, cfg, log)
    else:
        results = run_study(cfg, log=log, library=args.library)
    for path in write_outputs(results, args.out, args.stem):
        log(f"wrote {path}")
    print("\n" + markdown_table(results) + "\n\nChosen on validation (seed 0's shots):\n\n" + selection_table(results))
    return 0


def _parallel(args: argparse.Namespace, cfg: "StudyConfig", log: "Callable[[str], None]") -> dict:
    """One child process per held-out task (same options), results merged in task order."""
    import json
    import subprocess
    import tempfile

    tmp = tempfile.mkdtemp(prefix="mhr_quality_")  # kept: a failed merge loses no finished task
    log(f"per-task results in {tmp}")
    procs = []
    for task in cfg.tasks:
        cmd = [sys.executable, __file__, "--tasks", task, "--out", tmp, "--stem", task, "--threads", str(args.threads),
               "--seeds", *map(str, cfg.seeds)] + (["--quick"] if args.quick else [])
        cmd += ["--library", str(args.library)] if args.library else []
        procs.append(subprocess.Popen(cmd))
        log(f"started {task} (pid {procs[-1].pid})")
    if any([p.wait() for p in procs]):  # a list: wait for every child before judging
        raise SystemExit("a task process failed; see its output above")
    parts = [json.loads((Path(tmp) / f"{task}.json").read_text()) for task in cfg.tasks]
    merged = dict(parts[0], tasks=[p["tasks"][0] for p in parts], seconds=max(p["seconds"] for p in parts))
    merged["config"]["tasks"] = list(cfg.tasks)
    merged["processes"] = len(parts)
    return merged


if __name__ == "__main__":
    raise SystemExit(main())
