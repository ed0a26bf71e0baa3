"""An adapter's example inputs (``adapterhub_examples.jsonl``): read on ``add``, kept, exported.

Up to 32 texts an adapter was trained on, stored as a file of its revision (a blob plus a
``revision_files`` row, like a model card), so they travel wherever the adapter does: ``export``
writes them beside the weights, ``push`` is an export, ``pull`` and the hub server's commits keep
them, and the prototype and learned routers embed them (``app/routing``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from adapterhub.errors import InvalidParameterError
from adapterhub.files import atomic_write
from adapterhub.route.base import EXAMPLES_FILE, parse_examples
from adapterhub.store.hub_catalog import revision_files

if TYPE_CHECKING:
    from adapterhub.app.core import HubCore

__all__ = ["EXAMPLES_FILE", "examples_of", "read_examples_file", "stored_examples", "write_examples"]


def read_examples_file(folder: Path | None, examples: str | Path | None) -> tuple[Path, str, int] | None:
    """The examples file to keep with an adapter: ``examples`` if given, else ``folder``'s, else None;
    checked, with its sha256 and size.

    Raises:
        InvalidParameterError: unreadable, or not ``{"text": ...}`` JSON lines (at most 32).
    """
    source = Path(examples) if examples is not None else (folder / EXAMPLES_FILE if folder is not None else None)
    if source is None or (examples is None and not source.is_file()):
        return None
    try:
        data = source.read_bytes()
    except OSError as e:
        raise InvalidParameterError(f"cannot read the examples file {source}: {e.strerror or e}") from None
    parse_examples(data)
    return source, hashlib.sha256(data).hexdigest(), len(data)


def stored_examples(core: HubCore, name: str) -> tuple[str, int] | None:
    """``(digest, size)`` of the examples file of ``name``'s head revision, or None."""
    record = core.catalog.get(name)
    for f in revision_files(core.catalog, name, record.revision or ""):
        if f.path == EXAMPLES_FILE:
            return f.digest, f.size
    return None


def examples_of(core: HubCore, name: str) -> list[str]:
    """The example inputs stored with an adapter's head revision ([] when it has none)."""
    found = stored_examples(core, name)
    if found is None:
        return []
    with core.blobs.open(found[0]) as f:
        return parse_examples(f.read(found[1] + 1))


def write_examples(core: HubCore, name: str, folder: Path) -> None:
    """Write ``name``'s examples file into ``folder`` (nothing when it has none)."""
    found = stored_examples(core, name)
    if found is not None:
        with atomic_write(folder / EXAMPLES_FILE) as out, core.blobs.open(found[0]) as src:
            out.write(src.read(found[1] + 1))
