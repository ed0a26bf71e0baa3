"""Model cards (``README.md`` with YAML front matter) for pushed adapters, and reading them back.

The front matter has two parts:
- the Hugging Face hub's own keys, so the hub, its search and PEFT tooling understand the repo:
  ``library_name: peft``, ``base_model`` with ``base_model_relation`` (``adapter`` for an adapter
  of one base model; ``merge`` for a merge, with every merged parent listed as a base model, as the
  hub's model tree expects), and ``tags``;
- an ``adapterhub`` section with the catalog's exact values (name, task, tags, canonical digest,
  lineage rows, metrics), so ``pull`` into another catalog restores them without guessing from
  free text. The markdown body repeats them for people (a lineage table, a metrics table).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from adapterhub.errors import InvalidAdapterError
from adapterhub.hubformat.limits import MAX_FRONT_MATTER_BYTES, YamlLimitError, load_yaml_bounded
from adapterhub.store.records import AdapterRecord, LineageRecord, MetricRecord

__all__ = ["MAX_CARD_METADATA_BYTES", "CardInfo", "parse_card", "render_card", "split_front_matter", "validate_card"]

_AUTO_TAGS = ("lora", "adapterhub")
# What one card may put into the catalog (tags, description, lineage with params, metrics), as JSON
# once every YAML alias is expanded: every anonymous ``GET .../lineage`` reads it back.
MAX_CARD_METADATA_BYTES = 64 << 10


@dataclass(frozen=True)
class CardInfo:
    """What a model card says about an adapter (empty fields when the card does not say)."""

    name: str | None = None
    task: str | None = None
    tags: tuple[str, ...] = ()
    description: str | None = None
    digest: str | None = None
    base_model: str | None = None
    lineage: tuple[LineageRecord, ...] = ()
    metrics: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    has_adapterhub_section: bool = False


def _relation(lineage: Sequence[LineageRecord]) -> str:
    return "merge" if any(p.operation.split(":", 1)[0] == "merge" for p in lineage) else "adapter"


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def render_card(
    record: AdapterRecord,
    lineage: Sequence[LineageRecord] = (),
    metrics: Sequence[MetricRecord] = (),
    *,
    repo_id: str | None = None,
) -> str:
    """The ``README.md`` of a pushed adapter.

    Args:
        record: the catalog entry.
        lineage: its parents (``Catalog.lineage``).
        metrics: its measured numbers (``Catalog.metrics``).
        repo_id: where it is pushed (for the usage snippet); default the catalog name.
    """
    repo_id = repo_id or record.name
    relation = _relation(lineage)
    meta: dict[str, Any] = {"library_name": "peft"}
    if relation == "merge":
        meta["base_model"] = list(dict.fromkeys(p.parent_name for p in lineage))
        meta["base_model_relation"] = "merge"
    elif record.base_model:
        meta["base_model"] = record.base_model
        meta["base_model_relation"] = "adapter"
    meta["tags"] = list(dict.fromkeys([*record.tags, *_AUTO_TAGS]))
    meta["adapterhub"] = {
        "name": record.name,
        "base_model": record.base_model,
        "task": record.task,
        "tags": list(record.tags),
        "description": record.description or "",
        "digest": record.digest,
        "rank": record.rank,
        "alpha": record.alpha,
        "target_modules": list(record.target_modules),
        "lineage": [
            {
                "parent": p.parent_name,
                "operation": p.operation,
                "parent_digest": p.parent_digest,
                "weight": p.weight,
                "params": p.params,
                "position": p.position,
            }
            for p in lineage
        ],
        "metrics": [{"task": m.task, "split": m.split, "metric": m.metric, "value": m.value} for m in metrics],
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    lines = [f"---\n{front}---", "", f"# {repo_id}", ""]
    if record.description:
        lines += [record.description, ""]
    targets = ", ".join(record.target_modules)
    lines += [
        f"A LoRA adapter (rank {record.rank}, alpha {record.alpha:g}, targets {targets}) for "
        f"`{record.base_model or 'an unnamed base model'}`"
        + (f", for the task *{record.task}*." if record.task else "."),
        "",
        f"- sha256 of `adapter_model.safetensors`: `{record.digest}`",
        f"- catalog name: `{record.name}`",
        "",
    ]
    if lineage:
        lines += ["## Lineage", "", "| parent | operation | weight | parent sha256 |", "|---|---|---|---|"]
        for p in lineage:
            digest = f"`{p.parent_digest[:12]}…`" if p.parent_digest else ""
            lines.append(f"| {_cell(p.parent_name)} | {_cell(p.operation)} | {_cell(p.weight)} | {digest} |")
        lines.append("")
    if metrics:
        lines += ["## Metrics", "", "| task | split | metric | value |", "|---|---|---|---|"]
        for m in metrics:
            lines.append(f"| {_cell(m.task)} | {_cell(m.split)} | {_cell(m.metric)} | {m.value:.4f} |")
        lines.append("")
    lines += [
        "## Usage",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModel",
        "",
        f'base = AutoModel.from_pretrained("{record.base_model or "<base model>"}")',
        f'model = PeftModel.from_pretrained(base, "{repo_id}")',
        "```",
        "",
    ]
    return "\n".join(lines)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(front matter mapping, body); an empty mapping when the card has no front matter.

    Raises:
        InvalidAdapterError: the front matter is not valid YAML or not a mapping.
    """
    if not text.startswith("---"):
        return {}, text
    lines = text.split("\n")
    if lines[0].strip() != "---":
        return {}, text
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            raw = "\n".join(lines[1:i])
            body = "\n".join(lines[i + 1 :])
            break
    else:
        raise InvalidAdapterError("README.md: the YAML front matter has no closing '---' line")
    if len(raw.encode("utf-8", errors="replace")) > MAX_FRONT_MATTER_BYTES:
        raise InvalidAdapterError(
            f"README.md: the YAML front matter is larger than {MAX_FRONT_MATTER_BYTES} bytes; "
            "keep long text in the markdown body"
        )
    try:
        meta = load_yaml_bounded(raw) if raw.strip() else {}
    except YamlLimitError as e:
        raise InvalidAdapterError(f"README.md: the front matter is refused: {e}") from None
    except yaml.YAMLError as e:
        raise InvalidAdapterError(f"README.md: the front matter is not valid YAML ({e})") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise InvalidAdapterError("README.md: the front matter must be a YAML mapping (key: value lines)")
    return meta, body


def validate_card(text: str) -> list[str]:
    """Problems in a card's front matter (empty when it is fine), as the validate-yaml API reports."""
    try:
        meta, _ = split_front_matter(text)
        _parse_meta(meta)
    except InvalidAdapterError as e:
        return [str(e)]
    errors = []
    tags = meta.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        errors.append("'tags' must be a list of strings")
    base = meta.get("base_model")
    if base is not None and not (
        isinstance(base, str) or (isinstance(base, list) and all(isinstance(b, str) for b in base))
    ):
        errors.append("'base_model' must be a string or a list of strings")
    return errors


def _str_or_none(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidAdapterError(f"README.md: adapterhub.{key} must be a string")
    return value


def _parse_lineage(rows: Any) -> tuple[LineageRecord, ...]:
    if rows is None:
        return ()
    if not isinstance(rows, list):
        raise InvalidAdapterError("README.md: adapterhub.lineage must be a list")
    out = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("parent"), str) or not isinstance(
            row.get("operation"), str
        ):
            raise InvalidAdapterError("README.md: each adapterhub.lineage row needs 'parent' and 'operation' strings")
        weight = row.get("weight")
        if weight is not None and (not isinstance(weight, (int, float)) or isinstance(weight, bool)):
            raise InvalidAdapterError("README.md: adapterhub.lineage weight must be a number")
        params = row.get("params") or {}
        if not isinstance(params, dict):
            raise InvalidAdapterError("README.md: adapterhub.lineage params must be a mapping")
        position = row.get("position")
        out.append(
            LineageRecord(
                parent_name=row["parent"],
                operation=row["operation"],
                parent_digest=_str_or_none(row.get("parent_digest"), "lineage.parent_digest"),
                params=params,
                weight=float(weight) if weight is not None else None,
                position=position if isinstance(position, int) and not isinstance(position, bool) else None,
            )
        )
    return tuple(out)


def _parse_meta(meta: dict[str, Any]) -> CardInfo:
    section = meta.get("adapterhub")
    raw_tags = meta.get("tags")
    raw_tags = raw_tags if isinstance(raw_tags, list) else []
    hf_tags = tuple(t for t in raw_tags if isinstance(t, str) and t not in _AUTO_TAGS)
    base = meta.get("base_model") if isinstance(meta.get("base_model"), str) else None
    if section is None:
        info = CardInfo(tags=hf_tags, base_model=base)
        _check_metadata_size(info)
        return info
    if not isinstance(section, dict):
        raise InvalidAdapterError("README.md: the 'adapterhub' section must be a mapping")
    tags = section.get("tags", list(hf_tags))
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidAdapterError("README.md: adapterhub.tags must be a list of strings")
    metrics = section.get("metrics") or []
    if not isinstance(metrics, list) or not all(
        isinstance(m, dict)
        and all(isinstance(m.get(k), str) for k in ("task", "split", "metric"))
        and isinstance(m.get("value"), (int, float))
        and math.isfinite(float(m["value"]))
        for m in metrics
    ):
        raise InvalidAdapterError("README.md: adapterhub.metrics rows need task, split, metric and a finite value")
    info = CardInfo(
        name=_str_or_none(section.get("name"), "name"),
        task=_str_or_none(section.get("task"), "task"),
        tags=tuple(tags),
        description=section.get("description") if isinstance(section.get("description"), str) else None,
        digest=_str_or_none(section.get("digest"), "digest"),
        base_model=_str_or_none(section.get("base_model"), "base_model") or base,
        lineage=_parse_lineage(section.get("lineage")),
        metrics=tuple(metrics),
        has_adapterhub_section=True,
    )
    _check_metadata_size(info)
    return info


def _check_metadata_size(info: CardInfo) -> None:
    """Refuse a card whose catalog metadata is over ``MAX_CARD_METADATA_BYTES`` as JSON.

    Measured after YAML aliases are expanded (the JSON the catalog would store), so a small card
    cannot become a huge lineage row.
    """
    stored = {
        "tags": info.tags,
        "description": info.description,
        "lineage": [(p.parent_name, p.operation, p.parent_digest, p.params) for p in info.lineage],
        "metrics": info.metrics,
        "name": info.name,
        "task": info.task,
        "base_model": info.base_model,
        "digest": info.digest,
    }
    size = len(json.dumps(stored, default=str))
    if size > MAX_CARD_METADATA_BYTES:
        raise InvalidAdapterError(
            f"README.md: the adapterhub section holds {size} bytes of metadata once expanded, more than "
            f"{MAX_CARD_METADATA_BYTES}; shorten the description, tags, lineage params or metrics"
        )


def parse_card(text: str) -> CardInfo:
    """Read back what ``render_card`` wrote (and the hub's standard keys of any other card).

    Raises:
        InvalidAdapterError: malformed front matter or a malformed ``adapterhub`` section.
    """
    meta, _ = split_front_matter(text)
    return _parse_meta(meta)
