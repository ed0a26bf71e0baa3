"""Which files a hub repo may hold: safe relative paths, and never anything that can carry a pickle.

These checks run twice on purpose: at preupload (from the path and a sample of the first bytes a
client announces, so a bad upload fails before its bytes are sent) and when each file's bytes
arrive in the staging folder (the bytes are what count, whatever the client announced).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from adapterhub.errors import ForbiddenFileError, InvalidRepoPathError
from adapterhub.lora import README_NAME, WEIGHTS_NAME

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "FORBIDDEN_SUFFIXES",
    "HEAD_BYTES",
    "LFS_THRESHOLD",
    "README_NAME",
    "check_allowed_file",
    "check_repo_path",
    "looks_like_pickle",
]

DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3  # 2 GiB of file bytes per commit
LFS_THRESHOLD = 10 * 1024**2  # files this large are listed as LFS files, as the Hugging Face hub does

# Formats that can hold a pickle (torch .bin/.pt are pickles or zip archives of pickles; numpy
# .npy/.npz can hold object arrays; joblib/dill are pickles), plus compiled Python. The hub stores
# weights as safetensors only, so none of these is ever accepted, whatever it is called inside.
FORBIDDEN_SUFFIXES = frozenset(
    {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz", ".pyc", ".pyo", ".mar"}
)
_ZIP_MAGIC = b"PK\x03\x04"
HEAD_BYTES = 64 * 1024  # how much of a file's start the pickle check reads (see looks_like_pickle)
_MAX_SAFETENSORS_HEADER = 100 * 1024**2  # the safetensors library's own limit on its JSON header


def check_repo_path(path: object) -> str:
    """Return ``path`` if it is a safe relative path inside a repo, else raise.

    Refused: empty paths, absolute paths, backslashes, colons (drive letters, NTFS streams),
    ``.``/``..``/empty segments, control characters, ``.git`` folders in any case, names with a
    leading space or a trailing dot or space (Windows drops those, turning ``x.bin.`` into ``x.bin``)
    and paths over 1024 characters. Nothing is normalised: a
    path that needs normalising is refused, so what a client sends is exactly what is stored.

    Raises:
        InvalidRepoPathError: with the rule that was broken.
    """
    if not isinstance(path, str) or not path:
        raise InvalidRepoPathError(f"invalid path in repo {path!r}: give a relative path such as 'README.md'")
    why = None
    if len(path) > 1024:
        why = "it is longer than 1024 characters"
    elif path.startswith("/"):
        why = "absolute paths are not allowed"
    elif "\\" in path:
        why = "backslashes are not allowed; use '/' between folders"
    elif any(ord(c) < 32 or ord(c) == 127 for c in path):
        why = "control characters are not allowed"
    elif len(path) >= 2 and path[1] == ":":
        why = "drive letters are not allowed"
    else:
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            why = "'.', '..' and empty segments are not allowed"
        elif any(part.lower() in (".git", "git~1") for part in parts):  # .GIT is .git on Windows/macOS
            why = "'.git' folders are not allowed"
        elif any(part.endswith((".", " ")) or part.startswith(" ") for part in parts):
            # Windows drops trailing dots and spaces: 'adapter_model.bin.' would be written as a .bin
            why = "names may not start with a space or end with a dot or a space"
        elif ":" in path:
            why = "':' is not allowed (drive letters and NTFS streams)"
    if why:
        raise InvalidRepoPathError(f"invalid path in repo {path!r}: {why}")
    return path


def check_allowed_file(path: str, head: bytes = b"", *, size: int | None = None) -> None:
    """Refuse files that can carry a pickle, by name and by content.

    Args:
        path: the file's path in the repo (already checked by :func:`check_repo_path`).
        head: the file's first bytes (up to ``HEAD_BYTES``), when known: a zip archive, a pickle of
            any protocol (:func:`looks_like_pickle`) or a ``.safetensors`` file without a
            safetensors header is refused whatever its name.
        size: the file's full size, when known (the bytes have arrived); None for a client's sample
            at preupload, which is checked leniently and checked again when the bytes arrive.

    Raises:
        ForbiddenFileError: the file is refused.
    """
    suffix = Path(path).suffix.lower()
    if suffix in FORBIDDEN_SUFFIXES:
        raise ForbiddenFileError(
            f"'{path}': {suffix} files can hold pickled code and are never stored; "
            f"convert the weights to {WEIGHTS_NAME} (safetensors) and upload that instead"
        )
    # a safetensors header of 0x280 bytes starts like a protocol-2 pickle (0x80 0x02) but is none
    safetensors = len(head) >= 9 and _safetensors_header_ok(head, size)
    pickle_marker = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and not safetensors
    if head.startswith(_ZIP_MAGIC) or pickle_marker:
        raise ForbiddenFileError(
            f"'{path}' is a pickle or zip archive (torch.save format); the hub stores safetensors and text only"
        )
    if suffix == ".safetensors" and not _safetensors_header_ok(head, size):
        raise ForbiddenFileError(f"'{path}' is named .safetensors but does not start with a safetensors header")
    if head and looks_like_pickle(head, size=size):
        raise ForbiddenFileError(
            f"'{path}' parses as a pickle (which can run code when loaded); the hub stores safetensors and text only"
        )


def _safetensors_header_ok(head: bytes, size: int | None) -> bool:
    """Whether ``head`` starts as a safetensors file does: an 8-byte little-endian header length,
    then a JSON object of that length (which fits in the file, when its size is known)."""
    if len(head) < 8:
        return size is None and not head  # no sample at preupload: the bytes are checked on arrival
    n = int.from_bytes(head[:8], "little")
    if not 2 <= n <= _MAX_SAFETENSORS_HEADER or (size is not None and 8 + n > size):
        return False
    return len(head) == 8 or head[8:9] == b"{"


class _WindowEnd(Exception):
    """The pickle machine ran past the bytes we read while the file goes on."""


class _PickleFound(Exception):
    """The pickle machine would import a global (the first step of running code)."""


class _Window(io.RawIOBase):
    """``head`` as a file for the unpickler; reading past it raises ``_WindowEnd`` if the file is
    longer (the real unpickler would go on), else ends as the file does."""

    def __init__(self, head: bytes, size: int | None) -> None:
        self._head, self._pos = head, 0
        self._more = size is not None and size > len(head)
        self._size = size

    def read(self, n: int = -1) -> bytes:
        end = len(self._head) if n is None or n < 0 else self._pos + n
        if end > len(self._head) and self._more and (self._size is None or end <= self._size):
            raise _WindowEnd
        data = self._head[self._pos : end]
        self._pos += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        i = self._head.find(b"\n", self._pos)
        if i < 0:
            if self._more:
                raise _WindowEnd
            i = len(self._head) - 1
        data = self._head[self._pos : i + 1]
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Probe(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """The pure-Python unpickler (its memo is a dict: no 'p999999999' memory bomb as in the C one),
    stopped before it would import anything."""

    def find_class(self, module: str, name: str) -> Any:
        if all(part.isidentifier() for part in f"{module}.{name}".split(".")):
            raise _PickleFound
        raise pickle.UnpicklingError("not an importable name")  # the real unpickler fails here too

    def persistent_load(self, pid: Any) -> Any:
        return None  # torch's loader resolves these; on its own an id runs nothing


def looks_like_pickle(head: bytes, *, size: int | None = None) -> bool:
    """Whether a file that starts with ``head`` would be loaded by ``pickle``/``torch.load``.

    Every pickle protocol is covered, also 0 and 1, which are plain ASCII (``cos\nsystem\n(S'...'
    \ntR.``) and carry no ``0x80`` marker. ``head`` is run through a real (pure-Python) unpickler
    that never imports anything, so the answer follows pickle's own grammar and stack rules:

    - it would import a global (``GLOBAL``/``INST``/``STACK_GLOBAL`` with importable names): yes,
      that is how a pickle runs code;
    - it reaches ``STOP``: yes, a complete pickle (even of plain data; the hub has no use for one);
    - it runs past ``head`` while the file goes on (``size`` > ``len(head)``): yes, ``HEAD_BYTES``
      of valid opcodes are not text, and a payload may follow;
    - any error before that (text fails on its first bytes): no; a real unpickler stops there too.
    """
    probe = _Probe(_Window(head, size))
    try:
        probe.load()
    except (_PickleFound, _WindowEnd):
        return True
    except Exception:  # noqa: BLE001 - any unpickling error means pickle.load would fail here too
        return False
    return True
