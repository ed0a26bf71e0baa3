"""Synthetic task inputs from a generator LM prompted with a handful of seed examples.

Trans-LoRA's generator sees a numbered list that starts with the seeds and is cut where the next
example should begin ("Here are 10 examples: 1. … 5. … 6."): a plain completion, no chat turn, so
even a small instruct model continues the list in the seeds' style. Each prompt shuffles the seeds
(a different order per row gives different continuations), samples with temperature and nucleus
sampling, and keeps the first line of the continuation. Lines that are empty, too short, numbered
lists run on, or copies of a seed or of an earlier sample are dropped: a duplicate carries no new
information for the student, and a copy of a seed would leak the seed set into D_syn.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.models.causal import CausalLM

_NUMBERING = re.compile(r"^\s*(\d{1,2}[.)]|[-*•])(\s+|$)")
"""A list marker the model wrote before its text ("7. ", "- "): followed by a space, so that
"3.14 is pi" and "-5 degrees" keep their numbers."""
MIN_CHARS = 4
MAX_CHARS = 400


@dataclass(frozen=True)
class SamplingConfig:
    """How candidates are sampled: ``temperature`` and ``top_p`` as in ``transformers.generate``
    (0.8: at 1.0 SmolLM2-135M drifts into made-up words within a line, which the discriminator then
    has to throw away at the cost of more samples);
    ``max_new_tokens`` bounds one candidate (a WordNet gloss or a chat line is < 40 tokens);
    ``batch_size`` prompts per ``generate`` call."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 40
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and 0 < self.top_p <= 1 and self.max_new_tokens > 0 and self.batch_size > 0):
            raise InvalidParameterError("temperature, max_new_tokens and batch_size must be positive, top_p in (0, 1]")


def seed_prompt(seeds: Sequence[str], description: str, total: int = 10) -> str:
    """The list prompt: a header naming the task, the seeds numbered 1…n, then ``n+1.``."""
    header = f"Here are {total} examples of {description.rstrip('.').lower() or 'task inputs'}, one per line:"
    lines = [f"{i}. {' '.join(s.split())}" for i, s in enumerate(seeds, start=1)]
    return "\n".join([header, *lines, f"{len(seeds) + 1}."])


def clean_candidate(text: str) -> str:
    """The first line of a continuation, without list numbering or surrounding whitespace."""
    line = text.split("\n", 1)[0]
    return _NUMBERING.sub("", line).strip()[:MAX_CHARS]


def _newline_id(lm: CausalLM) -> int | None:
    ids = lm.tokenizer("\n", add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


@torch.no_grad()
def _sample_batch(lm: CausalLM, prompts: Sequence[str], config: SamplingConfig) -> list[str]:
    """One sampled continuation per prompt (left-padded batch, stopped at a newline or end of turn)."""
    from adapterhub.models.lm_scoring import _left_pad

    rows = [lm.tokenizer(p, add_special_tokens=False)["input_ids"][-lm.max_length :] for p in prompts]
    ids, mask = _left_pad(rows, lm.pad_id)
    stop = [lm.end_id] + ([nl] if (nl := _newline_id(lm)) is not None else [])
    out = lm.model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, temperature=config.temperature, top_p=config.top_p,
        top_k=0, max_new_tokens=config.max_new_tokens, pad_token_id=lm.pad_id, eos_token_id=stop,
    )
    return [lm.decode(row) for row in out[:, ids.shape[1] :].tolist()]


def sample_candidates(
    lm: CausalLM,
    seeds: Sequence[str],
    n: int,
    *,
    description: str,
    seed: int = 0,
    config: SamplingConfig | None = None,
    exclude: set[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Up to ``n`` new, distinct candidate inputs, prompted by shuffled seeds.

    Args:
        lm: the generator (its adapters, if any, as attached by the caller).
        seeds: the seed inputs (at least one).
        n: candidates to return; sampling stops after ``4 n`` raw samples even if fewer survive
            cleaning (a generator that only repeats itself must not loop forever).
        description: what the task's inputs are, for the prompt's header.
        seed: fixes the prompt orders and the sampling.
        exclude: texts already held (earlier candidates); updated in place.
        progress: called with the number of raw samples drawn after each batch.

    Raises:
        InvalidParameterError: no seeds, or ``n`` < 1.
    """
    if not seeds:
        raise InvalidParameterError("the seed set is empty; give at least one example input")
    if n < 1:
        raise InvalidParameterError("the number of candidates must be at least 1")
    config = config or SamplingConfig()
    order_rng = random.Random(seed)
    seen = exclude if exclude is not None else set()
    seen.update(" ".join(s.split()).lower() for s in seeds)
    kept: list[str] = []
    drawn = 0
    model = lm.model
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            while len(kept) < n and drawn < 4 * n:
                batch = min(config.batch_size, 4 * n - drawn)
                prompts = [seed_prompt(order_rng.sample(list(seeds), len(seeds)), description) for _ in range(batch)]
                for raw in _sample_batch(lm, prompts, config):
                    text = clean_candidate(raw)
                    key = " ".join(text.split()).lower()
                    if len(text) >= MIN_CHARS and key not in seen and len(kept) < n:
                        seen.add(key)
                        kept.append(text)
                drawn += batch
                if progress is not None:
                    progress(drawn)
    finally:
        model.train(was_training)
    return kept
