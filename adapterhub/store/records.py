"""Plain records the catalog hands out: frozen dataclasses, never ORM objects.

Why not ORM objects: callers (the facade, the CLI, the server) must not hold live database state,
trigger lazy loads after the session is gone, or mutate a row by accident. A record is a value; it
serialises with ``to_dict()`` (JSON-ready, ISO-8601 UTC timestamps) for ``--json`` and HTTP.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapterhub.errors import InvalidParameterError

__all__ = [
    "KEEP",
    "AdapterRecord",
    "Keep",
    "LineageRecord",
    "MetricRecord",
    "RevisionFileRecord",
    "RevisionRecord",
    "normalise_tags",
]


class Keep(enum.Enum):
    """An argument meaning "leave the stored value as it is", for fields where None is a value."""

    KEEP = "keep"


KEEP = Keep.KEEP


def normalise_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Strip whitespace, drop empties and duplicates, keep first-seen order.

    Raises:
        InvalidParameterError: a tag is not a string, spans lines or is longer than 255 characters.
    """
    if isinstance(tags, str):
        raise InvalidParameterError(f"tags must be a list of strings, not the string {tags!r}")
    out: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidParameterError(f"tag {tag!r} is not a string")
        tag = tag.strip()
        if len(tag) > 255:
            raise InvalidParameterError(f"tag {tag[:40]!r}… is longer than 255 characters")
        if any(c in tag for c in "\n\r\t"):
            raise InvalidParameterError(f"tag {tag!r} must be one line without tabs")
        if tag:
            out[tag] = None
    return tuple(out)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True, kw_only=True, slots=True)
class AdapterRecord:
    """One catalog entry (the adapter's current head revision).

    Attributes:
        name: ``namespace/name``, unique.
        digest: sha256 of the adapter's safetensors blob.
        size: blob size in bytes.
        rank: the largest rank over modules.
        alpha: ``lora_alpha``.
        target_modules: module names the adapter targets.
        config: the full ``adapter_config.json`` dict (unknown PEFT keys kept).
        base_model: base model id, if the config names one.
        ranks: per-module ranks when they are not uniform, else ``None``.
        task: what the adapter does (``text-to-sql``), free text.
        tags: labels; order kept, duplicates dropped.
        description: free text.
        source_repo / source_revision: where it was imported or pulled from.
        revision: 40-hex id of the head revision (set by the catalog).
        created: UTC time the entry was added (set by the catalog unless given).
    """

    name: str
    digest: str
    size: int
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    config: dict[str, Any]
    base_model: str | None = None
    ranks: dict[str, int] | None = None
    task: str | None = None
    tags: tuple[str, ...] = ()
    description: str = ""
    source_repo: str | None = None
    source_revision: str | None = None
    revision: str | None = None
    created: datetime | None = None

    def __post_init__(self) -> None:
        # Accept lists from callers and JSON; store tuples so a record cannot be changed through a
        # shared list. Tuples are trusted here (the catalog builds 100k records per listing);
        # ``Catalog.add`` validates and normalises tags of every record it stores.
        if type(self.tags) is not tuple:
            object.__setattr__(self, "tags", normalise_tags(self.tags))
        if type(self.target_modules) is not tuple:
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists, ISO-8601 ``created``). ``config`` is the record's own dict."""
        return {
            "name": self.name,
            "base_model": self.base_model,
            "rank": self.rank,
            "alpha": self.alpha,
            "ranks": self.ranks,
            "target_modules": list(self.target_modules),
            "task": self.task,
            "tags": list(self.tags),
            "description": self.description,
            "digest": self.digest,
            "size": self.size,
            "config": self.config,
            "source_repo": self.source_repo,
            "source_revision": self.source_revision,
            "revision": self.revision,
            "created": _iso(self.created),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterRecord:
        """Inverse of ``to_dict`` (unknown keys are rejected so typos do not pass silently)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidParameterError(f"unknown AdapterRecord fields {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        values["created"] = _parse_dt(values.get("created"))
        return cls(**values)


@dataclass(frozen=True, kw_only=True, slots=True)
class LineageRecord:
    """One parent of a derived adapter.

    Attributes:
        parent_name: the parent's catalog name (or hub repo for imports); kept after the parent is
            removed, so the history stays readable.
        operation: what was done, e.g. ``merge:lego``, ``import``, ``pull``.
        parent_digest: the parent's blob digest at the time (pins the exact content).
        params: the operation's parameters (JSON-ready).
        weight: this parent's mixing weight, if the operation has one.
        position: order among the parents; assigned 0, 1, … by ``Catalog.add`` when ``None``.
        child_name: set on records read from the catalog; ignored by ``Catalog.add``.
    """

    parent_name: str
    operation: str
    parent_digest: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    weight: float | None = None
    position: int | None = None
    child_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "child_name": self.child_name,
            "parent_name": self.parent_name,
            "parent_digest": self.parent_digest,
            "operation": self.operation,
            "params": self.params,
            "weight": self.weight,
            "position": self.position,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricRecord:
    """One measured number: ``value`` of ``metric`` on ``task``/``split``."""

    task: str
    split: str
    metric: str
    value: float
    extra: dict[str, Any] | None = None
    created: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "split": self.split,
            "metric": self.metric,
            "value": self.value,
            "extra": self.extra,
            "created": _iso(self.created),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class RevisionRecord:
    """One version of an adapter's content (the hub server serves these as commits)."""

    revision: str
    parent_revision: str | None
    digest: str
    size: int
    config: dict[str, Any]
    message: str
    source_revision: str | None
    created: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "parent_revision": self.parent_revision,
            "digest": self.digest,
            "size": self.size,
            "config": self.config,
            "message": self.message,
            "source_revision": self.source_revision,
            "created": _iso(self.created),
        }


@dataclass(frozen=True, slots=True)
class RevisionFileRecord:
    """One extra file of a revision (README.md, tokenizer files, …): its path in the repo and the
    blob that holds its bytes."""

    path: str
    digest: str
    size: int
