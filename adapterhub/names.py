"""Adapter names: ``namespace/name``, the same shape as a Hugging Face repo id.

Names become repo ids on the hub and folder names on export, so anything that could escape a
folder (``..``, absolute paths, backslashes, extra ``/``) is refused here, at the one way in.
"""

from __future__ import annotations

import re

from adapterhub.errors import InvalidNameError

_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid ``namespace/name``.

    Each part: 1-96 characters of letters, digits, ``-``, ``_``, ``.``; starting and ending with a
    letter or digit; no ``--`` or ``..`` (the hub's repo-id rules).

    Raises:
        InvalidNameError: with the rule that was broken.
    """
    if not isinstance(name, str) or name.count("/") != 1:
        raise InvalidNameError(
            f"invalid adapter name {name!r}: use exactly one '/', as in 'namespace/name' (e.g. acme/sql-lora)"
        )
    for part in name.split("/"):
        if not _PART.fullmatch(part) or ".." in part or "--" in part:
            raise InvalidNameError(
                f"invalid adapter name {name!r}: each part of 'namespace/name' must be letters, digits, "
                "'-', '_' or '.', start and end with a letter or digit, and contain no '..' or '--'"
            )
    return name
