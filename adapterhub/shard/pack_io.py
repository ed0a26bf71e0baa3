"""Load a packed library from ``(tensors, metadata)`` (``PackedLibrary.from_tensors``), checking it.

Everything read is untrusted (a stored blob can be corrupt or hand-edited): every tensor the
metadata names must exist with the right shape, and every index must lie inside its pool, so a bad
file fails here with one ``InvalidAdapterError`` instead of an ``IndexError`` deep inside ``unpack``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from adapterhub.errors import InvalidAdapterError
from adapterhub.lora.config import AdapterConfig
from adapterhub.shard.pack_types import FORMAT, PackedAdapter, PackedModule, pool_key

if TYPE_CHECKING:
    from adapterhub.shard.pack import PackedLibrary


def _get(tensors: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if key not in tensors:
        raise InvalidAdapterError(f"packed library has no tensor '{key}'; the pool file is incomplete")
    t = tensors[key]
    if shape is not None and tuple(t.shape) != shape:
        raise InvalidAdapterError(f"packed tensor '{key}' has shape {list(t.shape)}, expected {list(shape)}")
    return t


def load_packed(cls: type[PackedLibrary], tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> "PackedLibrary":
    if meta.get("format") != FORMAT:
        raise InvalidAdapterError(f"not a packed library (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        l = int(meta["shards_per_vector"])
        dtype = getattr(torch, str(meta["dtype"]))
        pools = {key: _get(tensors, f"pool.{key}", tuple(shape)) for key, shape in meta["pools"].items()}
        adapters = {}
        for j, entry in enumerate(meta["adapters"]):
            modules = {}
            for path, m in entry["modules"].items():
                prefix = f"a{j}.{path}"
                pm = PackedModule(d_out=int(m["d_out"]), d_in=int(m["d_in"]), scale=float(m["scale"]))
                if m["verbatim"]:
                    A, B = _get(tensors, f"{prefix}.A"), _get(tensors, f"{prefix}.B")
                    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != pm.d_in or B.shape[0] != pm.d_out or A.shape[0] != B.shape[1]:
                        raise InvalidAdapterError(f"packed module '{prefix}' has factors of wrong shape")
                    pm.verbatim = (A, B)
                else:
                    for side, d in (("B", pm.d_out), ("A", pm.d_in)):
                        idx = _get(tensors, f"{prefix}.idx_{side}")
                        if idx.ndim != 2 or idx.shape[1] != l:
                            raise InvalidAdapterError(f"packed indices '{prefix}.idx_{side}' have shape {list(idx.shape)}")
                        coef = _get(tensors, f"{prefix}.coef_{side}", tuple(idx.shape))
                        priv = _get(tensors, f"{prefix}.priv_{side}")
                        if priv.ndim != 2 or priv.shape[1] != d:
                            raise InvalidAdapterError(f"packed private vectors '{prefix}.priv_{side}' have shape {list(priv.shape)}")
                        idx = idx.to(torch.int64)
                        if idx.numel():
                            key = pool_key(path, side, d)
                            if key not in pools:
                                raise InvalidAdapterError(f"module '{prefix}' needs pool '{key}', which the file lacks")
                            n = pools[key].shape[0]
                            if int(idx.min()) < 0 or int(idx.max()) >= n:
                                raise InvalidAdapterError(
                                    f"packed indices '{prefix}.idx_{side}' point outside pool '{key}' "
                                    f"(range {int(idx.min())}..{int(idx.max())}, pool has {n} shards); the file is corrupt"
                                )
                        setattr(pm, f"idx_{side}", idx)
                        setattr(pm, f"coef_{side}", coef)
                        setattr(pm, f"priv_{side}", priv)
                    if pm.idx_B.shape[0] != pm.idx_A.shape[0] or pm.priv_B.shape[0] != pm.priv_A.shape[0]:
                        raise InvalidAdapterError(f"packed module '{prefix}' has unequal unit counts for A and B")
                modules[path] = pm
            extras = {p: _get(tensors, f"a{j}.extra.{p}") for p in entry["extras"]}
            adapters[str(entry["name"])] = PackedAdapter(
                AdapterConfig(entry["config"]), modules, extras, int(entry["factor_bytes"]), float(entry["error"])
            )
    except (KeyError, TypeError, AttributeError) as e:
        raise InvalidAdapterError(f"packed library metadata is malformed ({type(e).__name__}: {e})") from e
    return cls(pools=pools, adapters=adapters, shards_per_vector=l, dtype=dtype, seed=int(meta.get("seed", 0)))
