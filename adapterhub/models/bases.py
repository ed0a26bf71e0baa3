"""The registry of base models the bed knows: how to load each, its kind, its default LoRA targets.

``minilm`` (default) is the sentence encoder ``sentence-transformers/all-MiniLM-L6-v2``: tasks
are scored by similarity to label descriptions (``adapterhub.eval.evaluate``); ``mpnet``
(``sentence-transformers/all-mpnet-base-v2``) is a second, larger encoder scored the same way, the
target Trans-LoRA moves MiniLM adapters to. ``smollm2`` is the causal LM
``HuggingFaceTB/SmolLM2-135M-Instruct``: tasks are asked as instruction prompts and scored by
answer log-likelihood or exact match (``adapterhub.eval.generative``). How a base is
*scored* lives in ``adapterhub.eval`` (a layer above), chosen by ``BaseSpec.kind``; everything the
models layer can know — loading, targets, the PEFT ``task_type`` — is here.

A base is named on the command line by its short name (``--base smollm2``) and recorded on
adapters by its model id; ``get_base`` accepts either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from adapterhub.errors import InvalidParameterError

DEFAULT_BASE = "minilm"


@dataclass(frozen=True)
class BaseSpec:
    """One registered base model.

    Attributes:
        name: the short name (``minilm``, ``smollm2``).
        model_id: recorded as ``base_model_name_or_path`` on its adapters.
        kind: ``"encoder"`` (embeddings, similarity protocol) or ``"causal_lm"`` (prompts).
        target_modules, exclude_modules: the default LoRA layer selection (PEFT style).
        task_type: the PEFT ``task_type`` written in exported configs.
        loader: returns the shared loaded model (a ``BaseModel`` or ``CausalLM``), cached per process.
        summary: one line for ``--help`` and the demo.
    """

    name: str
    model_id: str
    kind: Literal["encoder", "causal_lm"]
    target_modules: tuple[str, ...]
    exclude_modules: tuple[str, ...]
    task_type: str | None
    loader: Callable[[], object]
    summary: str

    def load(self) -> object:
        return self.loader()


def _load_minilm() -> object:
    from adapterhub.models.base import cached_base_model

    return cached_base_model()


def _load_mpnet() -> object:
    from adapterhub.models.mpnet import cached_mpnet

    return cached_mpnet()


def _load_smollm2() -> object:
    from adapterhub.models.causal import cached_smollm2

    return cached_smollm2()


def _registry() -> dict[str, BaseSpec]:
    from adapterhub.models.base import DEFAULT_BASE_MODEL
    from adapterhub.models.causal import LLAMA_TARGET_MODULES, SMOLLM2_ID
    from adapterhub.models.lora_layers import DEFAULT_EXCLUDE_MODULES, DEFAULT_TARGET_MODULES
    from adapterhub.models.mpnet import MPNET_ID, MPNET_TARGET_MODULES

    return {
        "minilm": BaseSpec(
            "minilm", DEFAULT_BASE_MODEL, "encoder", DEFAULT_TARGET_MODULES, DEFAULT_EXCLUDE_MODULES, None,
            _load_minilm, "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 22.7M parameters)",
        ),
        "mpnet": BaseSpec(
            "mpnet", MPNET_ID, "encoder", MPNET_TARGET_MODULES, DEFAULT_EXCLUDE_MODULES, None,
            _load_mpnet, "all-mpnet-base-v2 sentence encoder (MPNet, 12 layers, 109M parameters)",
        ),
        "smollm2": BaseSpec(
            "smollm2", SMOLLM2_ID, "causal_lm", LLAMA_TARGET_MODULES, (), "CAUSAL_LM",
            _load_smollm2, "SmolLM2-135M-Instruct causal LM (Llama, 30 layers, 135M parameters)",
        ),
    }


BASE_NAMES: tuple[str, ...] = ("minilm", "mpnet", "smollm2")


def get_base(name_or_id: str | None = None) -> BaseSpec:
    """The registered base by short name or recorded model id (``None``: the default, MiniLM).

    Raises:
        InvalidParameterError: no registered base has that name or id.
    """
    registry = _registry()
    key = name_or_id or DEFAULT_BASE
    if key in registry:
        return registry[key]
    for spec in registry.values():
        if spec.model_id == key:
            return spec
    raise InvalidParameterError(f"unknown base '{key}'; choose one of {', '.join(registry)}")


def find_base(model_id: str | None) -> BaseSpec | None:
    """The registered base an adapter's recorded ``base_model_name_or_path`` names, if any."""
    try:
        return get_base(model_id) if model_id else None
    except InvalidParameterError:
        return None
