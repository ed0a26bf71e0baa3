"""CausalEngine: per-row adapter mixtures in one decoding batch, checked against dense HF generation."""

from __future__ import annotations

import pytest
import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.models.causal import LLAMA_TARGET_MODULES, TINY_LLAMA_ID, CausalLM, tiny_random_llama
from adapterhub.models.lora_layers import find_target_linears, lora_attached
from adapterhub.serving import CausalEngine, Generation, GenerationRow, ServedAdapter, served_adapter

QUESTIONS = ["Is a cat an animal?", "hi", "Name the part of speech of 'quickly', please.", "What is cold?"]
MAX_TOKENS = 10


def random_llama_adapter(lm: CausalLM, seed: int, *, rank: int = 4, std: float = 0.3) -> LoraAdapter:
    """Random nonzero A and B on all seven projections of every layer, large enough to change tokens."""
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for path in find_target_linears(lm.model, LLAMA_TARGET_MODULES, None):
        layer = lm.model.get_submodule(path)
        A = torch.randn(rank, layer.in_features, generator=g) * std
        B = torch.randn(layer.out_features, rank, generator=g) * std
        modules[path] = LoraModule(A, B, 2.0)
    return LoraAdapter.from_modules(modules, base_model=TINY_LLAMA_ID, target_modules=list(LLAMA_TARGET_MODULES),
                                    config_overrides={"task_type": "CAUSAL_LM"})


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    return tiny_random_llama(seed=0)


@pytest.fixture(scope="module")
def engine(lm: CausalLM) -> CausalEngine:
    return CausalEngine(lm)


@pytest.fixture(scope="module")
def adapters(lm: CausalLM) -> list[LoraAdapter]:
    return [random_llama_adapter(lm, seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def served(engine: CausalEngine, adapters: list[LoraAdapter]) -> list[ServedAdapter]:
    return [served_adapter(f"a{i}", a, engine.linears, engine.dtype) for i, a in enumerate(adapters)]


def prompt(lm: CausalLM, question: str) -> list[int]:
    return lm.prompt_ids([{"role": "user", "content": question}])


@torch.no_grad()
def dense_reference(lm: CausalLM, ids: list[int], adapters: list[LoraAdapter], weights: list[float]) -> list[int]:
    """HF ``generate`` on the original model with the adapters attached, one unpadded prompt."""
    with lora_attached(lm.model, adapters, weights=weights if adapters else None):
        out = lm.model.generate(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=lm.pad_id, eos_token_id=lm.end_id,
        )[0, len(ids) :].tolist()
    return out[: out.index(lm.end_id)] if lm.end_id in out else out


def mixed_rows(lm: CausalLM, served: list[ServedAdapter]) -> tuple[list[GenerationRow], list[tuple[list[int], list[float]]]]:
    """Four rows of different prompt lengths: base, adapter 0, adapter 1, 0.6/0.4 mixture; and the
    (adapter indices, weights) of each for the reference."""
    specs = [([], []), ([0], [1.0]), ([1], [1.0]), ([0, 1], [0.6, 0.4])]
    rows = [
        GenerationRow(prompt(lm, q), [(served[j], w) for j, w in zip(idx, ws, strict=True)], MAX_TOKENS)
        for q, (idx, ws) in zip(QUESTIONS, specs, strict=True)
    ]
    return rows, specs


def test_greedy_mixed_batch_equals_dense_generation_per_row(lm, engine, adapters, served):
    rows, specs = mixed_rows(lm, served)
    got = engine.generate(rows)
    assert [len(r.prompt_ids) for r in rows] == [g.prompt_tokens for g in got]
    assert len({len(r.prompt_ids) for r in rows}) > 1  # padding is exercised
    for row, gen, (idx, ws) in zip(rows, got, specs, strict=True):
        expected = dense_reference(lm, row.prompt_ids, [adapters[j] for j in idx], ws)
        assert gen.token_ids == expected
        assert gen.finish_reason == ("stop" if len(expected) < MAX_TOKENS else "length")
    # Not trivial: the adapters change what the base says for the same prompt.
    base = engine.generate([GenerationRow(rows[1].prompt_ids, [], MAX_TOKENS)])[0].token_ids
    assert base != got[1].token_ids
    # The engine's copy is served; the original model is untouched by serving.
    assert lm.model.model.layers[0].self_attn.q_proj.__class__.__name__ == "Linear"


def test_rows_alone_equal_the_mixed_batch(lm, engine, served):
    rows, _ = mixed_rows(lm, served)
    together = engine.generate(rows)
    assert [engine.generate([row])[0] for row in rows] == together
    assert engine.slot.plan is None


def sampled(lm: CausalLM, served: list[ServedAdapter], seed: int, **kw) -> GenerationRow:
    return GenerationRow(prompt(lm, "hi"), [(served[0], 1.0)], 12, temperature=1.0, top_p=0.9, seed=seed, **kw)


def test_sampling_is_reproducible_and_independent_of_the_other_rows(lm, engine, served):
    row = sampled(lm, served, seed=7)
    alone = engine.generate([row])[0]
    assert engine.generate([row])[0] == alone
    others = [
        GenerationRow(prompt(lm, QUESTIONS[0]), [], 5, temperature=0.7, seed=7),
        GenerationRow(prompt(lm, QUESTIONS[2]), [(served[1], 0.5), (served[0], 0.5)], 12, temperature=1.3, seed=1),
    ]
    assert engine.generate([others[0], row, others[1]])[1] == alone
    assert engine.generate([sampled(lm, served, seed=8)])[0] != alone  # the seed matters
    # A vanishing nucleus keeps only the top token: sampling becomes greedy.
    narrow = GenerationRow(row.prompt_ids, row.mixture, 12, temperature=1.0, top_p=1e-6, seed=3)
    greedy = GenerationRow(row.prompt_ids, row.mixture, 12)
    assert engine.generate([narrow])[0] == engine.generate([greedy])[0]


def test_finish_reasons_and_early_stop(lm, served, monkeypatch: pytest.MonkeyPatch):
    """A head forced to say 'a', 'b', then end-of-turn: "stop" before max_tokens, "length" at it, and
    decoding ends as soon as every row is done."""
    engine = CausalEngine(lm)
    script = lm.tokenizer("ab", add_special_tokens=False)["input_ids"] + [lm.end_id]
    head = engine.model.get_output_embeddings()
    original = head.forward
    calls = {"n": 0}

    def forced(hidden: torch.Tensor) -> torch.Tensor:
        logits = original(hidden)
        bias = torch.full((logits.shape[-1],), -1e4)
        bias[script[min(calls["n"], len(script) - 1)]] = 1e4
        calls["n"] += 1
        return logits + bias

    monkeypatch.setattr(head, "forward", forced)
    p = prompt(lm, "q")
    got = engine.generate([
        GenerationRow(p, [], 6), GenerationRow(p + p, [(served[0], 1.0)], 2), GenerationRow(p, [], 1),
        GenerationRow(p, [], 6, temperature=0.8, seed=2),
    ])
    assert got == [
        Generation(script[:2], "stop", len(p)), Generation(script[:2], "length", 2 * len(p)),
        Generation(script[:1], "length", len(p)), Generation(script[:2], "stop", len(p)),
    ]
    assert calls["n"] == 3  # prefill + two steps: no decoding after the last row stopped


def test_on_token_streams_exactly_the_generated_ids(lm, engine, served):
    rows, _ = mixed_rows(lm, served)
    streams: list[list[int]] = [[] for _ in rows]
    streaming = [
        GenerationRow(r.prompt_ids, r.mixture, r.max_tokens, on_token=streams[i].append) for i, r in enumerate(rows)
    ]
    got = engine.generate(streaming)
    assert streams == [g.token_ids for g in got]
    assert all(streams)


@pytest.mark.parametrize(
    "change",
    [{"prompt_ids": []}, {"max_tokens": 0}, {"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}],
)
def test_bad_inputs_are_rejected(lm, engine, change):
    good = {"prompt_ids": prompt(lm, "hi"), "mixture": [], "max_tokens": 3}
    bad = GenerationRow(**{**good, **change})
    with pytest.raises(InvalidParameterError):
        engine.generate([GenerationRow(**good), bad])
    assert engine.slot.plan is None


def test_empty_batch(engine):
    assert engine.generate([]) == []
