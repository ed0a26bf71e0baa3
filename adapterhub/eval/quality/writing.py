"""Write a report dict as files: ``<stem>.md``, ``<stem>.json`` and ``<stem>.png``, each atomically.

Hand-written notes survive a regeneration: whatever follows ``NOTES_MARKER`` in an existing
``<stem>.md`` is carried over below the new table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from adapterhub.eval.quality.markdown import render_markdown
from adapterhub.eval.quality.plot import plot_report
from adapterhub.files import atomic_write

NOTES_MARKER = "<!-- notes: kept when the table is regenerated -->"
"""Text after this line in an existing ``<stem>.md`` (hand-written reading of the numbers) is kept."""

PlotFn = Callable[[Mapping[str, Any], Path], Path]


def write_report(
    data: Mapping[str, Any],
    folder: str | Path,
    stem: str,
    *,
    title: str,
    intro: str | None = None,
    footer: str | None = None,
    plot: PlotFn = plot_report,
    with_json: bool = True,
) -> dict[str, Path]:
    """Markdown (``render_markdown``), JSON (unless ``with_json`` is false) and a PNG (``plot``).

    Returns:
        ``{"markdown": path, "json": path, "png": path}`` (no ``"json"`` without ``with_json``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": folder / f"{stem}.md", "json": folder / f"{stem}.json", "png": folder / f"{stem}.png"}
    if not with_json:
        del paths["json"]
    notes = ""
    if paths["markdown"].is_file():
        old = paths["markdown"].read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = "\n" + old[old.index(NOTES_MARKER):]
    with atomic_write(paths["markdown"], "w") as f:
        f.write(render_markdown(data, title=title, intro=intro, footer=footer) + notes)
    if with_json:
        with atomic_write(paths["json"], "w") as f:
            f.write(json.dumps(finite(data), indent=1) + "\n")
    plot(data, paths["png"])
    return paths


def finite(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by ``None`` (JSON has no NaN), tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
