"""Score, train on and generate answers with a causal LM, in batches.

``choice_logprobs`` is lm-evaluation-harness's multiple-choice scoring (the log-likelihood of
each candidate answer given the prompt; the highest wins), computed without repeating the prompt
per candidate: the prompts of a batch run once with a KV cache, then every (example, candidate)
row runs only its candidate's few tokens against its example's cached prompt. For 8 labels and
~70-token prompts this is ~6x fewer tokens than scoring each ``prompt + candidate`` in full.

Batches are **left-padded**: every prompt ends in the same column, so candidates continue at one
position for all rows. Llama's rotary positions make attention depend only on token distances,
so the shift a pad introduces changes nothing but rounding (the tests check 1e-4 against scoring
each sequence alone). Only the positions whose next token is scored go through the LM head (a
49k-word vocabulary: the head would otherwise cost as much as a third of the model).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from adapterhub.models.causal import CausalLM


def _left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
    return ids, mask


def _right_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def _cache_kwarg(body: torch.nn.Module) -> str:
    """The keyword a decoder takes its KV cache by: ``cache`` in transformers >= 5.2x, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _token_logprobs(lm: CausalLM, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) from hidden states ``(n, d)`` through the LM head, in float32."""
    logits = lm.model.get_output_embeddings()(hidden).float()
    return F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def choice_logprobs(
    lm: CausalLM,
    prompts: Sequence[Sequence[int]],
    choices: Sequence[Sequence[Sequence[int]]],
    *,
    batch_size: int = 16,
) -> list[torch.Tensor]:
    """Summed log-probability of each candidate continuation of each prompt.

    Args:
        lm: the model (in whatever adapters are attached); run in eval mode, no gradients.
        prompts: token ids per example (``CausalLM.prompt_ids``).
        choices: per example, the token ids of each candidate (``CausalLM.answer_ids``); every
            candidate has at least one token.
        batch_size: examples per prompt pass.

    Returns:
        One float32 tensor per example, ``(n_candidates,)``.
    """
    model, body = lm.model, lm.model.get_decoder()
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch_prompts = prompts[start : start + batch_size]
            batch_choices = choices[start : start + batch_size]
            ids, mask = _left_pad(batch_prompts, lm.pad_id)
            first = body(input_ids=ids, attention_mask=mask, use_cache=True)
            cache = getattr(first, "cache", None) or first.past_key_values
            last = first.last_hidden_state[:, -1]
            rows = [(i, c) for i, options in enumerate(batch_choices) for c in options]
            owner = torch.tensor([i for i, _ in rows])
            cont, cont_mask = _right_pad([c for _, c in rows], lm.pad_id)
            cache.reorder_cache(owner)  # one copy of the example's cached prompt per candidate row
            second = body(
                input_ids=cont, attention_mask=torch.cat([mask[owner], cont_mask], dim=1), use_cache=True,
                **{_cache_kwarg(body): cache},
            ).last_hidden_state
            # Token t of a candidate is predicted by the prompt's last state (t = 0) or by the state of token t-1.
            hidden = torch.cat([last[owner].unsqueeze(1), second[:, :-1]], dim=1)
            valid = cont_mask.bool()
            scores = torch.zeros(cont.shape, dtype=torch.float32)
            scores[valid] = _token_logprobs(lm, hidden[valid], cont[valid])
            totals = scores.sum(dim=1)
            k = 0
            for options in batch_choices:
                out.append(totals[k : k + len(options)].clone())
                k += len(options)
    finally:
        model.train(was_training)
    return out


def answer_loss(lm: CausalLM, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens given their prompts (the prompt tokens are not scored).

    Runs in the model's current mode with gradients, so the training loop calls it directly.
    """
    rows = [list(p) + list(a) for p, a in zip(prompts, answers, strict=True)]
    ids, mask = _left_pad(rows, lm.pad_id)
    width = ids.shape[1]
    scored = torch.zeros_like(mask, dtype=torch.bool)  # positions whose *next* token is an answer token
    for i, a in enumerate(answers):
        scored[i, width - len(a) - 1 : width - 1] = True
    hidden = lm.model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = ids[:, 1:][scored[:, :-1]]
    logits = lm.model.get_output_embeddings()(hidden[scored]).float()
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def generate(
    lm: CausalLM, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 8, batch_size: int = 16
) -> list[str]:
    """Greedy continuations of each prompt, decoded, stopped at the end-of-turn token."""
    model = lm.model
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            ids, mask = _left_pad(prompts[start : start + batch_size], lm.pad_id)
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=lm.pad_id, eos_token_id=lm.end_id,
            )
            for row in out[:, ids.shape[1] :].tolist():
                if lm.end_id in row:
                    row = row[: row.index(lm.end_id)]
                texts.append(lm.decode(row))
    finally:
        model.train(was_training)
    return texts
