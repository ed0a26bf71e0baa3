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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapterhub.route.base import EXAMPLES_FILE, MAX_EXAMPLES, draw_labeled_examples, render_examples  # noqa: E402

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
        target = meta_path.parent / EXAMPLES_FILE
        rows = draw_labeled_examples(task, args.n)
        content = render_examples([text for text, _ in rows], [label for _, label in rows]).decode("utf-8")
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
