"""Training loop on the tiny random BERT: loss goes down, runs are reproducible, the model is restored."""

from __future__ import annotations

import math

import pytest
import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.eval.evaluate import evaluate, split_scorer
from adapterhub.models.base import tiny_random_bert
from adapterhub.models.lora_layers import lora_layers
from adapterhub.models.train import train_adapter
from tests.helpers import synthetic_task


def _mean(xs):
    return sum(xs) / len(xs)


def test_similarity_training_lowers_the_loss_and_restores_the_model():
    model = tiny_random_bert(seed=0)
    task = synthetic_task()
    flags = {n: p.requires_grad for n, p in model.model.named_parameters()}
    before = model.encode(task.texts("test"))
    result = train_adapter(model, task, rank=4, alpha=8, epochs=6, lr=1e-2, batch_size=8, seed=0,
                           validate=split_scorer(task))
    losses = result.losses
    assert len(losses) == 6 * math.ceil(36 / 8) == result.metrics["steps"]  # 36 train examples
    assert _mean(losses[-5:]) < 0.5 * _mean(losses[:5])
    # restored: no LoRA layers, same flags, same outputs, eval mode as before
    assert not list(lora_layers(model.model))
    assert {n: p.requires_grad for n, p in model.model.named_parameters()} == flags
    assert not model.model.training
    torch.testing.assert_close(model.encode(task.texts("test")), before, rtol=0, atol=0)
    # the adapter carries the task: validation accuracy (recomputed here) beats the untrained model
    trained = evaluate(result.adapter, task, split="validation", model=model)
    baseline = evaluate(None, task, split="validation", model=model)
    assert trained.accuracy == result.metrics["validation_accuracy"]
    assert trained.accuracy > baseline.accuracy
    assert result.adapter.base_model == model.base_model_id
    assert len(result.adapter.module_paths) == 12 and result.adapter.extra_tensor_names == []
    assert result.params["rank"] == 4 and result.params["protocol"] == "similarity"


def test_training_is_deterministic_for_a_seed():
    task = synthetic_task()
    kw = dict(rank=2, alpha=4, epochs=1, lr=1e-2, batch_size=8, max_steps=3)
    a = train_adapter(tiny_random_bert(seed=0), task, seed=7, **kw)
    b = train_adapter(tiny_random_bert(seed=0), task, seed=7, **kw)
    c = train_adapter(tiny_random_bert(seed=0), task, seed=8, **kw)
    assert a.losses == b.losses and len(a.losses) == 3
    assert a.adapter.digest == b.adapter.digest
    assert a.adapter.digest != c.adapter.digest


def test_global_rng_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_adapter(tiny_random_bert(), synthetic_task(), rank=2, epochs=1, max_steps=2)
    torch.testing.assert_close(torch.rand(3), expected)


def test_head_protocol_trains_a_head_that_travels_in_the_adapter():
    model = tiny_random_bert(seed=0)
    task = synthetic_task()
    result = train_adapter(
        model, task, protocol="head", rank=4, alpha=8, epochs=6, lr=1e-2, head_lr=5e-2, batch_size=8, seed=0,
        validate=split_scorer(task, protocol="head"),
    )
    extras = result.adapter.extra_tensors()
    assert sorted(extras) == ["heads.synthetic.bias", "heads.synthetic.weight"]
    assert extras["heads.synthetic.weight"].shape == (3, model.hidden_size)
    assert _mean(result.losses[-5:]) < 0.5 * _mean(result.losses[:5])
    head_acc = evaluate(result.adapter, task, protocol="head", split="validation", model=model).accuracy
    assert head_acc == result.metrics["validation_accuracy"] > 1 / 3


def test_bad_arguments_are_rejected():
    with pytest.raises(InvalidParameterError, match="protocol"):
        train_adapter(tiny_random_bert(), synthetic_task(), protocol="nope")
    with pytest.raises(InvalidParameterError, match="positive"):
        train_adapter(tiny_random_bert(), synthetic_task(), epochs=0)
    with pytest.raises(InvalidParameterError, match="selects no linear"):
        train_adapter(tiny_random_bert(), synthetic_task(), target_modules=["nothing_here"])
