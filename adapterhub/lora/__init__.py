"""Core LoRA value types and PEFT-format I/O. Knows nothing of SQL, HTTP or base models."""

from adapterhub.lora.adapter import LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, LoraAdapter
from adapterhub.lora.config import CONFIG_NAME, AdapterConfig
from adapterhub.lora.module import LoraModule, lora_scale

__all__ = [
    "CONFIG_NAME",
    "LEGACY_WEIGHTS_NAME",
    "WEIGHTS_NAME",
    "AdapterConfig",
    "LoraAdapter",
    "LoraModule",
    "lora_scale",
]
