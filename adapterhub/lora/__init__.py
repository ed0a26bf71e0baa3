"""Core LoRA value types and PEFT-format I/O. Knows nothing of SQL, HTTP or base models.

Tensor-backed names (``LoraAdapter``, ``LoraModule``) load lazily, so that code which only needs
configs and file names (the catalog commands of the CLI) starts without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapterhub.lora.config import (
    CONFIG_NAME,
    LEGACY_WEIGHTS_NAME,
    README_NAME,
    WEIGHTS_NAME,
    AdapterConfig,
    lora_scale,
)

if TYPE_CHECKING:
    from adapterhub.lora.adapter import LoraAdapter
    from adapterhub.lora.module import LoraModule

__all__ = [
    "CONFIG_NAME",
    "LEGACY_WEIGHTS_NAME",
    "README_NAME",
    "WEIGHTS_NAME",
    "AdapterConfig",
    "LoraAdapter",
    "LoraModule",
    "lora_scale",
]


def __getattr__(name: str) -> Any:
    if name == "LoraAdapter":
        from adapterhub.lora.adapter import LoraAdapter

        return LoraAdapter
    if name == "LoraModule":
        from adapterhub.lora.module import LoraModule

        return LoraModule
    raise AttributeError(f"module 'adapterhub.lora' has no attribute {name!r}")
