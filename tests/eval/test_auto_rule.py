"""``auto``'s constants are the ones the shipped table picked on the validation split.

``AUTO_CANDIDATES`` and ``DATA_FREE_RULE`` (``adapterhub.eval.merge_select``) are copied from the
selection step of ``docs/merge_quality.json`` (validation split only); if the table is rerun and
picks differently, this test says which constant to update.
"""

from __future__ import annotations

import json
from pathlib import Path

from adapterhub.eval.merge_select import AUTO_CANDIDATES, DATA_FREE_RULE, data_free_choice
from adapterhub.eval.quality.plan import AUTO_METHODS

TABLE = Path(__file__).resolve().parents[2] / "docs" / "merge_quality.json"


def test_constants_match_the_validation_selection_of_the_shipped_table():
    selection = json.loads(TABLE.read_text(encoding="utf-8"))["selection"]
    assert selection["split"] == "validation"
    assert [f"{m}/{c}" for m, c in AUTO_CANDIDATES] == selection["candidates"]
    assert [m for m, _ in AUTO_CANDIDATES] == list(AUTO_METHODS)
    rule = {n: f"{m}/{c}" for n, m, c in DATA_FREE_RULE}
    assert rule == {4: selection["rule"]["large"], 2: selection["rule"]["small"]}


def test_data_free_rule_by_size():
    large, small = data_free_choice(7), data_free_choice(2)
    assert (large.method, large.convention) == DATA_FREE_RULE[0][1:]
    assert (small.method, small.convention) == DATA_FREE_RULE[1][1:]
    assert large.basis == "rule" and "validation" in large.reason
    assert data_free_choice(4).method == large.method and data_free_choice(3).method == small.method
