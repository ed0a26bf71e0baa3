"""``AdapterConfig``: a PEFT ``adapter_config.json`` with the few fields adapterhub interprets.

The raw dict is kept whole and written back as it came, so keys adapterhub does not know (new PEFT
options, a tool's own fields) survive an import/export round trip instead of being dropped.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapterhub.errors import InvalidAdapterError, UnsupportedAdapterError
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"
README_NAME = "README.md"  # the model card a hub repo carries beside the adapter files
MAX_JSON_DEPTH = 64  # real PEFT configs nest 3 deep; 50k-deep ``[[[…`` must be refused, not crash a parser
MAX_CONFIG_BYTES = 4 << 20  # a per-layer rank_pattern of a 70B model is ~40 KB


def json_depth(value: Any, *, stop_after: int | None = None) -> int:
    """How deeply lists and objects nest in ``value`` (0 for a scalar), without recursion.

    Args:
        value: parsed JSON (or YAML) data.
        stop_after: return as soon as the depth is known to exceed this (cheap refusals).
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if stop_after is not None and deepest > stop_after:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


class JsonNestingError(ValueError):
    """JSON nested deeper than the caller allows."""


def loads_json_bounded(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for untrusted input: nesting deeper than ``max_depth`` is a ``ValueError``.

    Why: ``json.loads`` of 50,000 nested brackets raises ``RecursionError`` (a crash, a 500 on the
    server), and a few hundred levels parse but break later code that recurses (``deepcopy``,
    ``json.dumps``). Both become one clear ``ValueError`` here (``JSONDecodeError`` is one too).
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonNestingError(f"JSON nested deeper than {max_depth} levels") from None
    if json_depth(value, stop_after=max_depth) > max_depth:
        raise JsonNestingError(f"JSON nested deeper than {max_depth} levels")
    return value


def lora_scale(rank: int, alpha: float, *, use_rslora: bool = False) -> float:
    """PEFT's scaling: ``alpha / r``, or ``alpha / sqrt(r)`` for rsLoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def match_pattern_key(pattern_keys: list[str], module_path: str) -> str | None:
    """The first ``rank_pattern``/``alpha_pattern`` key that matches ``module_path``, as PEFT matches.

    PEFT treats each key as a regex that must match a dotted suffix of the module path
    (``(.*\\.)?(key)$``), so ``"query"`` matches every ``...query`` layer and a full path matches one.
    """
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", module_path):
            return key
    return None


def _selects(pattern: str | list[str], module_path: str) -> bool:
    """PEFT's module selection: a string is a regex that must match the whole path, a list holds
    names that must equal the path or a dotted suffix of it."""
    if isinstance(pattern, str):
        return re.fullmatch(pattern, module_path) is not None
    return any(module_path == t or module_path.endswith("." + t) for t in pattern)


def targets_module(
    target_modules: str | list[str] | None, module_path: str, exclude_modules: str | list[str] | None = None
) -> bool:
    """Whether PEFT's ``target_modules`` (minus ``exclude_modules``) selects ``module_path``."""
    if exclude_modules and _selects(exclude_modules, module_path):
        return False
    if target_modules is None or target_modules == "all-linear":
        return True
    return _selects(target_modules, module_path)


class AdapterConfig:
    """A validated PEFT LoRA config.

    Args:
        raw: the parsed ``adapter_config.json``; copied, never mutated.

    Raises:
        UnsupportedAdapterError: a non-LoRA ``peft_type`` or a LoRA variant adapterhub cannot merge
            exactly yet (DoRA, LoRA bias, embeddings are detected at tensor level).
        InvalidAdapterError: missing or mistyped ``r`` / ``lora_alpha``.
    """

    def __init__(self, raw: Mapping[str, Any]) -> None:
        if json_depth(raw, stop_after=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:  # before deepcopy recurses into it
            raise InvalidAdapterError(f"adapter_config.json: nested deeper than {MAX_JSON_DEPTH} levels")
        self.raw: dict[str, Any] = copy.deepcopy(dict(raw))
        peft_type = str(self.raw.get("peft_type", "")).upper()
        if peft_type != "LORA":
            raise UnsupportedAdapterError(
                f"peft_type is {self.raw.get('peft_type')!r}; adapterhub handles LoRA adapters only (peft_type 'LORA')"
            )
        if self.raw.get("use_dora"):
            raise UnsupportedAdapterError(
                "DoRA adapters (use_dora: true) are not supported yet: their magnitude vector makes the "
                "update non-linear in B@A, so merging them as plain LoRA would be wrong"
            )
        if self.raw.get("lora_bias"):
            raise UnsupportedAdapterError("LoRA with a trained bias (lora_bias: true) is not supported yet")
        for key in ("r", "lora_alpha"):
            value = self.raw.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise InvalidAdapterError(f"adapter_config.json: '{key}' must be a positive number, got {value!r}")
        for key in ("rank_pattern", "alpha_pattern"):
            value = self.raw.get(key) or {}
            if not isinstance(value, dict):
                raise InvalidAdapterError(f"adapter_config.json: '{key}' must be an object, got {type(value).__name__}")

    @classmethod
    def load(cls, path: str | Path) -> "AdapterConfig":
        """Read ``adapter_config.json`` (or a folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise InvalidAdapterError(f"no {CONFIG_NAME} found; is this a PEFT adapter folder?", path=str(path.parent))
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InvalidAdapterError(f"{CONFIG_NAME} is larger than {MAX_CONFIG_BYTES} bytes", path=str(path))
        try:
            raw = loads_json_bounded(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise InvalidAdapterError(f"{CONFIG_NAME} is not valid JSON ({e})", path=str(path)) from e
        if not isinstance(raw, dict):
            raise InvalidAdapterError(f"{CONFIG_NAME} must hold a JSON object", path=str(path))
        return cls(raw)

    @property
    def base_model(self) -> str | None:
        return self.raw.get("base_model_name_or_path") or None

    @property
    def r(self) -> int:
        return int(self.raw["r"])

    @property
    def lora_alpha(self) -> float:
        return float(self.raw["lora_alpha"])

    @property
    def rank_pattern(self) -> dict[str, int]:
        return dict(self.raw.get("rank_pattern") or {})

    @property
    def alpha_pattern(self) -> dict[str, float]:
        return dict(self.raw.get("alpha_pattern") or {})

    @property
    def use_rslora(self) -> bool:
        return bool(self.raw.get("use_rslora", False))

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.raw.get("fan_in_fan_out", False))

    @property
    def target_modules(self) -> str | list[str] | None:
        value = self.raw.get("target_modules")
        return sorted(value) if isinstance(value, (list, tuple, set)) else value

    @property
    def exclude_modules(self) -> str | list[str] | None:
        value = self.raw.get("exclude_modules")
        return sorted(value) if isinstance(value, (list, tuple, set)) else value

    @property
    def modules_to_save(self) -> list[str]:
        return list(self.raw.get("modules_to_save") or [])

    def rank_for(self, module_path: str) -> int:
        """The rank PEFT gives ``module_path`` (``rank_pattern`` first, then ``r``)."""
        key = match_pattern_key(list(self.rank_pattern), module_path)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_for(self, module_path: str) -> float:
        """The alpha PEFT gives ``module_path`` (``alpha_pattern`` first, then ``lora_alpha``)."""
        key = match_pattern_key(list(self.alpha_pattern), module_path)
        return float(self.alpha_pattern[key]) if key is not None else self.lora_alpha

    def scale_for(self, module_path: str) -> float:
        """PEFT's scaling for ``module_path``: alpha/r, or alpha/sqrt(r) with rsLoRA."""
        return lora_scale(self.rank_for(module_path), self.alpha_for(module_path), use_rslora=self.use_rslora)

    def with_updates(self, **updates: Any) -> "AdapterConfig":
        """A copy with top-level keys replaced (``None`` values remove the key)."""
        raw = copy.deepcopy(self.raw)
        for key, value in updates.items():
            if value is None:
                raw.pop(key, None)
            else:
                raw[key] = value
        return AdapterConfig(raw)

    def to_json(self) -> str:
        """The config as PEFT writes it: indented, keys sorted."""
        return json.dumps(self.raw, indent=2, sort_keys=True) + "\n"
