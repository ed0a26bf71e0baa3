"""What a received model card may tell the catalog (pull and hub commits read cards the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from adapterhub.app.ingest import Description
from adapterhub.hubformat import CardInfo, parse_card
from adapterhub.store import MetricRecord

if TYPE_CHECKING:
    from adapterhub.lora import LoraAdapter


def read_card(path: Path | None, adapter: LoraAdapter, *, file_sha256: str | None = None) -> CardInfo:
    """What the model card at ``path`` says about ``adapter``, or an empty ``CardInfo``.

    A card whose recorded digest is not this adapter's describes other content (weights
    replaced, card left as it was), so its adapterhub section (lineage, metrics, tags) is
    ignored. ``file_sha256`` (of the weights file as received) saves a pass over the tensors
    when it equals the recorded digest: only the canonical bytes hash to it.
    """
    if path is None or not path.is_file():
        return CardInfo()
    card = parse_card(path.read_text(encoding="utf-8", errors="replace"))
    if card.digest is not None and card.digest != file_sha256 and card.digest != adapter.digest:
        return CardInfo(base_model=card.base_model)
    return card


def card_description(card: CardInfo) -> Description:
    """The task, tags and description a card gives its entry."""
    return Description(task=card.task, tags=card.tags, description=card.description or "")


def card_metrics(card: CardInfo) -> list[MetricRecord]:
    """The metrics a card's adapterhub section lists, as catalog records."""
    return [
        MetricRecord(task=m["task"], split=m["split"], metric=m["metric"], value=m["value"]) for m in card.metrics
    ]
