"""Pack a library of LoRA adapters of one base into shared shard pools (issue 12, item 2).

How a library is stored:

* Every module's update ``ΔW = s·B·A`` is rewritten as canonical rank vectors
  ``ΔW = Σ_i u_i v_iᵀ`` (``pack_vectors.canonical_vectors``: factor-space SVD, balanced norms, fixed
  sign), so the same update always gives the same vectors and sharing means shared content.
* *Vector sharding* (as in MoS): each ``u_i`` / ``v_i`` is cut into ``l = shards_per_vector`` shards.
  Per module type (last path component, e.g. ``query``), side (``B`` = u, ``A`` = v) and vector
  length, all shards of all adapters (and all layers) are clustered by weighted k-means into one
  pool of at most ``pool_size`` shards.
* Each pooled shard is stored as an index into its pool plus one scalar coefficient (least-squares
  fit ``<x, c>/||c||²``). Why the scalar: k-means runs on unit, sign-canonical directions, so a shard
  and its negative or a scaled copy share one entry; without it the pool would have to spend entries
  on magnitudes. It costs one value of the storage dtype per shard, counted in ``stats()``.
* *Private units*: a byte budget is spent on the rank-1 units ``u_i v_iᵀ`` the pools reconstruct
  worst (largest squared error relative to their adapter's ``||ΔW||²``, per private byte); those keep
  their exact vectors. A module whose units are all private keeps its original ``A``, ``B``
  verbatim (same bytes as unpacked, bit-exact). So ``private_budget=math.inf`` reproduces every
  adapter exactly: the *same ΔW*; where some units of a module are pooled the unpacked factors are
  the canonical factorisation, not the original ``A``, ``B``.

Errors are relative Frobenius errors of ``ΔW`` over the whole adapter,
``sqrt(Σ_modules ||ΔW - ΔŴ||²) / sqrt(Σ_modules ||ΔW||²)``, computed in factor space from the
factors ``unpack`` returns (float64 Grams, ``merge.factors.fro_norm``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from adapterhub.errors import IncompatibleAdaptersError, InvalidAdapterError, InvalidParameterError
from adapterhub.lora.adapter import LoraAdapter
from adapterhub.lora.config import AdapterConfig
from adapterhub.lora.module import LoraModule
from adapterhub.merge.factors import fro_norm
from adapterhub.shard.pack_fit import Canonical, check_shapes, fit_pool, read_library, release_memory, spill_folder
from adapterhub.shard.pack_io import load_packed
from adapterhub.shard.pack_types import FORMAT, PackedAdapter, PackedModule, index_dtype, pool_key
from adapterhub.shard.pack_vectors import (
    canonical_vectors,
    directions,
    from_shards,
    nearest,
    to_shards,
)

_RANK_KEYS = ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora")


@dataclass(frozen=True)
class PackStats:
    """Bytes of the packed library by component, the unpacked bytes, and per-adapter errors."""

    packed_bytes: dict[str, int]
    unpacked_bytes: int
    errors: dict[str, float]

    @property
    def total_packed_bytes(self) -> int:
        return sum(self.packed_bytes.values())

    @property
    def ratio(self) -> float:
        """Storage ratio: unpacked bytes / packed bytes (8.0 means 8x smaller)."""
        return self.unpacked_bytes / max(self.total_packed_bytes, 1)

    @property
    def mean_error(self) -> float:
        return sum(self.errors.values()) / max(len(self.errors), 1)

    def as_dict(self) -> dict:
        return {
            "packed_bytes": dict(self.packed_bytes),
            "total_packed_bytes": self.total_packed_bytes,
            "unpacked_bytes": self.unpacked_bytes,
            "ratio": self.ratio,
            "mean_error": self.mean_error,
            "errors": dict(self.errors),
        }


# ---------------------------------------------------------------------------------- helpers
def _factor_bytes(adapter: LoraAdapter) -> int:
    return sum(m.A.numel() * m.A.element_size() + m.B.numel() * m.B.element_size() for _, m in adapter.modules())


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def adapter_like(original: AdapterConfig, modules: Mapping[str, LoraModule], extras: Mapping[str, torch.Tensor]) -> LoraAdapter:
    """A plain PEFT LoRA with ``modules``, keeping every config field of ``original`` but the rank ones."""
    overrides = {k: v for k, v in original.raw.items() if k not in _RANK_KEYS}
    return LoraAdapter.from_modules(
        modules,
        base_model=original.base_model,
        target_modules=original.target_modules,  # type: ignore[arg-type]
        extra_tensors=extras,
        config_overrides=overrides,
    )


def _check_params(pool_size: int, shards_per_vector: int, private_budget: float) -> None:
    if not isinstance(pool_size, int) or pool_size < 1:
        raise InvalidParameterError(f"pool_size must be a positive integer (shards per pool), got {pool_size!r}")
    if not isinstance(shards_per_vector, int) or shards_per_vector < 1:
        raise InvalidParameterError(f"shards_per_vector must be a positive integer, got {shards_per_vector!r}")
    if not (private_budget >= 0):
        raise InvalidParameterError(f"private_budget must be >= 0 bytes (math.inf: exact), got {private_budget!r}")


@dataclass
class _Canon:
    """Canonical vectors of one adapter's modules, kept while packing."""

    u: dict[str, torch.Tensor]
    v: dict[str, torch.Tensor]
    norm_sq: float  # ||ΔW||² of the whole adapter


def _canonicalise(adapter: LoraAdapter, dtype: torch.dtype) -> _Canon:
    u, v, total = {}, {}, 0.0
    for path, module in adapter.modules():
        cu, cv = canonical_vectors(module)
        total += float((cu.square().sum(1) * cv.square().sum(1)).sum())
        u[path], v[path] = cu.to(dtype), cv.to(dtype)
    return _Canon(u, v, total)


def _fit(shards: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest pool entry (by direction) and least-squares coefficient of every shard."""
    dirs, _ = directions(shards)
    idx = nearest(dirs, pool.float())
    centers = pool.float()[idx]
    c_sq = centers.square().sum(1)
    coef = (shards.float() * centers).sum(1) / torch.where(c_sq > 0, c_sq, torch.ones_like(c_sq))
    return idx, coef


def _unit_errors(u, v, u_hat, v_hat) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``||u vᵀ - û v̂ᵀ||²`` per unit (float64), from inner products only."""
    u, v, u_hat, v_hat = (t.double() for t in (u, v, u_hat, v_hat))
    return (
        u.square().sum(1) * v.square().sum(1)
        + u_hat.square().sum(1) * v_hat.square().sum(1)
        - 2 * (u * u_hat).sum(1) * (v * v_hat).sum(1)
    ).clamp_min(0)


# ---------------------------------------------------------------------------------- the library
class PackedLibrary:
    """Adapters stored as shared shard pools + per-adapter indices, coefficients and private units.

    Build with ``pack_library``; read with ``unpack``; ``add`` assigns a new adapter to the existing
    pools; ``to_tensors``/``from_tensors`` give a pickle-free (tensors, JSON metadata) form.
    """

    def __init__(self, *, pools: dict[str, torch.Tensor], adapters: dict[str, PackedAdapter], shards_per_vector: int, dtype: torch.dtype, seed: int) -> None:
        self.pools = pools
        self.adapters = adapters
        self.shards_per_vector = shards_per_vector
        self.dtype = dtype
        self.seed = seed

    @property
    def names(self) -> list[str]:
        return sorted(self.adapters)

    # ------------------------------------------------------------------ reading
    def _vectors(self, path: str, pm: PackedModule) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, v)``, shapes ``(r, d_out)``, ``(r, d_in)`` float32, of a non-verbatim module."""
        l = self.shards_per_vector
        parts = []
        for side, d, idx, coef, priv in (("B", pm.d_out, pm.idx_B, pm.coef_B, pm.priv_B), ("A", pm.d_in, pm.idx_A, pm.coef_A, pm.priv_A)):
            if idx.shape[0]:
                pool = self.pools[pool_key(path, side, d)]
                shards = pool[idx.reshape(-1).long()].float() * coef.reshape(-1, 1).float()
                pooled = from_shards(shards, d, l)
            else:
                pooled = torch.zeros(0, d)
            parts.append(torch.cat([pooled, priv.float().reshape(-1, d)]))
        return parts[0], parts[1]

    def module(self, name: str, path: str) -> LoraModule:
        pm = self.adapters[name].modules[path]
        if pm.verbatim is not None:
            return LoraModule(A=pm.verbatim[0], B=pm.verbatim[1], scale=pm.scale)
        u, v = self._vectors(path, pm)
        return LoraModule(A=v, B=u.T.contiguous(), scale=1.0)

    def unpack(self, name: str) -> LoraAdapter:
        """The reconstructed adapter as a plain PEFT LoRA (config fields of the original kept).

        Raises:
            KeyError: no adapter of this name in the library.
        """
        if name not in self.adapters:
            raise KeyError(f"no adapter named '{name}' in the packed library; packed: {self.names}")
        pa = self.adapters[name]
        modules = {path: self.module(name, path) for path in sorted(pa.modules)}
        return adapter_like(pa.config, modules, pa.extras)

    def _error(self, name: str, canon: _Canon) -> float:
        """Relative ΔW error of the stored form against the canonical vectors (factor space)."""
        err_sq = 0.0
        for path in canon.u:
            m = self.module(name, path)
            B_hat, A_hat = m.folded()
            B = torch.cat([canon.u[path].double().T, -B_hat.double()], dim=1)
            A = torch.cat([canon.v[path].double(), A_hat.double()], dim=0)
            err_sq += fro_norm(B, A) ** 2
        return math.sqrt(err_sq / canon.norm_sq) if canon.norm_sq > 0 else 0.0

    def stats(self) -> PackStats:
        """Bytes by component (pools, indices, coefficients, private, verbatim, extras) and errors."""
        parts = dict.fromkeys(("pools", "indices", "coefficients", "private", "verbatim", "extras"), 0)
        parts["pools"] = sum(_bytes(p) for p in self.pools.values())
        unpacked = 0
        for pa in self.adapters.values():
            unpacked += pa.factor_bytes + sum(_bytes(t) for t in pa.extras.values())
            parts["extras"] += sum(_bytes(t) for t in pa.extras.values())
            for path, pm in pa.modules.items():
                if pm.verbatim is not None:
                    parts["verbatim"] += sum(_bytes(t) for t in pm.verbatim)
                    continue
                for side, d, idx in (("B", pm.d_out, pm.idx_B), ("A", pm.d_in, pm.idx_A)):
                    n_pool = self.pools[pool_key(path, side, d)].shape[0] if idx.numel() else 0
                    parts["indices"] += idx.numel() * torch.empty(0, dtype=index_dtype(n_pool)).element_size()
                parts["coefficients"] += (pm.coef_B.numel() + pm.coef_A.numel()) * self.itemsize
                parts["private"] += _bytes(pm.priv_B) + _bytes(pm.priv_A)
        return PackStats(parts, unpacked, {n: self.adapters[n].error for n in self.names})

    @property
    def itemsize(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    # ------------------------------------------------------------------ adding
    def add(self, name: str, adapter: LoraAdapter, *, max_error: float | None = None) -> float:
        """Assign a new adapter to the existing pools without touching the other adapters.

        Every shard goes to its nearest pool entry. If the adapter's relative error is then over
        ``max_error``, the pools *grow*: the shards of its worst units (largest squared error, as in
        packing) are appended as new pool entries, unit by unit, until the estimated error (unit errors
        summed: the canonical units are orthogonal on each side, so this is close) is within budget.
        Appending never moves an existing entry, so other adapters' reconstructions are unchanged.

        Args:
            name: the new adapter's name (must be new).
            adapter: same base model and module shapes as the library.
            max_error: relative ΔW error allowed before growing; default: the worst error of an
                adapter already packed.

        Returns:
            The adapter's relative reconstruction error.

        Raises:
            InvalidParameterError: the name is taken.
            IncompatibleAdaptersError: another base model or other module shapes.
        """
        if name in self.adapters:
            raise InvalidParameterError(f"an adapter named '{name}' is already packed; remove it or choose another name")
        first = self.adapters[self.names[0]] if self.adapters else None
        if first is not None and adapter.base_model != first.config.base_model:
            raise IncompatibleAdaptersError(
                f"adapter '{name}' is for base '{adapter.base_model}' but the library is for '{first.config.base_model}'"
            )
        shapes = {p: (m.d_out, m.d_in) for pa in self.adapters.values() for p, m in pa.modules.items()}
        check_shapes(name, adapter, shapes)
        if max_error is None:
            max_error = max((pa.error for pa in self.adapters.values()), default=0.0)
        canon = _canonicalise(adapter, self.dtype)
        l = self.shards_per_vector
        pa = PackedAdapter(adapter.config, {}, adapter.extra_tensors(), _factor_bytes(adapter))
        self.adapters[name] = pa
        unit_err: list[tuple[float, str, int]] = []
        for path in sorted(canon.u):
            u, v = canon.u[path], canon.v[path]
            pm = PackedModule(d_out=u.shape[1], d_in=v.shape[1])
            hats = []
            for side, vec in (("B", u), ("A", v)):
                key = pool_key(path, side, vec.shape[1])
                shards = to_shards(vec, l)
                if key not in self.pools:  # a module type the library has not seen: its own pool
                    self.pools[key] = shards.to(self.dtype).clone()
                idx, coef = _fit(shards, self.pools[key])
                coef = coef.to(self.dtype)
                setattr(pm, f"idx_{side}", idx.reshape(-1, l))
                setattr(pm, f"coef_{side}", coef.reshape(-1, l))
                hats.append(from_shards(self.pools[key][idx].float() * coef.float()[:, None], vec.shape[1], l))
            pm.priv_B, pm.priv_A = torch.zeros(0, pm.d_out, dtype=self.dtype), torch.zeros(0, pm.d_in, dtype=self.dtype)
            pa.modules[path] = pm
            errs = _unit_errors(u, v, hats[0], hats[1])
            unit_err += [(float(e), path, i) for i, e in enumerate(errs)]
        budget_sq = (max_error**2) * canon.norm_sq
        remaining = sum(e for e, _, _ in unit_err)
        for e, path, i in sorted(unit_err, key=lambda t: (-t[0], t[1], t[2])):
            if remaining <= budget_sq or e <= 0:
                break
            pm = pa.modules[path]
            for side, vec in (("B", canon.u[path]), ("A", canon.v[path])):
                key = pool_key(path, side, vec.shape[1])
                shards = to_shards(vec[i : i + 1], l).to(self.dtype)
                start = self.pools[key].shape[0]
                self.pools[key] = torch.cat([self.pools[key], shards])
                getattr(pm, f"idx_{side}")[i] = torch.arange(start, start + l)
                getattr(pm, f"coef_{side}")[i] = 1.0
            remaining -= e
        pa.error = self._error(name, canon)
        return pa.error

    # ------------------------------------------------------------------ serialisation
    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """``(tensors, metadata)``: safetensors-ready tensors and a JSON-able dict; no pickle.

        Indices are stored as uint16 while a pool has at most 65,536 entries (int32 above).
        """
        tensors: dict[str, torch.Tensor] = {}
        pools_meta = {}
        for key, pool in sorted(self.pools.items()):
            tensors[f"pool.{key}"] = pool.contiguous()
            pools_meta[key] = list(pool.shape)
        adapters_meta = []
        for j, name in enumerate(self.names):
            pa = self.adapters[name]
            modules_meta = {}
            for path, pm in sorted(pa.modules.items()):
                prefix = f"a{j}.{path}"
                modules_meta[path] = {"d_out": pm.d_out, "d_in": pm.d_in, "scale": pm.scale, "verbatim": pm.verbatim is not None}
                if pm.verbatim is not None:
                    tensors[f"{prefix}.A"], tensors[f"{prefix}.B"] = (t.contiguous() for t in pm.verbatim)
                    continue
                for side, d, idx, coef, priv in (("B", pm.d_out, pm.idx_B, pm.coef_B, pm.priv_B), ("A", pm.d_in, pm.idx_A, pm.coef_A, pm.priv_A)):
                    n_pool = self.pools[pool_key(path, side, d)].shape[0] if idx.numel() else 0
                    tensors[f"{prefix}.idx_{side}"] = idx.to(torch.int64).to(index_dtype(n_pool)).contiguous()
                    tensors[f"{prefix}.coef_{side}"] = coef.contiguous()
                    tensors[f"{prefix}.priv_{side}"] = priv.contiguous()
            for path, t in pa.extras.items():
                tensors[f"a{j}.extra.{path}"] = t.contiguous()
            adapters_meta.append(
                {"name": name, "config": pa.config.raw, "modules": modules_meta, "extras": sorted(pa.extras),
                 "factor_bytes": pa.factor_bytes, "error": pa.error}
            )
        meta = {"format": FORMAT, "shards_per_vector": self.shards_per_vector, "dtype": str(self.dtype).removeprefix("torch."),
                "seed": self.seed, "pools": pools_meta, "adapters": adapters_meta}
        return tensors, meta

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> "PackedLibrary":
        """Rebuild from ``to_tensors`` output, checking every shape and that every index is in range.

        Raises:
            InvalidAdapterError: unknown format, a missing tensor, a wrong shape, an index outside its pool.
        """
        return load_packed(cls, tensors, meta)


def pack_library(
    adapters: Mapping[str, LoraAdapter],
    *,
    pool_size: int,
    shards_per_vector: int = 1,
    private_budget: float = 0,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    max_iter: int = 20,
    max_fit_points: int = 65536,
) -> PackedLibrary:
    """Pack adapters of one base into shared pools (see the module docstring for the scheme).

    Args:
        adapters: name -> adapter; same base model, same shape for a module path everywhere.
            Each is read once (again only for modules kept verbatim), so a lazy mapping keeps one
            adapter in memory at a time; only its canonical vectors are kept, in ``dtype``, spilled
            to a temporary file above ``pack_fit.SPILL_BYTES`` (see ``pack_fit`` for the bounds).
        pool_size: shards per pool (one pool per module type, side and vector length).
        shards_per_vector: ``l``, shards each rank vector is cut into.
        private_budget: bytes for private (exact) units, spent on the worst-reconstructed units per
            byte; ``math.inf`` stores everything exactly.
        seed: seeds the k-means (same seed and input, same library).
        dtype: storage dtype of pools, coefficients and private vectors; default: the adapters'.
        max_iter: Lloyd iterations per pool at most.
        max_fit_points: k-means fits on at most this many shards per pool (seeded subsample).

    Raises:
        InvalidParameterError: ``pool_size`` < 1, ``shards_per_vector`` < 1, negative budget, no adapters.
        IncompatibleAdaptersError: different base models or module shapes.
    """
    _check_params(pool_size, shards_per_vector, private_budget)
    names = sorted(adapters)
    if not names:
        raise InvalidParameterError("pack_library needs at least one adapter")
    l = shards_per_vector
    with spill_folder() as folder:
        canon, info = read_library(adapters, names, l, dtype, folder)
        try:
            return _pack(adapters, canon, info, names, pool_size=pool_size, private_budget=private_budget, seed=seed,
                         max_iter=max_iter, max_fit_points=max_fit_points)
        finally:
            canon.close()


def _pack(adapters, canon: Canonical, info, names, *, pool_size, private_budget, seed, max_iter, max_fit_points) -> PackedLibrary:  # type: ignore[no-untyped-def]
    l, dtype = canon.l, canon.dtype
    itemsize = torch.empty(0, dtype=dtype).element_size()
    packed = {name: PackedAdapter(config, {}, extras, factor_bytes) for name, (config, extras, factor_bytes) in info.items()}
    pools: dict[str, torch.Tensor] = {}
    fits: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for p, key in enumerate(sorted(canon.members)):
        pools[key], idx, coef = fit_pool(canon.stores[key], pool_size, seed=seed * 1000003 + p, max_iter=max_iter,
                                         max_fit_points=max_fit_points, dtype=dtype)
        for name, path, side, start, rows in canon.members[key]:
            fits[(name, path, side)] = (idx[start : start + rows].clone(), coef[start : start + rows].clone())
    library = PackedLibrary(pools=pools, adapters=packed, shards_per_vector=l, dtype=dtype, seed=seed)
    # pooled reconstruction of every unit, and its error relative to its adapter
    candidates: list[tuple[float, int, str, str, int]] = []  # (-priority, cost, name, path, unit)
    for name in names:
        release_memory()  # per-adapter transients would otherwise pile up in a fragmented heap
        for path in sorted(canon.paths[name]):
            u, v = canon.vectors(name, path, "B"), canon.vectors(name, path, "A")
            pm = PackedModule(d_out=u.shape[1], d_in=v.shape[1])
            hats = []
            for side, vec in (("B", u), ("A", v)):
                idx, coef = fits.pop((name, path, side))
                setattr(pm, f"idx_{side}", idx.reshape(-1, l))
                setattr(pm, f"coef_{side}", coef.reshape(-1, l))
                pool = pools[pool_key(path, side, vec.shape[1])]
                hats.append(from_shards(pool[idx].float() * coef.float()[:, None], vec.shape[1], l))
            packed[name].modules[path] = pm
            errs = _unit_errors(u, v, hats[0], hats[1]) / max(canon.norm_sq[name], 1e-300)
            cost = (pm.d_out + pm.d_in) * itemsize
            for i, e in enumerate(errs.tolist()):
                if e > 0 or math.isinf(private_budget):
                    candidates.append((-e / cost, cost, name, path, i))
    private: dict[tuple[str, str], list[int]] = {}
    spent = 0.0
    for _, cost, name, path, i in sorted(candidates):
        if spent + cost > private_budget:
            continue
        spent += cost
        private.setdefault((name, path), []).append(i)
    del candidates
    for (name, path), units in private.items():
        pm = packed[name].modules[path]
        u, v = canon.vectors(name, path, "B"), canon.vectors(name, path, "A")
        if len(units) == u.shape[0]:
            original = adapters[name].module(path)  # read again: only modules kept verbatim
            pm.verbatim, pm.scale = (original.A, original.B), original.scale
            continue
        keep = sorted(set(range(u.shape[0])) - set(units))
        priv = sorted(units)
        pm.priv_B, pm.priv_A = u[priv].to(dtype), v[priv].to(dtype)
        pm.idx_B, pm.coef_B, pm.idx_A, pm.coef_A = pm.idx_B[keep], pm.coef_B[keep], pm.idx_A[keep], pm.coef_A[keep]
    for name in names:
        release_memory()
        for pm in packed[name].modules.values():
            if pm.priv_B.numel() == 0 and pm.verbatim is None:
                pm.priv_B, pm.priv_A = torch.zeros(0, pm.d_out, dtype=dtype), torch.zeros(0, pm.d_in, dtype=dtype)
        vectors = {path: (canon.vectors(name, path, "B"), canon.vectors(name, path, "A")) for path in canon.paths[name]}
        packed[name].error = library._error(name, _Canon({p: uv[0] for p, uv in vectors.items()}, {p: uv[1] for p, uv in vectors.items()}, canon.norm_sq[name]))
    return library
