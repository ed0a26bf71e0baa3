"""Prototype router: prototypes, cosine top-k routing, per-adapter state and refusals (synthetic, fast)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from adapterhub.errors import InvalidParameterError
from adapterhub.models.base import tiny_random_bert
from adapterhub.route.prototype import (
    EXAMPLES_FILE,
    MAX_EXAMPLES,
    PrototypeRouter,
    embed_examples,
    parse_examples,
    read_examples,
)


def _protos(n: int = 4, d: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"ns/a{i}": F.normalize(torch.randn(d, generator=g), dim=0) for i in range(n)}


def test_weights_are_a_mixture_and_top1_is_the_nearest_prototype() -> None:
    protos = _protos()
    router = PrototypeRouter(protos)
    queries = torch.stack([protos["ns/a2"] + 0.01, protos["ns/a0"] * 3.0])  # scale must not matter
    w1 = router.route(queries, top_k=1)
    assert w1.shape == (2, 4)
    assert w1.argmax(dim=1).tolist() == [2, 0]
    assert torch.equal(w1.sum(dim=1), torch.ones(2))
    w3 = router.route(queries, top_k=3, temperature=0.1)
    assert torch.allclose(w3.sum(dim=1), torch.ones(2))
    assert ((w3 > 0).sum(dim=1) == 3).all()
    assert w3.argmax(dim=1).tolist() == [2, 0]


def test_adding_or_removing_an_adapter_leaves_the_others_untouched() -> None:
    protos = _protos()
    router = PrototypeRouter(protos)
    before = {k: v.clone() for k, v in router.prototypes.items()}
    router.add("ns/new", torch.ones(8))
    router.remove("ns/a1")
    after = router.prototypes
    assert set(after) == {"ns/a0", "ns/a2", "ns/a3", "ns/new"}
    for name in ("ns/a0", "ns/a2", "ns/a3"):
        assert torch.equal(after[name], before[name])
    assert router.names[-1] == "ns/new"
    assert router.route(torch.ones(1, 8), top_k=1)[0, -1] == 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.route(torch.ones(1, 8), top_k=0), "top_k"),
        (lambda r: r.route(torch.ones(1, 8), top_k=1, temperature=0.0), "temperature"),
        (lambda r: r.route(torch.ones(1, 5)), "n_queries"),
        (lambda r: r.route(torch.full((1, 8), float("nan"))), "NaN"),
        (lambda r: r.add("ns/x", torch.ones(5)), "width"),
        (lambda r: r.add("ns/x", torch.zeros(8)), "non-zero"),
        (lambda r: r.remove("ns/missing"), "no adapter"),
        (lambda r: PrototypeRouter().route(torch.ones(1, 8)), "empty"),
    ],
)
def test_bad_input_is_refused(call, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        call(PrototypeRouter(_protos()))


def test_examples_file_format(tmp_path) -> None:
    path = tmp_path / EXAMPLES_FILE
    path.write_text(json.dumps({"text": "a gloss"}) + "\n\n" + json.dumps({"text": "b", "label": 3}) + "\n")
    assert read_examples(path) == ["a gloss", "b"]
    with pytest.raises(InvalidParameterError, match="line 1"):
        parse_examples(b"not json")
    with pytest.raises(InvalidParameterError, match="string"):
        parse_examples(b'{"txt": "x"}')
    with pytest.raises(InvalidParameterError, match="at most"):
        parse_examples((json.dumps({"text": "x"}) + "\n").encode() * (MAX_EXAMPLES + 1))
    with pytest.raises(InvalidParameterError, match="at least one"):
        parse_examples(b"")
    with pytest.raises(InvalidParameterError, match="UTF-8"):
        parse_examples(b"\xff\xfe")


def test_embed_examples_is_the_renormalised_mean_of_unit_embeddings() -> None:
    model = tiny_random_bert()
    texts = ["a dog", "the cat sat", "birds fly"]
    proto = embed_examples(model, texts)
    expected = F.normalize(model.encode(texts).mean(dim=0), dim=0)
    assert proto.shape == (model.hidden_size,)
    assert torch.allclose(proto, expected, atol=1e-6)
    assert torch.allclose(proto.norm(), torch.tensor(1.0))


def test_shipped_examples_files_are_train_texts() -> None:
    from adapterhub.eval.library import library_dir
    from adapterhub.tasks import load_task

    folders = [p.parent for p in library_dir().glob("*/adapterhub_meta.json")]
    assert folders
    for folder in folders:
        task = json.loads((folder / "adapterhub_meta.json").read_text())["task"]
        texts = read_examples(folder / EXAMPLES_FILE)
        assert len(texts) == MAX_EXAMPLES
        assert set(texts) <= set(load_task(task).texts("train"))
