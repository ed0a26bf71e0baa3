"""The example adapter library written by ``scripts/train_library.py`` (one adapter per task).

Each ``examples/<task>/`` folder is a PEFT adapter plus ``adapterhub_meta.json`` (task, label
descriptions, training parameters, and the test metrics it was kept on). The folder sits at the
repository root, so ``library_dir()`` finds it in a source checkout; pass ``folder`` elsewhere.

Example:
    >>> lib = load_library()
    >>> adapter, meta = lib["wn_pos"]
    >>> meta["metrics"]["test"]["zero_shot"]["accuracy"], meta["metrics"]["test"]["adapter"]["accuracy"]
"""

from __future__ import annotations

import json
from pathlib import Path

from adapterhub.errors import AdapterHubError
from adapterhub.lora import LoraAdapter

META_NAME = "adapterhub_meta.json"


class LibraryNotFoundError(AdapterHubError, FileNotFoundError):
    """No trained example adapters where they were looked for."""


def library_dir() -> Path:
    """``examples/`` at the root of the source checkout this package was imported from."""
    return Path(__file__).resolve().parents[2] / "examples"


def find_library(library: str | Path | None = None) -> Path:
    """The folder of task adapters: ``library`` if given, else ``examples/`` of the source checkout
    this package runs from, else ``./examples`` (an installed package has no checkout beside it).

    Raises:
        LibraryNotFoundError: none of them holds ``<task>/adapterhub_meta.json``.
    """
    candidates = [Path(library).expanduser()] if library is not None else [library_dir(), Path.cwd() / "examples"]
    for folder in candidates:
        if any(folder.glob(f"*/{META_NAME}")):
            return folder.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise LibraryNotFoundError(
        f"no task adapters (<task>/{META_NAME}) in {where}; run from the repository root or pass --library PATH"
    )


def load_library(folder: str | Path | None = None) -> dict[str, tuple[LoraAdapter, dict]]:
    """Every example adapter with its metadata, keyed by task name (sorted).

    Raises:
        LibraryNotFoundError: the folder holds no ``<task>/adapterhub_meta.json``.
    """
    root = Path(folder) if folder is not None else library_dir()
    metas = sorted(root.glob(f"*/{META_NAME}"))
    if not metas:
        raise LibraryNotFoundError(
            f"no example adapters under {root}; run `python scripts/train_library.py` or pass the folder"
        )
    out = {}
    for path in metas:
        meta = json.loads(path.read_text(encoding="utf-8"))
        out[meta["task"]] = (LoraAdapter.load(path.parent), meta)
    return out
