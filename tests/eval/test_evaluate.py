"""Evaluation on the tiny random BERT against independent recomputation, and on a shipped adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from adapterhub.errors import IncompatibleAdaptersError, InvalidParameterError
from adapterhub.eval.evaluate import embed_texts, evaluate, fit_head, relative_scores, score
from adapterhub.eval.library import load_library
from adapterhub.lora import LoraAdapter
from adapterhub.models.base import tiny_random_bert
from adapterhub.models.lora_layers import lora_layers
from tests.helpers import random_adapter_for, synthetic_task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def random_adapter(model, seed):
    """Rank-2 random factors on every targeted linear of the tiny BERT, recorded on its base model."""
    return random_adapter_for(model.model, seed, rank=2, std=0.5, scale=1.0, base_model=model.base_model_id)


def test_score_matches_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    preds = [0, 1, 2, 2, 1, 0, 0, 2, 1, 1]
    labels = [0, 1, 1, 2, 1, 2, 0, 2, 0, 1]
    s = score(preds, labels, ["a", "b", "c"])
    assert s["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert s["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert s["per_class"]["b"].support == 4
    assert s["accuracy_stderr"] == pytest.approx((0.7 * 0.3 / 10) ** 0.5)


def test_similarity_protocol_recomputed_by_hand():
    model = tiny_random_bert(seed=0)
    task = synthetic_task()
    adapter = random_adapter(model, 1)
    result = evaluate(adapter, task, model=model)
    # independent path: a dense-merged copy of the model, cosine similarity, argmax
    import copy

    from adapterhub.models.base import BaseModel

    merged = copy.deepcopy(model.model)
    with torch.no_grad():
        for path in adapter.module_paths:
            merged.get_submodule(path).weight += adapter.delta_weight(path)
    ref = BaseModel(merged, model.tokenizer, model.base_model_id, model.max_length)
    t = ref.encode(task.texts("test"))
    lab = ref.encode(task.label_descriptions)
    expected = (t @ lab.T).argmax(dim=1).tolist()
    assert list(result.predictions) == expected
    labels = task.label_ids("test")
    assert result.accuracy == pytest.approx(sum(p == y for p, y in zip(expected, labels)) / len(labels))
    assert result.n == len(labels) and not list(lora_layers(model.model))


def test_mixture_defaults_to_equal_weights_and_per_example_rows_work():
    model = tiny_random_bert(seed=0)
    task = synthetic_task()
    a, b = random_adapter(model, 1), random_adapter(model, 2)
    n = len(task.texts("test"))
    default = evaluate([a, b], task, model=model)
    explicit = evaluate([a, b], task, weights=[0.5, 0.5], model=model)
    rows = evaluate([a, b], task, weights=torch.full((n, 2), 0.5), model=model)
    assert default.predictions == explicit.predictions == rows.predictions
    # one-hot rows reproduce each adapter alone, example by example
    onehot = torch.zeros(n, 2)
    onehot[: n // 2, 0] = 1
    onehot[n // 2 :, 1] = 1
    mixed = evaluate([a, b], task, weights=onehot, model=model).predictions
    alone_a = evaluate(a, task, model=model).predictions
    alone_b = evaluate(b, task, model=model).predictions
    assert mixed == alone_a[: n // 2] + alone_b[n // 2 :]
    with pytest.raises(InvalidParameterError, match="weights must be"):
        evaluate([a, b], task, weights=[1.0], model=model)


def test_head_protocol_uses_the_adapters_head_or_fits_head_only():
    model = tiny_random_bert(seed=0)
    task = synthetic_task()
    base_only = evaluate(None, task, protocol="head", model=model)
    head = fit_head(task, None, model=model)
    same = evaluate(None, task, protocol="head", model=model, head=head)
    assert base_only.predictions == same.predictions
    # a head carried in the adapter's passthrough tensors is found and used
    adapter = random_adapter(model, 1)
    carried = LoraAdapter.from_modules(
        dict(adapter.modules()), base_model=model.base_model_id, extra_tensors=fit_head(task, adapter, model=model)
    )
    with_head = evaluate(carried, task, protocol="head", model=model)
    feats = embed_texts(task.texts("test"), adapter, model=model)
    w, bias = carried.extra_tensors()["heads.synthetic.weight"], carried.extra_tensors()["heads.synthetic.bias"]
    assert list(with_head.predictions) == (feats @ w.T + bias).argmax(1).tolist()
    with pytest.raises(InvalidParameterError, match="no adapter carries a head"):
        evaluate(adapter, task, protocol="head", model=model)


def test_adapter_for_another_base_model_is_refused():
    model = tiny_random_bert(seed=0)
    other = LoraAdapter.from_modules(dict(random_adapter(model, 1).modules()), base_model="someone/else")
    with pytest.raises(IncompatibleAdaptersError, match="someone/else"):
        evaluate(other, synthetic_task(), model=model)


def _shipped():
    return sorted(p for p in EXAMPLES.glob("*/adapterhub_meta.json"))


def test_library_is_shipped_and_every_kept_adapter_beats_zero_shot():
    library = load_library()
    summary = json.loads((EXAMPLES / "library.json").read_text())["tasks"]
    assert len(library) >= 6
    assert sorted(library) == sorted(name for name, row in summary.items() if row["kept"])
    for task, (adapter, meta) in library.items():
        test = meta["metrics"]["test"]
        assert test["adapter"]["accuracy"] >= test["zero_shot"]["accuracy"] + 0.10, task
        assert adapter.base_model == "sentence-transformers/all-MiniLM-L6-v2"
        assert adapter.ranks() == dict.fromkeys(adapter.module_paths, 8) and len(adapter.module_paths) == 36
        assert adapter.extra_tensor_names == [f"heads.{task}.bias", f"heads.{task}.weight"]


@pytest.mark.slow
def test_shipped_adapter_reproduces_its_recorded_accuracy():
    """Real MiniLM, real task: the recorded test accuracies come back."""
    meta_path = min(_shipped(), key=lambda p: json.loads(p.read_text())["counts"]["test"])
    meta = json.loads(meta_path.read_text())
    adapter = LoraAdapter.load(meta_path.parent)
    result = evaluate(adapter, meta["task"])
    # Recorded with 1 thread; another thread count may reorder float sums and flip a near-tie,
    # so allow one example of difference (the records are rounded to 4 decimals).
    one = 1.0 / result.n + 1e-4
    assert result.accuracy == pytest.approx(meta["metrics"]["test"]["adapter"]["accuracy"], abs=one)
    zero = evaluate(None, meta["task"])
    assert zero.accuracy == pytest.approx(meta["metrics"]["test"]["zero_shot"]["accuracy"], abs=one)
    assert result.accuracy >= zero.accuracy + 0.10
    head = evaluate(adapter, meta["task"], protocol="head")
    assert head.accuracy == pytest.approx(meta["metrics"]["test"]["adapter_head"]["accuracy"], abs=one)


@pytest.mark.slow
def test_shipped_adapter_loads_in_peft_with_the_same_embeddings():
    import copy

    from peft import PeftModel

    from adapterhub.models.base import cached_base_model, mean_pool

    base = cached_base_model()
    folder = _shipped()[0].parent
    texts = ["a large fish of warm seas", "to speak in a loud voice"]
    ours = embed_texts(texts, LoraAdapter.load(folder))
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(folder)).eval()
    batch = base.tokenize(texts)
    with torch.no_grad():
        theirs = mean_pool(peft_model(**batch).last_hidden_state, batch["attention_mask"])
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    assert (ours - embed_texts(texts, None)).abs().max() > 1e-3


def test_relative_scores():
    r = relative_scores(0.8, own=0.9, baseline=0.5)
    assert r["normalised_accuracy"] == pytest.approx(0.8 / 0.9)
    assert r["retained_gain"] == pytest.approx(0.75)
    assert math.isnan(relative_scores(0.5, own=0.5, baseline=0.5)["retained_gain"])
