"""``EncoderEngine``: sentence embeddings of a batch whose rows use different adapter mixtures.

The engine owns a private copy of the encoder (MiniLM, MPNet) with every linear layer gathered
(``gathered``), so one forward pass serves rows on the bare base, on single adapters and on
mixtures at once. Tokenisation and pooling are the models layer's (``BaseModel.tokenize`` and
``mean_pool``), so an embedding served here equals ``BaseModel.encode`` with the same adapter
attached (the tests check 1e-5).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Sequence

import torch

from adapterhub.models.base import BaseModel, mean_pool
from adapterhub.serving.gathered import BatchPlan, Mixture, install_gathered, linear_layers

__all__ = ["EncoderEngine"]


class EncoderEngine:
    """Embeds ``(text, mixture)`` rows with one base forward pass per call.

    Args:
        base: the loaded encoder; it is copied, never changed.

    Attributes:
        linears: the copy's linear layers by path (what adapters are checked against).
        dtype: the compute dtype.
    """

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.model = copy.deepcopy(base.model).eval()
        # A fast tokenizer keeps its padding/truncation settings in mutable state: calls from two
        # threads with different settings corrupt each other. The batch thread and the request
        # threads (token counts) each get their own copy, and neither touches the shared one.
        self._batch_base = dataclasses.replace(base, model=self.model, tokenizer=copy.deepcopy(base.tokenizer))
        self._count_tokenizer = copy.deepcopy(base.tokenizer)
        self._count_lock = threading.Lock()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.slot = install_gathered(self.model)
        self.linears = linear_layers(self.model)
        self.dtype = next(self.model.parameters()).dtype

    @property
    def max_length(self) -> int:
        return self.base.max_length

    @property
    def base_model_id(self) -> str:
        return self.base.base_model_id

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with special tokens, before truncation (for the input length limit)."""
        with self._count_lock:
            ids = self._count_tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    @torch.no_grad()
    def embed(self, texts: Sequence[str], mixtures: Sequence[Mixture]) -> torch.Tensor:
        """Unit-norm embeddings ``(len(texts), hidden)``, row ``i`` under ``mixtures[i]``."""
        if len(texts) != len(mixtures):
            raise ValueError(f"{len(texts)} texts but {len(mixtures)} mixtures")
        batch = self._batch_base.tokenize(texts)
        self.slot.plan = BatchPlan.of(mixtures)
        try:
            out = self.model(**batch)
        finally:
            self.slot.plan = None
        return mean_pool(out.last_hidden_state, batch["attention_mask"]).float()
