"""Tensor key normalisation between PEFT's file layout and adapterhub's module paths.

PEFT saves ``base_model.model.<path>.lora_A.weight``; other tools keep an adapter name
(``lora_A.default.weight``) or drop the prefix. adapterhub strips all of that to ``<path>`` so
adapters from different tools line up module by module, and writes PEFT's layout back on export.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapterhub.errors import UnsupportedAdapterError

PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<path>.+)\.lora_(?P<which>[AB])(?:\.[A-Za-z0-9_\-]+)?\.weight$")
_UNSUPPORTED = {
    "lora_magnitude_vector": "DoRA (lora_magnitude_vector)",
    "lora_embedding_A": "LoRA on embedding layers",
    "lora_embedding_B": "LoRA on embedding layers",
}


@dataclass(frozen=True)
class ParsedKey:
    """A tensor key split into its normalised module path and role."""

    path: str
    role: str  # "A", "B" or "extra"


def strip_prefix(key: str) -> str:
    return key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key


def parse_key(key: str) -> ParsedKey:
    """Normalise one tensor key from a PEFT-format file.

    Raises:
        UnsupportedAdapterError: the key belongs to a LoRA variant adapterhub cannot merge exactly.
    """
    for marker, what in _UNSUPPORTED.items():
        if f".{marker}" in key or key.startswith(marker):
            raise UnsupportedAdapterError(f"{what} is not supported yet (tensor '{key}')")
    if ".lora_B" in key and key.endswith(".bias"):
        raise UnsupportedAdapterError(f"LoRA with a trained bias is not supported yet (tensor '{key}')")
    match = _LORA_KEY.match(strip_prefix(key))
    if match:
        return ParsedKey(match["path"], match["which"])
    return ParsedKey(strip_prefix(key), "extra")


def lora_key(path: str, which: str) -> str:
    """PEFT's saved key for factor ``which`` ("A"/"B") of module ``path``."""
    return f"{PEFT_PREFIX}{path}.lora_{which}.weight"


def extra_key(path: str) -> str:
    """PEFT's saved key for a passthrough tensor (``modules_to_save``) at normalised ``path``."""
    return f"{PEFT_PREFIX}{path}"


def head_keys(task_name: str) -> tuple[str, str]:
    """The passthrough tensor keys of one task's linear head: ``heads.<task>.weight``, ``heads.<task>.bias``.

    Named here, with the other key conventions, because training writes heads into adapters
    (``models``) and evaluation reads them back (``eval``); keys are per task so that a merge of
    several task adapters can carry every task's head side by side.
    """
    return f"heads.{task_name}.weight", f"heads.{task_name}.bias"
