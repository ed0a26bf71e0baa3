"""The causal-LM path against independent references: plain forward passes, hand-written
cross-entropy and ``model.generate`` on each prompt alone; training and evaluation on the tiny
random Llama (float32, a char tokenizer, milliseconds per pass)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adapterhub.errors import IncompatibleAdaptersError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.models.causal import LLAMA_TARGET_MODULES, SMOLLM2_ID, TINY_LLAMA_ID, CausalLM, tiny_random_llama
from adapterhub.models.lm_scoring import answer_loss, choice_logprobs, generate
from adapterhub.models.lora_layers import find_target_linears, lora_attached, lora_layers
from adapterhub.models.train_causal import train_causal_adapter
from adapterhub.tasks import answer_matches, resolve_task

QUESTIONS = [
    "Is a cat an animal?",
    "hi",
    "Name the part of speech of the word 'quickly', please.",
    "x",
    "What is the opposite of cold?",
]
CANDIDATES = [["yes", "no", "maybe not"], ["a"], ["noun", "verb", "adjective", "adverb"], ["z", "zz"], ["hot", "warm"]]


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    return tiny_random_llama(seed=0)


def random_llama_adapter(lm: CausalLM, seed: int, *, rank: int = 4, base_model: str | None = TINY_LLAMA_ID,
                         std: float = 0.3) -> LoraAdapter:
    """Random nonzero A and B on all seven projections of every layer (so a wrong scale or a missing
    module changes the outputs)."""
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for path in find_target_linears(lm.model, LLAMA_TARGET_MODULES, None):
        layer = lm.model.get_submodule(path)
        A = torch.randn(rank, layer.in_features, generator=g) * std
        B = torch.randn(layer.out_features, rank, generator=g) * std
        modules[path] = LoraModule(A, B, 2.0)
    return LoraAdapter.from_modules(modules, base_model=base_model, target_modules=list(LLAMA_TARGET_MODULES),
                                    config_overrides={"task_type": "CAUSAL_LM"})


def prompts_of(lm: CausalLM, questions=QUESTIONS) -> list[list[int]]:
    return [lm.prompt_ids([{"role": "user", "content": q}]) for q in questions]


@torch.no_grad()
def reference_logprob(lm: CausalLM, prompt: list[int], candidate: list[int]) -> float:
    """``prompt + candidate`` alone (no padding, no cache): Σ log p(candidate token | everything before)."""
    ids = torch.tensor([prompt + candidate])
    logits = lm.model(input_ids=ids).logits[0].float()
    logp = F.log_softmax(logits[len(prompt) - 1 : len(prompt) + len(candidate) - 1], dim=-1)
    return float(logp.gather(-1, torch.tensor(candidate).unsqueeze(-1)).sum())


def check_choice_logprobs(lm: CausalLM) -> list[torch.Tensor]:
    prompts = prompts_of(lm)
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths: left padding is exercised
    choices = [[lm.answer_ids(c) for c in cands] for cands in CANDIDATES]
    got = choice_logprobs(lm, prompts, choices, batch_size=2)  # 3 batches, the last one of a single prompt
    assert [tuple(s.shape) for s in got] == [(len(c),) for c in CANDIDATES]
    for p, options, scores in zip(prompts, choices, got, strict=True):
        assert scores.dtype == torch.float32
        expected = torch.tensor([reference_logprob(lm, p, c) for c in options])
        torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)
    return got


def test_choice_logprobs_equal_scoring_each_sequence_alone(lm: CausalLM):
    check_choice_logprobs(lm)
    # candidates of different lengths in one batch: an answer is not rewarded for being a prefix
    p = prompts_of(lm, ["q"])
    short, longer = lm.answer_ids("ab"), lm.answer_ids("abc")
    s = choice_logprobs(lm, p, [[short, longer]], batch_size=1)[0]
    torch.testing.assert_close(s, torch.tensor([reference_logprob(lm, p[0], short),
                                                reference_logprob(lm, p[0], longer)]), rtol=0, atol=1e-4)


def test_choice_logprobs_with_an_adapter_attached(lm: CausalLM):
    plain = check_choice_logprobs(lm)
    adapter = random_llama_adapter(lm, seed=5)
    with lora_attached(lm.model, [adapter]):
        adapted = check_choice_logprobs(lm)
    assert not list(lora_layers(lm.model))  # restored
    assert any(not torch.allclose(a, b, atol=1e-2) for a, b in zip(plain, adapted))  # the adapter mattered


def test_choice_logprobs_keeps_training_mode(lm: CausalLM):
    lm.model.train()
    try:
        choice_logprobs(lm, prompts_of(lm)[:2], [[lm.answer_ids("a")]] * 2)
        assert lm.model.training
    finally:
        lm.model.eval()


def test_answer_loss_is_cross_entropy_over_answer_tokens_only(lm: CausalLM):
    prompts = prompts_of(lm)[:4]
    answers = [lm.answer_ids(a) for a in ["yes", "a much longer answer", "b", "noun"]]
    with torch.no_grad():
        got = answer_loss(lm, prompts, answers)
        logits, targets = [], []
        for p, a in zip(prompts, answers):
            out = lm.model(input_ids=torch.tensor([p + a])).logits[0].float()
            logits.append(out[len(p) - 1 : len(p) + len(a) - 1])  # the positions predicting each answer token
            targets.append(torch.tensor(a))
        all_logits, all_targets = torch.cat(logits), torch.cat(targets)
        # by hand: mean over every answer token (pooled over rows) of -log softmax at the target
        nll = -F.log_softmax(all_logits, dim=-1).gather(-1, all_targets.unsqueeze(-1)).squeeze(-1)
        expected = nll.mean()
    assert all_targets.numel() == sum(len(a) for a in answers)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the prompt tokens are not scored: changing the answer changes the loss, the prompt's own likelihood does not enter
    with torch.no_grad():
        single = answer_loss(lm, prompts[:1], answers[:1])
    torch.testing.assert_close(single, nll[: len(answers[0])].mean(), rtol=0, atol=1e-5)


def test_answer_loss_has_gradients_for_lora(lm: CausalLM):
    adapter = random_llama_adapter(lm, seed=6)
    with lora_attached(lm.model, [adapter]):
        params = [p for _, layer in lora_layers(lm.model) for p in layer.lora_B]
        for p in params:
            p.requires_grad_(True)
        loss = answer_loss(lm, prompts_of(lm)[:2], [lm.answer_ids("yes"), lm.answer_ids("no")])
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_generate_equals_model_generate_on_each_prompt_alone(lm: CausalLM):
    prompts = prompts_of(lm)
    got = generate(lm, prompts, max_new_tokens=12, batch_size=2)
    assert len(got) == len(prompts)
    for p, text in zip(prompts, got, strict=True):
        with torch.no_grad():
            out = lm.model.generate(
                input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                max_new_tokens=12, do_sample=False, pad_token_id=lm.pad_id, eos_token_id=lm.end_id,
            )[0, len(p) :].tolist()
        if lm.end_id in out:
            out = out[: out.index(lm.end_id)]
        assert text == lm.decode(out)


def test_generate_cuts_at_the_end_token(monkeypatch: pytest.MonkeyPatch):
    """A model that always says 'ab<|im_end|>...' (via a forced distribution) yields 'ab'."""
    lm = tiny_random_llama(seed=1)
    script = lm.tokenizer("ab", add_special_tokens=False)["input_ids"] + [lm.end_id, lm.end_id]
    head = lm.model.get_output_embeddings()
    original = head.forward
    calls = {"n": 0}

    def forced(hidden: torch.Tensor) -> torch.Tensor:
        logits = original(hidden)
        step = min(calls["n"], len(script) - 1)
        calls["n"] += 1
        bias = torch.full((logits.shape[-1],), -1e4)
        bias[script[step]] = 1e4
        return logits + bias

    monkeypatch.setattr(head, "forward", forced)
    assert generate(lm, prompts_of(lm, ["q", "a longer question"]), max_new_tokens=6, batch_size=2) == ["ab", "ab"]


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(lm: CausalLM):
    return train_causal_adapter(lm, "wn_pos", max_examples=32, epochs=4, batch_size=8, lr=1e-2, rank=8, alpha=16,
                                seed=0)


def test_training_lowers_the_loss_and_records_a_causal_lm_adapter(lm: CausalLM, trained):
    losses = trained.losses
    assert len(losses) == 16 and trained.metrics["steps"] == 16
    assert all(torch.isfinite(torch.tensor(losses)))
    # a random 32-wide model starts at ~log(vocab) = 4.36 nats and learns slowly: 16 steps take ~0.5 nat off
    tail = sum(losses[-4:]) / 4
    assert tail < losses[0] - 0.4, losses
    assert losses[-1] < losses[len(losses) // 2] < losses[0], losses
    adapter = trained.adapter
    assert adapter.config.raw["task_type"] == "CAUSAL_LM"
    assert adapter.base_model == TINY_LLAMA_ID
    assert sorted(adapter.config.target_modules) == sorted(LLAMA_TARGET_MODULES)
    assert sorted(adapter.module_paths) == sorted(find_target_linears(lm.model, LLAMA_TARGET_MODULES, None))
    assert len(adapter.module_paths) == 2 * 7
    assert {p.rsplit(".", 1)[-1] for p in adapter.module_paths} == set(LLAMA_TARGET_MODULES)
    assert all(adapter.module(p).B.abs().sum() > 0 for p in adapter.module_paths)  # every module trained
    assert not list(lora_layers(lm.model))  # the model is restored
    assert trained.params["protocol"] == "generative" and trained.params["task"] == "wn_pos"


def test_training_is_deterministic_for_a_seed(lm: CausalLM, trained):
    again = train_causal_adapter(lm, "wn_pos", max_examples=32, epochs=4, batch_size=8, lr=1e-2, rank=8, alpha=16,
                                 seed=0)
    assert again.losses == trained.losses
    for path in trained.adapter.module_paths:
        a, b = trained.adapter.module(path), again.adapter.module(path)
        assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B), path


def test_seeds_give_independent_initial_A(lm: CausalLM):
    def initial(seed: int) -> LoraAdapter:  # one step at a negligible lr: A is (to 1e-8) its init
        return train_causal_adapter(lm, "wn_pos", max_examples=8, max_steps=1, lr=1e-10, rank=4, seed=seed).adapter

    a0, a0_again, a1 = initial(0), initial(0), initial(1)
    for path in a0.module_paths:
        A0, A1 = a0.module(path).A, a1.module(path).A
        assert torch.equal(A0, a0_again.module(path).A)
        bound = 1 / lm.model.get_submodule(path).in_features ** 0.5  # PEFT's kaiming_uniform(a=sqrt 5)
        assert A0.abs().max() <= bound + 1e-6 and A1.abs().max() <= bound + 1e-6
        assert not torch.allclose(A0, A1, atol=1e-3), path
        corr = torch.corrcoef(torch.stack([A0.flatten(), A1.flatten()]))[0, 1]
        assert abs(corr) < 0.5, path
    # modules of one adapter do not share their draws either
    q0, k0 = a0.module("model.layers.0.self_attn.q_proj").A, a0.module("model.layers.1.self_attn.q_proj").A
    assert not torch.allclose(q0, k0, atol=1e-3)


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_lm_zero_shot_and_adapter(lm: CausalLM, trained):
    from adapterhub.eval.generative import evaluate_lm

    zero = evaluate_lm(None, "wn_pos", lm, limit=6, batch_size=4)
    assert zero.n == 6 and 0.0 <= zero.accuracy <= 1.0
    assert zero.protocol == "generative" and len(zero.predictions) == 6
    assert all(p in range(4) for p in zero.predictions)
    adapted = evaluate_lm(trained.adapter, "wn_pos", lm, limit=6, batch_size=4)
    assert adapted.n == 6 and 0.0 <= adapted.accuracy <= 1.0
    assert not list(lora_layers(lm.model))
    shots = evaluate_lm(None, "wn_pos", lm, limit=3, shots=2)
    assert shots.n == 3 and shots.protocol == "generative-2shot"


def test_evaluate_lm_generation_task_scores_exact_matches(lm: CausalLM, monkeypatch: pytest.MonkeyPatch):
    import adapterhub.eval.generative as generative
    from adapterhub.eval.generative import evaluate_lm, subset_indices

    real = evaluate_lm(None, "wn_antonym", lm, limit=4, batch_size=4)
    assert real.n == 4 and 0.0 <= real.accuracy <= 1.0 and set(real.predictions) <= {0, 1}
    assert real.macro_f1 == real.accuracy

    # a model that answers right on even positions: exact-match hits follow
    task = resolve_task("wn_antonym")
    picked = [task.split("test")[i] for i in subset_indices(len(task.split("test")), 4, "wn_antonym:test")]

    def scripted(lm_, prompts, *, max_new_tokens=8, batch_size=16):
        assert len(prompts) == 4
        return [f"{e.answers[0]}\nmore" if i % 2 == 0 else "zzzz" for i, e in enumerate(picked)]

    monkeypatch.setattr(generative, "generate", scripted)
    res = evaluate_lm(None, "wn_antonym", lm, limit=4)
    assert res.predictions == (1, 0, 1, 0)
    assert res.accuracy == 0.5 and res.n == 4
    assert answer_matches(f"{picked[0].answers[0]}\nmore", picked[0].answers)


def test_evaluate_lm_rejects_adapters_of_another_base(lm: CausalLM):
    from adapterhub.eval.generative import evaluate_lm

    foreign = random_llama_adapter(lm, seed=7, base_model=SMOLLM2_ID)
    with pytest.raises(IncompatibleAdaptersError):
        evaluate_lm(foreign, "wn_pos", lm, limit=2)
    with pytest.raises(IncompatibleAdaptersError):
        evaluate_lm([random_llama_adapter(lm, seed=8), foreign], "wn_pos", lm, limit=2)
    assert not list(lora_layers(lm.model))
