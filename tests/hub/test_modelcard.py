"""Model cards: what push writes, and that pull reads back exactly what the catalog had."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml

from adapterhub.errors import InvalidAdapterError
from adapterhub.hubformat import parse_card, render_card, split_front_matter, validate_card
from adapterhub.store import AdapterRecord, LineageRecord, MetricRecord

DIGEST = "ab" * 32


def record(**overrides) -> AdapterRecord:
    values = dict(
        name="acme/merged",
        digest=DIGEST,
        size=1234,
        rank=8,
        alpha=16.0,
        target_modules=("query", "value"),
        config={"peft_type": "LORA", "r": 8, "lora_alpha": 16},
        base_model="org/base-model",
        task="text-to-sql",
        tags=("sql", "a|b"),
        description="Merged from two adapters.",
        revision="c" * 40,
        created=datetime(2025, 1, 1, tzinfo=timezone.utc),
    )
    values.update(overrides)
    return AdapterRecord(**values)


LINEAGE = (
    LineageRecord(parent_name="acme/a", operation="merge:lego", parent_digest="11" * 32,
                  params={"k": 8, "reweight": [True, False]}, weight=0.7, position=0),
    LineageRecord(parent_name="acme/b", operation="merge:lego", parent_digest="22" * 32,
                  params={"k": 8, "reweight": [True, False]}, weight=0.3, position=1),
)
METRICS = (MetricRecord(task="sql", split="test", metric="accuracy", value=0.8125),)


def test_merge_card_lists_every_parent_as_base_model():
    card = render_card(record(), LINEAGE, METRICS, repo_id="org/merged")
    meta, body = split_front_matter(card)
    assert meta["library_name"] == "peft"
    assert meta["base_model"] == ["acme/a", "acme/b"] and meta["base_model_relation"] == "merge"
    assert meta["tags"] == ["sql", "a|b", "lora", "adapterhub"]
    assert "| acme/a | merge:lego | 0.7 | `111111111111…` |" in body
    assert "| sql | test | accuracy | 0.8125 |" in body
    assert 'PeftModel.from_pretrained(base, "org/merged")' in body
    assert "a\\|b" not in body  # tags are not in a table; only table cells are escaped


def test_adapter_card_names_its_base_model():
    meta, _ = split_front_matter(render_card(record(), ()))
    assert meta["base_model"] == "org/base-model" and meta["base_model_relation"] == "adapter"
    meta, _ = split_front_matter(render_card(record(base_model=None), ()))
    assert "base_model" not in meta and "base_model_relation" not in meta


def test_round_trip_is_exact():
    info = parse_card(render_card(record(), LINEAGE, METRICS))
    assert info.has_adapterhub_section and info.name == "acme/merged"
    assert info.digest == DIGEST and info.task == "text-to-sql" and info.base_model == "org/base-model"
    assert info.tags == ("sql", "a|b") and info.description == "Merged from two adapters."
    assert info.lineage == LINEAGE
    assert info.metrics == ({"task": "sql", "split": "test", "metric": "accuracy", "value": 0.8125},)


def test_foreign_cards_give_their_hub_tags():
    info = parse_card("---\nlibrary_name: peft\nbase_model: x/y\ntags: [lora, fun]\n---\n# hi\n")
    assert not info.has_adapterhub_section and info.tags == ("fun",) and info.base_model == "x/y"
    assert parse_card("no front matter at all") == parse_card("")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("---\ntags: [unclosed\n---\n", "not valid YAML"),
        ("---\n- a list\n---\n", "mapping"),
        ("---\ntags: x\n", "closing"),
        ("---\nadapterhub:\n  lineage: [{parent: a}]\n---\n", "'operation'"),
        ("---\nadapterhub:\n  tags: nope\n---\n", "tags"),
        ("---\nadapterhub:\n  metrics: [{task: t, split: s, metric: m, value: .nan}]\n---\n", "finite"),
    ],
)
def test_malformed_cards_are_refused(text, needle):
    with pytest.raises(InvalidAdapterError, match=needle):
        parse_card(text)
    assert validate_card(text)


def test_validate_card():
    assert validate_card(render_card(record(), LINEAGE, METRICS)) == []
    assert validate_card("---\ntags: 3\n---\n") == ["'tags' must be a list of strings"]
    assert validate_card("---\nbase_model: {a: 1}\n---\n") == ["'base_model' must be a string or a list of strings"]


def test_front_matter_is_plain_yaml():
    card = render_card(record(), LINEAGE, METRICS)
    raw = card.split("---\n")[1]
    assert yaml.safe_load(raw)["adapterhub"]["lineage"][0]["params"] == {"k": 8, "reweight": [True, False]}
