"""Examples files with labels: parsing, bounds, and the split auto uses (fit half / score half)."""

from __future__ import annotations

import pytest

from adapterhub.errors import InvalidParameterError
from adapterhub.eval.merge_select import examples_task, split_examples
from adapterhub.route.base import (
    draw_examples,
    draw_labeled_examples,
    parse_example_labels,
    parse_examples,
    render_examples,
)
from adapterhub.tasks import load_task


def test_labels_round_trip_and_texts_stay_the_routers_texts():
    rows = draw_labeled_examples("wn_pos", 6)
    assert [t for t, _ in rows] == draw_examples("wn_pos", 6)
    data = render_examples([t for t, _ in rows], [lab for _, lab in rows])
    assert parse_examples(data) == [t for t, _ in rows]
    assert parse_example_labels(data) == [lab for _, lab in rows]
    assert parse_example_labels(render_examples(["x", "y"])) == [None, None]


@pytest.mark.parametrize("label", ["", 3, "x" * 201])
def test_bad_labels_are_refused(label):
    data = ('{"text": "ok", "label": %s}\n' % (f'"{label}"' if isinstance(label, str) else label)).encode()
    with pytest.raises(InvalidParameterError, match="label"):
        parse_example_labels(data)


def test_split_and_examples_task():
    texts, labels = [f"t{i}" for i in range(5)], ["noun", "verb", "adjective", "adverb", "noun"]
    gram_texts, score_texts, score_labels = split_examples(texts, labels)
    assert gram_texts == texts[:2] and score_texts == texts[2:] and score_labels == labels[2:]
    task = examples_task(load_task("wn_pos"), score_texts, score_labels)
    assert task is not None and task.texts("validation") == score_texts
    assert [task.labels[i].name for i in task.label_ids("validation")] == score_labels
    assert examples_task(load_task("wn_pos"), ["a"], [None]) is None
    assert examples_task(load_task("wn_pos"), ["a"], ["not-a-label"]) is None
