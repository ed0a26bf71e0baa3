"""Base models (transformers), LoRA injection and mixtures, and the training loop.

``adapterhub.models.train`` is imported on its own (``from adapterhub.models.train import
train_adapter``). This package reads tasks from ``adapterhub.tasks`` and never imports
``adapterhub.eval``, which builds on it: training takes its validation scoring as a callback.
"""

from adapterhub.models.base import (
    DEFAULT_BASE_MODEL,
    BaseModel,
    BaseModelNotFoundError,
    cached_base_model,
    load_base_model,
    mean_pool,
    tiny_random_bert,
)
from adapterhub.models.lora_layers import (
    DEFAULT_EXCLUDE_MODULES,
    DEFAULT_TARGET_MODULES,
    LoraLinear,
    attach_adapters,
    extract_adapter,
    inject_lora,
    lora_attached,
    num_adapters,
    remove_lora,
    restore_on_exit,
    set_mixture_weights,
)

__all__ = [
    "DEFAULT_BASE_MODEL",
    "DEFAULT_EXCLUDE_MODULES",
    "DEFAULT_TARGET_MODULES",
    "BaseModel",
    "BaseModelNotFoundError",
    "LoraLinear",
    "attach_adapters",
    "cached_base_model",
    "extract_adapter",
    "inject_lora",
    "load_base_model",
    "lora_attached",
    "mean_pool",
    "num_adapters",
    "remove_lora",
    "restore_on_exit",
    "set_mixture_weights",
    "tiny_random_bert",
]
