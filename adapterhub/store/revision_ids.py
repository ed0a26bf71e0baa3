"""Revision ids: how a version of an adapter is named, and which spellings name the head.

No SQL here: the writer computes ids with ``make_revision_id`` and the readers parse what a caller
asked for with ``revision_prefix``; anyone can recompute an id from a stored row.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from adapterhub.errors import InvalidParameterError

__all__ = ["FIRST_MESSAGE", "HEAD_ALIASES", "canonical_json", "make_revision_id", "revision_prefix"]

HEAD_ALIASES = frozenset({"main", "HEAD", "head"})
FIRST_MESSAGE = "add"  # default message of the revision every add creates
_HEX = frozenset("0123456789abcdef")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no NaN: the same value always gives the same text.

    Raises:
        InvalidParameterError: ``value`` is not plain JSON (NaN, infinities, arbitrary objects).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidParameterError(f"adapter config must be plain JSON (no NaN, no objects): {e}") from None


def make_revision_id(
    *, name: str, parent_revision: str | None, digest: str, config: dict[str, Any], message: str, created: datetime
) -> str:
    """A revision id: sha1 of the canonical JSON of everything that defines the revision.

    Why this shape: the hub protocol that ``huggingface_hub`` and PEFT speak identifies versions by
    40-hex git commit ids (``X-Repo-Commit``, ``snapshots/<sha>`` cache folders, and its commit-hash
    checks), so the catalog's ids look like git's. Why deterministic rather than random: anyone can
    recompute an id from the stored row and detect tampering, and because the parent's id is part
    of the hash the history is a chain that cannot be rewritten without changing every later id
    (as in git). The adapter name and the creation time are included so two adapters with the same
    content, or the same content re-added after a removal, still get distinct commits.
    """
    payload = {
        "adapter": name,
        "parent": parent_revision,
        "digest": digest,
        "config": config,
        "message": message,
        "created": created.astimezone(timezone.utc).isoformat(),
    }
    return hashlib.sha1(canonical_json(payload).encode("utf-8")).hexdigest()


def revision_prefix(revision: str) -> str | None:
    """The lowercase id or id prefix that ``revision`` spells, or None when it cannot name one.

    A full id is 40 hex characters; a prefix needs at least 7 (as ``git`` abbreviates). Anything
    else (a branch name other than the head aliases, a path) names no revision.
    """
    lowered = revision.lower()
    if 7 <= len(lowered) <= 40 and _HEX.issuperset(lowered):
        return lowered
    return None
