"""``LoraAdapter``: a PEFT LoRA adapter as a config plus a lazy map of module path -> ``LoraModule``."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from adapterhub.errors import InvalidAdapterError, UnsupportedAdapterError
from adapterhub.files import atomic_write
from adapterhub.lora.config import CONFIG_NAME, LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, AdapterConfig, targets_module
from adapterhub.lora.keys import extra_key, lora_key, parse_key
from adapterhub.lora.module import LoraModule
from adapterhub.lora.scan import CanonicalLayout, WeightsScan, canonical_layout, copy_canonical, scan_file
from adapterhub.lora.tensorfile import (
    DTYPE_NAMES,
    DictSource,
    SafetensorsSource,
    TensorSource,
    check_finite,
    iter_canonical_bytes,
    load_bin,
    sha256_stream,
)


class LoraAdapter:
    """A LoRA adapter: PEFT config plus tensors, read lazily one module at a time.

    Construction checks structure only (key names, dtypes, shapes, ranks against the config),
    from the file header, without loading tensor data. Values (NaN/Inf, unreadable data) are
    checked by reading the tensors, in one of two ways:

    * ``validate()`` reads every tensor once, up front (``load``/``from_files`` call it unless
      ``validate=False``);
    * ``iter_weights_bytes(check_values=True)`` / ``write_weights(..., check_values=True)`` check
      each tensor as it is streamed out, so an import that writes the canonical bytes anyway reads
      the adapter once: open it with ``validate=False`` and stream with ``check_values=True``.

    Both raise the same ``InvalidAdapterError`` for the same first bad tensor.

    Args:
        config: the adapter's PEFT config.
        source: where tensors come from (memory-mapped safetensors file or in-memory dict), keyed
            by PEFT's saved names.
    """

    def __init__(self, config: AdapterConfig, source: TensorSource, *, origin: str | None = None) -> None:
        self.config = config
        self._source = source
        self._origin = origin
        self._factor_keys: dict[str, dict[str, str]] = {}
        self._extra_keys: dict[str, str] = {}
        self._digest_and_size: tuple[str, int] | None = None  # set by the first full hashing pass
        for key in source.keys():
            parsed = parse_key(key)
            if parsed.role == "extra":
                if parsed.path in self._extra_keys:
                    raise InvalidAdapterError(f"duplicate tensor for '{parsed.path}'", path=origin)
                self._extra_keys[parsed.path] = key
            else:
                slot = self._factor_keys.setdefault(parsed.path, {})
                if parsed.role in slot:
                    raise InvalidAdapterError(f"two lora_{parsed.role} tensors for module '{parsed.path}'", path=origin)
                slot[parsed.role] = key
        self._check_structure()

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, folder: str | Path, *, validate: bool = True) -> "LoraAdapter":
        """Open a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).

        A legacy ``adapter_model.bin`` is read with ``torch.load(weights_only=True)`` only.

        Args:
            folder: the PEFT adapter folder.
            validate: also read every tensor now and reject NaN/Inf (``validate()``). Structure is
                checked either way. Pass ``False`` when the weights are about to be streamed with
                ``iter_weights_bytes(check_values=True)``, which checks values on the way and
                saves a second read.

        Raises:
            InvalidAdapterError: missing files, truncated or malformed tensors, config mismatch, NaN.
            UnsupportedAdapterError: DoRA, embedding or conv LoRA, non-LoRA PEFT types.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidAdapterError("not a folder; pass the PEFT adapter folder", path=str(folder))
        config = AdapterConfig.load(folder / CONFIG_NAME)
        if (folder / WEIGHTS_NAME).is_file():
            source: TensorSource = SafetensorsSource(folder / WEIGHTS_NAME)
        elif (folder / LEGACY_WEIGHTS_NAME).is_file():
            source = load_bin(folder / LEGACY_WEIGHTS_NAME)
        else:
            raise InvalidAdapterError(f"no {WEIGHTS_NAME} (or {LEGACY_WEIGHTS_NAME}) in the folder", path=str(folder))
        adapter = cls(config, source, origin=str(folder))
        if validate:
            adapter.validate()
        return adapter

    @classmethod
    def from_files(cls, config: AdapterConfig, weights_path: str | Path, *, validate: bool = True) -> "LoraAdapter":
        """An adapter from a config and a safetensors file (e.g. a blob in the store).

        Args:
            config: the adapter's PEFT config.
            weights_path: a safetensors file; its header is read now, tensor data lazily.
            validate: as in ``load``: also read every tensor now and reject NaN/Inf.

        Raises:
            InvalidAdapterError: truncated or malformed file, config mismatch, NaN (when validating).
        """
        adapter = cls(config, SafetensorsSource(weights_path), origin=str(weights_path))
        if validate:
            adapter.validate()
        return adapter

    @classmethod
    def from_modules(
        cls,
        modules: Mapping[str, LoraModule],
        *,
        base_model: str | None,
        target_modules: list[str] | str | None = None,
        extra_tensors: Mapping[str, torch.Tensor] | None = None,
        config_overrides: Mapping[str, Any] | None = None,
    ) -> "LoraAdapter":
        """Build an in-memory adapter from modules, e.g. an engine's output.

        Each module's scale is folded into B (in the module's dtype) and its alpha set equal to its
        rank, so PEFT's scaling is exactly 1 whatever rank each module has (different ranks go to
        ``rank_pattern`` and ``alpha_pattern`` keyed by the full module path).

        Args:
            modules: normalised module path -> module.
            base_model: recorded as ``base_model_name_or_path``.
            target_modules: defaults to the last path component of every module.
            extra_tensors: passthrough tensors (e.g. ``modules_to_save``), normalised keys.
            config_overrides: extra config keys (e.g. ``task_type``, ``modules_to_save``).
        """
        if not modules:
            raise InvalidAdapterError("an adapter needs at least one LoRA module")
        ranks = {path: m.rank for path, m in modules.items()}
        r = max(sorted(ranks.values()), key=list(ranks.values()).count)  # the most common rank
        exceptions = {path: rank for path, rank in ranks.items() if rank != r}
        if target_modules is None:
            target_modules = sorted({path.rsplit(".", 1)[-1] for path in modules})
        raw: dict[str, Any] = {
            "peft_type": "LORA",
            "base_model_name_or_path": base_model,
            "r": r,
            "lora_alpha": r,
            "rank_pattern": exceptions,
            "alpha_pattern": dict(exceptions),
            "target_modules": target_modules,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
            "use_dora": False,
            "inference_mode": True,
            "init_lora_weights": True,
            "modules_to_save": None,
            "task_type": None,
        }
        raw.update(dict(config_overrides or {}))
        tensors: dict[str, torch.Tensor] = {}
        for path, module in modules.items():
            # fold the scale into B in the module's own dtype (bf16 stays bf16), without a copy at 1.0
            B = module.B if module.scale == 1.0 else (module.B.float() * module.scale).to(module.B.dtype)
            tensors[lora_key(path, "A")] = module.A.contiguous()
            tensors[lora_key(path, "B")] = B.contiguous()
        for path, tensor in (extra_tensors or {}).items():
            tensors[extra_key(path)] = tensor.detach().contiguous()
        return cls(AdapterConfig(raw), DictSource(tensors), origin="<memory>")

    # ------------------------------------------------------------------ structure
    def _check_structure(self) -> None:
        """Everything that can be checked from the header alone, so that opening stays cheap."""
        if not self._factor_keys:
            raise InvalidAdapterError("no LoRA tensors (lora_A/lora_B) found", path=self._origin)
        for path, slot in sorted(self._factor_keys.items()):
            if set(slot) != {"A", "B"}:
                missing = ({"A", "B"} - set(slot)).pop()
                raise InvalidAdapterError(f"module '{path}' has no lora_{missing} tensor", path=self._origin)
            _, shape_a = self._source.meta(slot["A"])
            _, shape_b = self._source.meta(slot["B"])
            if len(shape_a) != 2 or len(shape_b) != 2:
                raise UnsupportedAdapterError(
                    f"module '{path}' has {len(shape_a)}-d LoRA factors; only linear layers are supported "
                    "(conv LoRA is not)"
                )
            if shape_a[0] != shape_b[1]:
                raise InvalidAdapterError(
                    f"module '{path}': lora_A is {list(shape_a)} (r, d_in) but lora_B is {list(shape_b)} (d_out, r)",
                    path=self._origin,
                )
            expected = self.config.rank_for(path)
            if shape_a[0] != expected:
                raise InvalidAdapterError(
                    f"module '{path}' has rank {shape_a[0]} but the config says {expected} "
                    "(r / rank_pattern); config and tensors disagree",
                    path=self._origin,
                )
            if not targets_module(self.config.target_modules, path, self.config.exclude_modules):
                raise InvalidAdapterError(
                    f"module '{path}' is not selected by target_modules {self.config.target_modules!r} "
                    f"(exclude_modules {self.config.exclude_modules!r}); "
                    "config and tensors disagree",
                    path=self._origin,
                )

        for key in self._source.keys():
            dtype = self._source.meta(key)[0]
            if dtype not in DTYPE_NAMES:
                raise InvalidAdapterError(f"tensor '{key}' has unsupported dtype {dtype}", path=self._origin)

    def _check_values(self, key: str, tensor: torch.Tensor) -> None:
        check_finite(key, tensor, path=self._origin)

    def validate(self) -> None:
        """Read every tensor once: reject NaN/Inf and unreadable data (truncation).

        An explicit pass for callers that need values checked before they use the adapter; an
        import that streams the weights should use ``iter_weights_bytes(check_values=True)``
        instead, which does the same checks (same errors, same order) without a second read.

        Raises:
            InvalidAdapterError: the first tensor, in sorted key order, that is unreadable or not finite.
        """
        for key in sorted(self._source.keys()):
            self._check_values(key, self._source.get(key))

    # ------------------------------------------------------------------ access
    @property
    def base_model(self) -> str | None:
        return self.config.base_model

    @property
    def module_paths(self) -> list[str]:
        return sorted(self._factor_keys)

    def module(self, path: str) -> LoraModule:
        """Load one module's factors (lazily, from the memory-mapped file)."""
        if path not in self._factor_keys:
            raise KeyError(f"adapter has no LoRA module '{path}'")
        keys = self._factor_keys[path]
        return LoraModule(
            A=self._source.get(keys["A"]), B=self._source.get(keys["B"]), scale=self.config.scale_for(path)
        )

    def modules(self) -> Iterator[tuple[str, LoraModule]]:
        """Every module in path order, loaded one at a time."""
        for path in self.module_paths:
            yield path, self.module(path)

    def module_shape(self, path: str) -> tuple[int, int, int]:
        """``(d_out, d_in, rank)`` of one module, from the header only."""
        keys = self._factor_keys[path]
        _, (r, d_in) = self._source.meta(keys["A"])
        _, (d_out, _) = self._source.meta(keys["B"])
        return int(d_out), int(d_in), int(r)

    def ranks(self) -> dict[str, int]:
        return {path: self.module_shape(path)[2] for path in self.module_paths}

    @property
    def total_rank(self) -> int:
        return sum(self.ranks().values())

    @property
    def extra_tensor_names(self) -> list[str]:
        return sorted(self._extra_keys)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Passthrough tensors (``modules_to_save``), keyed by normalised path."""
        return {path: self._source.get(key) for path, key in sorted(self._extra_keys.items())}

    def delta_weight(self, path: str) -> torch.Tensor:
        """The update to add to the base weight, in the base weight's own layout.

        Equals PEFT's ``get_delta_weight``: ``scale * B @ A``, transposed for ``fan_in_fan_out``
        layers (GPT-2's Conv1D stores weights as ``(d_in, d_out)``).
        """
        delta = self.module(path).delta()
        return delta.T if self.config.fan_in_fan_out else delta

    # ------------------------------------------------------------------ serialisation
    def _metas(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return {key: self._source.meta(key) for key in self._source.keys()}

    def iter_weights_bytes(self, *, check_values: bool = False) -> Iterator[bytes]:
        """The canonical ``adapter_model.safetensors`` bytes, streamed one tensor at a time.

        The header (built from names, dtypes and shapes) comes first, then each tensor in sorted
        key order, each read from the source exactly once.

        Args:
            check_values: check each tensor as ``validate()`` would (NaN/Inf) after it is read
                and before its bytes are yielded. A bad tensor raises mid-stream, so the stream
                is never complete: a writer that commits only when the iteration finishes (a
                ``with`` block around the loop, ``write_weights``) stores nothing.

        Raises:
            InvalidAdapterError: a tensor is unreadable (truncated file), or, with
                ``check_values``, contains NaN or Inf; the message is the one ``validate()`` gives.
        """
        return iter_canonical_bytes(
            self._metas(), self._source.get, check=self._check_values if check_values else None
        )

    @property
    def digest_and_size(self) -> tuple[str, int]:
        """(sha256, size) of the canonical bytes; computed once, or taken from ``write_weights``."""
        if self._digest_and_size is None:
            self._digest_and_size = sha256_stream(self.iter_weights_bytes())
        return self._digest_and_size

    @property
    def digest(self) -> str:
        """sha256 of the canonical safetensors bytes: same content, same digest."""
        return self.digest_and_size[0]

    def canonical_layout(self) -> CanonicalLayout | None:
        """How the weights file maps onto the canonical bytes (header only), for ``scan_file``.

        ``None`` when the adapter is not backed by a safetensors file whose tensor data is laid
        out canonically (sorted, contiguous, no bool tensors); then use ``iter_weights_bytes``.
        """
        if not isinstance(self._source, SafetensorsSource):
            return None
        return canonical_layout(self._source)

    def scan_file(self, layout: CanonicalLayout, *, copy: Path | None = None) -> WeightsScan:
        """Read the weights file once: its sha256, the canonical digest, and every value checked.

        The fast path for a file just received (a pull): see ``adapterhub.lora.scan``. Values are
        checked as ``iter_weights_bytes(check_values=True)`` checks them (same errors), and the
        canonical digest is kept, so a later ``digest`` costs nothing.

        Args:
            layout: ``canonical_layout()`` of this adapter (not ``None``).
            copy: a canonical copy of the file (``write_canonical_copy``) to read the data from.

        Raises:
            InvalidAdapterError: a tensor holds NaN or Inf, or the file changed while being read.
        """
        scan = scan_file(self._safetensors(), layout, copy=copy, origin=self._origin)
        self._digest_and_size = (scan.digest, scan.size)
        return scan

    def write_canonical_copy(self, layout: CanonicalLayout, dest: Path) -> None:
        """Write the canonical file to ``dest`` by a kernel copy of the data; ``scan_file(copy=dest)`` checks it."""
        copy_canonical(self._safetensors(), layout, dest)

    def _safetensors(self) -> SafetensorsSource:
        if not isinstance(self._source, SafetensorsSource):
            raise TypeError("this needs an adapter opened from a safetensors file")
        return self._source

    def write_weights(self, path: str | Path, *, check_values: bool = False) -> tuple[str, int]:
        """Write the canonical safetensors file atomically; returns (digest, size).

        The digest is computed from the bytes as they are written (no second pass) and kept, so a
        later ``digest`` costs nothing.

        Args:
            path: the file to write; replaced only once the whole file is written and fsynced.
            check_values: as in ``iter_weights_bytes``; on a bad tensor nothing is written.

        Raises:
            InvalidAdapterError: as ``iter_weights_bytes``; ``path`` is then left as it was.
        """
        with atomic_write(path) as f:
            digest_and_size = sha256_stream(self.iter_weights_bytes(check_values=check_values), f.write)
        self._digest_and_size = digest_and_size
        return digest_and_size

    def save(self, folder: str | Path) -> Path:
        """Write a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``) atomically per file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.write_weights(folder / WEIGHTS_NAME)
        with atomic_write(folder / CONFIG_NAME, "w") as f:
            f.write(self.config.to_json())
        return folder

    def astype(self, dtype: torch.dtype) -> "LoraAdapter":
        """A copy (in memory) with every floating-point tensor cast to ``dtype`` (e.g. fp16 to ship)."""
        tensors = {}
        for key in self._source.keys():
            tensor = self._source.get(key)
            tensors[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        return LoraAdapter(self.config, DictSource(tensors), origin=self._origin)

    def with_config(self, config: AdapterConfig) -> "LoraAdapter":
        """The same tensors under another config (re-checked against the tensors)."""
        return LoraAdapter(config, self._source, origin=self._origin)

    def norm(self) -> float:
        """Frobenius norm of the full update (sqrt of the sum over modules), computed in factor space."""
        total = 0.0
        for _, module in self.modules():
            B, A = module.folded()
            total += float(((B.T @ B) * (A @ A.T)).sum())
        return math.sqrt(max(total, 0.0))

    def __repr__(self) -> str:
        return f"LoraAdapter(base_model={self.base_model!r}, modules={len(self._factor_keys)}, origin={self._origin!r})"
