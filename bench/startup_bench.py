"""Whole-process start-up of the ``adapterhub`` command: ``--help`` and ``list --json``.

What a user waits for is the process, not a function: interpreter start, imports, opening the
catalog, the query and printing JSON. So every figure here is the wall time of a real child
process, started several times (after unmeasured warm-up runs that fill the OS file cache), and
printed as min / median / max; quote the median.

Run (from the repository root, with the project's virtual environment):
    .venv/bin/python bench/startup_bench.py                  # 10 runs each, 10k-entry catalog
    .venv/bin/python bench/startup_bench.py --runs 20 --importtime
    PYTHONPATH=/tmp/before .venv/bin/python bench/startup_bench.py   # another checkout (e.g. a
                                                             # `git worktree add /tmp/before HEAD`)

Cases:
    python -c pass       the interpreter alone: the floor no change to adapterhub can go below
    --help               ``adapterhub --help``
    list (empty)         ``adapterhub list --json`` on an empty SQLite catalog (schema already made)
    list (10k)           ``adapterhub list --json`` on a catalog of 10,000 entries, built once with
                         ``Catalog.bulk_add`` (rows from ``synthetic_catalog.py``, shaped like real
                         LLM LoRA entries: the same rows ``catalog_bench.py`` lists)

Targets (issue 8): empty-catalog ``list --json`` under 0.35 s, 10k-entry ``list --json`` under 0.6 s.
JSON goes to /dev/null (not a terminal, so the CLI prints it compact, as when piped to a file).
``--importtime`` adds the outermost imports of ``list --json`` by cumulative time (``-X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from synthetic_catalog import synthetic_records

import adapterhub
from adapterhub.store import Catalog

TARGETS = {"list (empty)": 0.35, "list (10k)": 0.6}


def make_home(root: Path, entries: int) -> Path:
    """An ``ADAPTERHUB_HOME`` whose SQLite catalog exists (schema made) and holds ``entries`` rows."""
    home = root / f"home-{entries}"
    home.mkdir()
    with Catalog(f"sqlite:///{home / 'catalog.db'}") as catalog:
        if entries:
            catalog.bulk_add(synthetic_records(entries))
    return home


def cli_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m adapterhub.cli.main``.

    With ``PYTHONPATH`` set, the console script still imports the package from that path first.
    """
    script = Path(sys.executable).with_name("adapterhub")
    return [str(script)] if script.exists() else [sys.executable, "-m", "adapterhub.cli.main"]


def time_runs(argv: Sequence[str], env: dict[str, str], runs: int, warmup: int) -> list[float]:
    """Wall seconds of ``runs`` whole processes, after ``warmup`` unmeasured ones."""
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr.decode()}")
        if i >= warmup:
            times.append(elapsed)
    return times


def check_listing(argv: Sequence[str], env: dict[str, str], expected: int) -> None:
    """The command really lists the catalog (so a fast figure is not a fast failure)."""
    out = subprocess.run(argv, env=env, capture_output=True, check=True).stdout
    count = len(json.loads(out))
    if count != expected:
        raise SystemExit(f"{' '.join(argv)} listed {count} entries, expected {expected}")


def heaviest_imports(argv: Sequence[str], env: dict[str, str], top: int) -> list[tuple[float, str]]:
    """(seconds, module) of the outermost imports of ``argv``, heaviest first (``-X importtime``).

    Each figure is cumulative: a module with everything it imported first. Together they add up to
    the process's whole import time, so the list says which import to make lazy or cheaper (e.g.
    ``typer._adapters``: Typer importing pydantic to coerce parameters).
    """
    cmd = [sys.executable, "-X", "importtime", "-c",
           "import sys; from adapterhub.cli.main import main; sys.argv[0] = 'adapterhub'; main()", *argv]
    # run outside any checkout: `-c` puts the working directory first on sys.path
    err = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=env["ADAPTERHUB_HOME"]).stderr
    outermost = []
    for line in err.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split(":", 1)[1].split("|")
        if cumulative.strip().isdigit() and not name[1:].startswith(" "):  # depth 0: not nested
            outermost.append((int(cumulative) / 1e6, name.strip()))
    return [item for item in sorted(outermost, reverse=True)[:top] if item[0] >= 0.001]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="measured runs per case (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs first (default 2)")
    parser.add_argument("--entries", type=int, default=10_000, help="rows of the large catalog (default 10000)")
    parser.add_argument("--importtime", action="store_true", help="also list the outermost imports of list --json")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    cli = cli_command()
    with tempfile.TemporaryDirectory(prefix="adapterhub-startup-") as tmp:
        empty, full = make_home(Path(tmp), 0), make_home(Path(tmp), args.entries)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTERHUB_")}
        env_empty = {**base_env, "ADAPTERHUB_HOME": str(empty)}
        env_full = {**base_env, "ADAPTERHUB_HOME": str(full)}
        label_full = f"list ({args.entries // 1000}k)" if args.entries % 1000 == 0 else f"list ({args.entries})"
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"], base_env),
            ("--help", [*cli, "--help"], env_empty),
            ("list (empty)", [*cli, "list", "--json"], env_empty),
            (label_full, [*cli, "list", "--json"], env_full),
        ]
        check_listing(cases[2][1], env_empty, 0)
        check_listing(cases[3][1], env_full, args.entries)
        results = {}
        for label, argv, env in cases:
            times = time_runs(argv, env, args.runs, args.warmup)
            results[label] = {"min": min(times), "median": statistics.median(times), "max": max(times)}
        imports = heaviest_imports(["list", "--json"], env_empty, 12) if args.importtime else []

    if args.json:
        print(json.dumps({"package": adapterhub.__file__, "runs": args.runs, "results": results,
                          "imports": [{"module": m, "seconds": s} for s, m in imports]}, indent=2))
        return
    print(f"adapterhub from {Path(adapterhub.__file__).parent}; {args.runs} runs after {args.warmup} warm-up, "
          f"{os.cpu_count()} CPUs; command: {' '.join(cli)}")
    print(f"{'case':<16} {'min s':>7} {'median s':>9} {'max s':>7}  target")
    for label, r in results.items():
        target = TARGETS.get(label)  # the 10k target only when --entries is 10000
        verdict = "" if target is None else f"< {target:.2f} s  {'ok' if r['median'] < target else 'MISSED'}"
        print(f"{label:<16} {r['min']:7.3f} {r['median']:9.3f} {r['max']:7.3f}  {verdict}")
    if imports:
        print("\noutermost imports of `adapterhub list --json` (cumulative s, python -X importtime):")
        for seconds, module in imports:
            print(f"  {seconds:6.3f}  {module}")


if __name__ == "__main__":
    main()
