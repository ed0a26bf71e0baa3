"""Durable file writes and file hashing: the one copy every layer uses (no torch, no SQL).

A crash must never leave a half-written file under its final name, so writers go through a temp
file in the same folder that is fsynced, renamed over the target, and the folder fsynced after.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough to never matter for memory
TMP_PREFIX = ".tmp-"


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> tuple[str, int]:
    """The hex sha256 of a file's bytes and its size, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _plain_file_mode() -> int:
    """The mode ``open()`` would give a new file (0666 minus the umask); mkstemp makes 0600 files."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Write ``path`` through a temp file in the same folder: fsync, then rename over the target.

    A crash at any point leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        os.fchmod(fd, _plain_file_mode())
        with os.fdopen(fd, mode) as f:
            yield f  # type: ignore[misc]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
