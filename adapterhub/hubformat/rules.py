"""Which files a hub repo may hold: safe relative paths, and never anything that can carry a pickle.

These checks run twice on purpose: at preupload (from the path and a sample of the first bytes a
client announces, so a bad upload fails before its bytes are sent) and when each file's bytes
arrive in the staging folder (the bytes are what count, whatever the client announced).
"""

from __future__ import annotations

from pathlib import Path

from adapterhub.errors import ForbiddenFileError, InvalidRepoPathError
from adapterhub.lora import README_NAME, WEIGHTS_NAME

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "FORBIDDEN_SUFFIXES",
    "LFS_THRESHOLD",
    "README_NAME",
    "check_allowed_file",
    "check_repo_path",
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


def check_repo_path(path: object) -> str:
    """Return ``path`` if it is a safe relative path inside a repo, else raise.

    Refused: empty paths, absolute paths, backslashes, drive letters, ``.``/``..``/empty segments,
    control characters, ``.git`` folders and paths over 1024 characters. Nothing is normalised: a
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
        elif ".git" in parts:
            why = "'.git' folders are not allowed"
    if why:
        raise InvalidRepoPathError(f"invalid path in repo {path!r}: {why}")
    return path


def check_allowed_file(path: str, head: bytes = b"") -> None:
    """Refuse files that can carry a pickle, by name and by their first bytes.

    Args:
        path: the file's path in the repo (already checked by :func:`check_repo_path`).
        head: the file's first bytes, when known (a zip archive or a protocol-2+ pickle is refused
            whatever its name).

    Raises:
        ForbiddenFileError: the file is refused.
    """
    suffix = Path(path).suffix.lower()
    if suffix in FORBIDDEN_SUFFIXES:
        raise ForbiddenFileError(
            f"'{path}': {suffix} files can hold pickled code and are never stored; "
            f"convert the weights to {WEIGHTS_NAME} (safetensors) and upload that instead"
        )
    if head.startswith(_ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise ForbiddenFileError(
            f"'{path}' is a pickle or zip archive (torch.save format); the hub stores safetensors and text only"
        )
