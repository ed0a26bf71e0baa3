"""``CausalEngine``: text generation for a batch whose rows use different adapter mixtures.

The engine owns a private copy of the causal LM with every linear layer but ``lm_head`` gathered
(``gathered``), so each decoding step is one base forward pass for all rows, whatever adapters they
use. Prompts are left-padded so that every row's next token sits in the last column; positions are
computed from the attention mask, so a padded row sees the same positions (and, up to float
rounding, the same logits) as the prompt alone. The KV cache keeps each step to one new token.

Sampling uses one ``torch.Generator`` per row, drawn from only for that row, so a row's samples
depend on its seed and its own logits, never on which other rows share the batch.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from adapterhub.errors import InvalidParameterError
from adapterhub.models.causal import CausalLM
from adapterhub.serving.gathered import BatchPlan, Mixture, install_gathered, linear_layers

__all__ = ["CausalEngine", "Generation", "GenerationRow"]


@dataclass(frozen=True)
class GenerationRow:
    """One request's share of a batch.

    Attributes:
        prompt_ids: the prompt's token ids (``CausalLM.prompt_ids``); not empty.
        mixture: ``(adapter, weight)`` pairs; ``[]`` for the bare base model.
        max_tokens: the most tokens to generate (≥ 1).
        temperature: 0 for greedy decoding, else the softmax temperature.
        top_p: nucleus sampling mass in ``(0, 1]`` (1: no filtering).
        seed: the row's sampling seed (None: 0), so a request can be reproduced.
        on_token: called on the engine's thread with each kept token id as soon as it is chosen
            (for streaming); never with the stop token.
    """

    prompt_ids: list[int]
    mixture: Mixture
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    on_token: Callable[[int], None] | None = None


@dataclass(frozen=True)
class Generation:
    """One row's result.

    Attributes:
        token_ids: the generated ids, without the stop token.
        finish_reason: ``"stop"`` (end-of-turn or eos token) or ``"length"`` (``max_tokens`` reached).
        prompt_tokens: the prompt's length (for usage accounting).
    """

    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int


def validate_row(row: GenerationRow) -> None:
    """Reject a row before any work, so one bad request never runs half a batch."""
    if not row.prompt_ids:
        raise InvalidParameterError("the prompt is empty; give at least one token")
    if row.max_tokens < 1:
        raise InvalidParameterError(f"max_tokens must be at least 1, got {row.max_tokens}")
    if row.temperature < 0:
        raise InvalidParameterError(f"temperature must be 0 (greedy) or positive, got {row.temperature}")
    if not 0 < row.top_p <= 1:
        raise InvalidParameterError(f"top_p must be in (0, 1], got {row.top_p}")


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with prompts right-aligned, so each row's last token is the
    last column and the next token of every row is appended in one column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted over real tokens only (pads get 0), as for the unpadded prompt."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` (vocab,) restricted to the smallest set of top tokens whose mass reaches ``top_p``
    (the top token always stays), renormalised."""
    if top_p >= 1:
        return probs
    sorted_probs, order = probs.sort(descending=True)
    before = sorted_probs.cumsum(0) - sorted_probs  # mass of the tokens ranked above each one
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return kept / kept.sum()


def choose(logits: torch.Tensor, row: GenerationRow, generator: torch.Generator) -> int:
    """The next token of one row from its last-position ``logits`` (vocab,)."""
    if row.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / row.temperature, dim=-1)
    return int(torch.multinomial(nucleus(probs, row.top_p), 1, generator=generator))


class _RowState:
    """What one row has produced so far and whether it is done."""

    def __init__(self, row: GenerationRow) -> None:
        self.row = row
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.generator = torch.Generator().manual_seed(0 if row.seed is None else row.seed)

    def take(self, token: int, stop_ids: frozenset[int]) -> None:
        """Record ``token``: a stop token ends the row unkept; any other is kept and streamed."""
        if token in stop_ids:
            self.finish = "stop"
            return
        self.tokens.append(token)
        if self.row.on_token is not None:
            self.row.on_token(token)
        if len(self.tokens) >= self.row.max_tokens:
            self.finish = "length"


def forward_names(model: torch.nn.Module) -> tuple[str, str | None]:
    """The names ``model.forward`` gives the KV cache and the "last logits only" switch: recent
    ``transformers`` renamed ``past_key_values`` to ``cache`` (and older ones lack ``logits_to_keep``,
    which saves the full-vocabulary head over every prompt position)."""
    params = inspect.signature(model.forward).parameters
    cache = "cache" if "cache" in params else "past_key_values"
    keep = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
    return cache, keep


def cache_of(out: object) -> object:
    """The KV cache a forward pass returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class CausalEngine:
    """Generates for ``GenerationRow`` batches, one base forward pass per decoding step.

    Args:
        lm: the loaded causal LM; its model is copied, never changed.

    Attributes:
        lm: the original ``CausalLM`` (tokenizer, ``prompt_ids``, ``decode``).
        model: the private copy with gathered linear layers.
        linears: the copy's linear layers by path (what adapters are checked against).
        dtype: the compute dtype.
    """

    def __init__(self, lm: CausalLM) -> None:
        self.lm = lm
        self.model = copy.deepcopy(lm.model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.slot = install_gathered(self.model)
        self.linears = linear_layers(self.model)
        self.dtype = next(self.model.parameters()).dtype
        self._cache_arg, self._keep_arg = forward_names(self.model)

    @property
    def base_model_id(self) -> str:
        return self.lm.base_model_id

    @property
    def stop_ids(self) -> frozenset[int]:
        """End-of-turn and the tokenizer's eos: either one ends an answer."""
        eos = getattr(self.lm.tokenizer, "eos_token_id", None)
        return frozenset({self.lm.end_id} | ({int(eos)} if eos is not None else set()))

    def generate(self, rows: Sequence[GenerationRow]) -> list[Generation]:
        """Decode every row of ``rows`` as one batch; results in row order.

        Raises:
            InvalidParameterError: an empty prompt, ``max_tokens < 1``, a negative temperature or
                ``top_p`` outside ``(0, 1]`` (checked for all rows before any work).
        """
        for row in rows:
            validate_row(row)
        if not rows:
            return []
        states = [_RowState(r) for r in rows]
        self.slot.plan = BatchPlan.of([r.mixture for r in rows])
        try:
            self._decode(states)
        finally:
            self.slot.plan = None
        return [Generation(s.tokens, s.finish or "length", len(s.row.prompt_ids)) for s in states]

    @torch.no_grad()
    def _decode(self, states: list[_RowState]) -> None:
        """Prefill all prompts in one pass, then one token per step for all rows until all are done."""
        device = next(self.model.parameters()).device
        ids, mask = left_padded([s.row.prompt_ids for s in states], self.lm.pad_id)
        ids, mask = ids.to(device), mask.to(device)
        keep = {self._keep_arg: 1} if self._keep_arg else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True, **keep)
        stop_ids = self.stop_ids
        while True:
            logits = out.logits[:, -1, :]
            step = self._step(states, logits, stop_ids)
            if all(s.finish is not None for s in states):
                return
            mask = torch.cat([mask, mask.new_ones(len(states), 1)], dim=1)
            out = self.model(
                input_ids=step.to(device)[:, None], attention_mask=mask, position_ids=positions(mask)[:, -1:],
                use_cache=True, **{self._cache_arg: cache_of(out)},
            )

    def _step(self, states: list[_RowState], logits: torch.Tensor, stop_ids: frozenset[int]) -> torch.Tensor:
        """Choose each running row's next token; finished rows feed the pad token. Returns the
        ``(batch,)`` ids to feed next."""
        fed = torch.full((len(states),), self.lm.pad_id, dtype=torch.long)
        for i, state in enumerate(states):
            if state.finish is not None:
                continue
            token = choose(logits[i], state.row, state.generator)
            state.take(token, stop_ids)
            fed[i] = token
        return fed
