"""Write ``examples/<task>/adapterhub_examples.jsonl``: the stored example inputs of each shipped adapter.

Each file holds up to 32 lines ``{"text": ...}`` drawn without replacement from the task's TRAIN
split (never validation or test, which the routing experiment scores on) with a fixed per-task
seed, so re-running this script rewrites byte-identical files. Routers (prototype, learned) build
their per-adapter state from these texts; ``adapterhub add`` reads the file beside the adapter.

Run from the repository root:
    .venv/bin/python scripts/write_examples.py            # all task folders under examples/
    .venv/bin/python scripts/write_examples.py --check    # exit 1 if a file differs from what it would write
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapterhub.tasks import load_task  # noqa: E402

EXAMPLES_NAME = "adapterhub_examples.jsonl"
MAX_EXAMPLES = 32
SEED = 0


def draw_examples(task: str, n: int = MAX_EXAMPLES, seed: int = SEED) -> list[str]:
    """``n`` train texts of ``task`` (all if fewer), in a fixed pseudo-random order.

    The seed is a string (``"<task>:<seed>"``): Python seeds ``random`` from a string through
    SHA-512, so the draw does not depend on ``PYTHONHASHSEED`` or on the order tasks are visited.
    """
    texts = load_task(task).texts("train")
    return random.Random(f"{task}:{seed}").sample(texts, min(n, len(texts)))


def render(texts: list[str]) -> str:
    """The file's bytes: one compact JSON object per line, UTF-8 kept readable."""
    return "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=Path, default=ROOT / "examples", help="task folders (default examples/)")
    parser.add_argument("--n", type=int, default=MAX_EXAMPLES, help=f"examples per task (at most {MAX_EXAMPLES})")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= MAX_EXAMPLES:
        parser.error(f"--n must be between 1 and {MAX_EXAMPLES}")
    differs = 0
    for meta_path in sorted(args.library.glob("*/adapterhub_meta.json")):
        task = json.loads(meta_path.read_text(encoding="utf-8"))["task"]
        target = meta_path.parent / EXAMPLES_NAME
        content = render(draw_examples(task, args.n))
        same = target.is_file() and target.read_text(encoding="utf-8") == content
        if args.check:
            differs += not same
            print(f"{'ok     ' if same else 'DIFFERS'} {target}")
        elif not same:
            target.write_text(content, encoding="utf-8")
            print(f"wrote {target} ({content.count(chr(10))} examples)")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
