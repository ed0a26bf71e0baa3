"""The routing-quality experiment's pieces: label-set routing is the oracle, the hedged mixture, the stream."""

from __future__ import annotations

import math

import pytest
import torch

from adapterhub.app.route_quality import held_out_stream, label_set_weights
from adapterhub.route.learned import nucleus_weights
from adapterhub.errors import InvalidParameterError
from adapterhub.eval.evaluate import evaluate
from adapterhub.models.base import tiny_random_bert
from tests.helpers import random_adapter_for, word_task

ANIMALS = {"cat": ["cat", "kitten", "purr"], "dog": ["dog", "puppy", "bark"]}
COLOURS = {"red": ["red", "crimson", "scarlet"], "blue": ["blue", "navy", "azure"], "green": ["green", "lime", "olive"]}


def test_label_set_routing_reproduces_the_oracle_exactly() -> None:
    model = tiny_random_bert(seed=0)
    tasks = [word_task(ANIMALS, "animals", "pets"), word_task(COLOURS, "colours", "colours")]
    adapters = [random_adapter_for(model.model, 1), random_adapter_for(model.model, 2)]
    inventory = {t.name: t.label_names for t in tasks}
    for own, task in enumerate(tasks):
        n = len(task.texts("test"))
        w = label_set_weights([list(reversed(task.label_names))] * n, inventory)  # order must not matter
        assert w.argmax(dim=1).eq(own).all() and torch.equal(w.sum(dim=1), torch.ones(n))
        routed = evaluate(adapters, task, weights=w, model=model)
        oracle = evaluate(adapters[own], task, model=model)
        assert routed.predictions == oracle.predictions


def test_label_set_routing_refuses_unknown_or_ambiguous_sets() -> None:
    with pytest.raises(InvalidParameterError, match="no adapter"):
        label_set_weights([["x", "y"]], {"a": ["x", "z"]})
    with pytest.raises(InvalidParameterError, match="several"):
        label_set_weights([["x"]], {"a": ["x"], "b": ["x"]})


def test_nucleus_weights_span_top1_to_uniform() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    assert torch.equal(nucleus_weights(probs, 0.0), torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))
    assert torch.allclose(nucleus_weights(probs, 1.0), torch.full((2, 3), 1 / math.sqrt(3)))
    mid = nucleus_weights(probs, 0.7)
    assert torch.allclose(mid[0], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(mid[1], torch.tensor([1, 1, 0]) / math.sqrt(2))


def test_stream_is_deterministic_and_drawn_from_the_split() -> None:
    a = held_out_stream(["wn_adj_kind", "chat_topic"], "test", 50)
    b = held_out_stream(["wn_adj_kind", "chat_topic"], "test", 50)
    for name, sub in a.items():
        assert sub.texts("test") == b[name].texts("test") and len(sub.texts("test")) == 50
        assert {e.split for e in sub.examples} == {"test"}
    assert held_out_stream(["wn_adj_kind"], "validation", 10)["wn_adj_kind"].texts("validation")


@pytest.mark.slow
def test_quick_run_covers_every_setting() -> None:
    from adapterhub.app.route_quality import run_route_quality

    r = run_route_quality(quick=True, per_task=2, threads=1)
    rows = r["text_only"]["rows"]
    assert {"zero-shot", "oracle (own adapter)", "uniform 1/sqrt(n)", "prototype top-1", "learned top-1"} <= set(rows)
    assert r["label_set"]["identical_to_oracle"] and r["label_set"]["mean"] == rows["oracle (own adapter)"]["mean"]
    assert "wn_topic_domain" in r["unseen"]
