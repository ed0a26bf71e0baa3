"""MoS (Mixture-of-Shards) LoRA: low-rank factors assembled from pools of shards shared across layers.

Wang et al., ICLR 2025, "MoS: Unleashing Parameter Efficiency of Low-Rank Adaptation with Mixture
of Shards" (official code ``Forence1999/MoS``, ``modules/Tied_LoRA.py``). Per *projection type*
(all ``query`` layers, all ``q_proj`` layers; one group per leaf name and shape) there is one A pool
and one B pool shared by every layer of that type:

* **vector sharding**: a rank vector is ``l`` shards: an A row is ``l`` shards of ``d_in/l``, a B column ``l`` of ``d_out/l``;
* **subset selection**: a layer's ``r - p`` shared rank vectors are ``(r - p)·l`` shards drawn from the pool by a
  fixed random index (no repeats inside a layer while the pool allows), **pair dissociation**: A and B separately;
* **shard privatization**: each layer owns ``p`` private rank vectors (``p·l`` shards of each kind), taken out of
  the budget: pools hold ``(R_eq - p)·L·l`` shards, pools + private shards ``N = R_eq·L·l`` per kind, so the
  parameter count equals that of LoRA rank ``R_eq`` on the same layers.

The assembled per-layer LoRA has rank ``r`` (``p`` private rank vectors first, then ``r - p``
shared ones) and the forward is PEFT's: ``h = W x + (α/r)·B·A·x``. With ``p = r = R_eq`` every
rank vector is private, the pools are empty and MoS *is* a plain LoRA of rank ``R_eq`` (the
paper's consistency check), by construction.

The "router" of the official code is not a learned gate: it is the fixed random index drawn once
from ``seed``; only pool and private shards are trained. This module does the same. Init as PEFT:
A shards ``U(-1/√d_in, 1/√d_in)`` (Kaiming-uniform, ``a=√5``), B shards zeros.

Forms: on a model (:class:`MosLinear` layers), compact (:class:`MosPools`: pools + indices + private shards,
safetensors-friendly), and a plain per-layer PEFT LoRA of rank ``r`` (:func:`export_lora`, as the official
``save_tied_lora``). :func:`install_mos`, :func:`attach_pools`, :func:`remove_mos` mutate the model in place;
:func:`mos_installed` undoes its own changes on exit, even after an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from adapterhub.errors import InvalidAdapterError, InvalidParameterError, UnsupportedAdapterError
from adapterhub.lora import LoraAdapter, LoraModule
from adapterhub.models.lora_layers import (
    DEFAULT_EXCLUDE_MODULES,
    DEFAULT_TARGET_MODULES,
    LoraLinear,
    find_target_linears,
)

MOS_FORMAT = "adapterhub.mos"
MOS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class MosConfig:
    """Hyperparameters of a MoS adapter.

    Attributes:
        budget_rank: ``R_eq``, the LoRA rank whose parameter count MoS matches.
        rank: ``r``, the rank of each layer's assembled LoRA; scale ``alpha / r``.
        shards_per_vector: ``l``; every adapted ``d_in`` and ``d_out`` must be divisible by it.
        private_rank: ``p``, private rank vectors per layer, ``0 <= p <= min(R_eq, r)``.
        target_modules, exclude_modules: PEFT-style selection (``None``: BERT's q/k/v/dense; the
            trainer picks the seven Llama projections for a causal LM).
        seed: fixes the shard indices and the init.

    Raises ``InvalidParameterError`` for a non-positive size, ``p`` out of range, or ``r > p == R_eq``.
    """

    budget_rank: int = 2
    rank: int = 8
    shards_per_vector: int = 2
    private_rank: int = 1
    alpha: float = 16.0
    target_modules: tuple[str, ...] | str | None = None
    exclude_modules: tuple[str, ...] | str | None = DEFAULT_EXCLUDE_MODULES
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("target_modules", "exclude_modules"):  # lists (e.g. from JSON) become tuples
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, tuple(value))
        R, r, l, p = self.budget_rank, self.rank, self.shards_per_vector, self.private_rank
        if min(R, r, l) <= 0 or self.alpha <= 0:
            raise InvalidParameterError(f"budget_rank, rank, shards_per_vector and alpha must be positive, got "
                                        f"budget_rank={R}, rank={r}, shards_per_vector={l}, alpha={self.alpha}")
        if not 0 <= p <= min(R, r):
            raise InvalidParameterError(f"private_rank must be in 0..min(budget_rank, rank) = {min(R, r)}, got {p}")
        if r > p and R == p:
            raise InvalidParameterError(
                f"private_rank = budget_rank = {R} leaves no shared shards for the other {r - p} rank vectors; "
                f"use rank={R} (plain LoRA) or a private_rank below {R}"
            )

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def check_shape(self, path: str, d_in: int, d_out: int) -> None:
        """Raise ``InvalidParameterError`` unless both sides of the layer cut into ``l`` shards."""
        l = self.shards_per_vector
        if d_in % l or d_out % l:
            raise InvalidParameterError(
                f"layer '{path}' is {d_in} -> {d_out}, not divisible into shards_per_vector={l} shards; "
                "choose a shards_per_vector that divides every adapted layer's input and output size"
            )

    def parameter_count(self, shapes: Sequence[tuple[int, int]]) -> int:
        """Trainable parameters of MoS on layers of these ``(d_in, d_out)`` shapes (pools + private).

        Equals :func:`lora_parameter_count` ``(shapes, budget_rank)`` by construction.
        """
        l, p = self.shards_per_vector, self.private_rank  # per layer: (R_eq - p)·l pooled + p·l private shards
        return sum(((self.budget_rank - p) * l + p * l) * ((d_in + d_out) // l) for d_in, d_out in shapes)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def lora_parameter_count(shapes: Sequence[tuple[int, int]], rank: int) -> int:
    """Parameters of a plain LoRA of ``rank`` on layers of these ``(d_in, d_out)`` shapes."""
    return sum(rank * (d_in + d_out) for d_in, d_out in shapes)


def assemble_factors(
    pool_A: torch.Tensor, pool_B: torch.Tensor, index_A: torch.Tensor, index_B: torch.Tensor,
    private_A: torch.Tensor, private_B: torch.Tensor, d_in: int, d_out: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's ``A (r, d_in)`` and ``B (d_out, r)``: ``l`` consecutive shards make a rank vector, private ones first."""
    A = torch.cat([private_A.reshape(-1, d_in), pool_A[index_A].reshape(-1, d_in)], dim=0)
    B = torch.cat([private_B.reshape(-1, d_out), pool_B[index_B].reshape(-1, d_out)], dim=0).T
    return A, B


class MosPool(nn.Module):
    """The shared A and B shard pools of one projection type (a module shared by its layers)."""

    def __init__(self, name: str, pool_A: torch.Tensor, pool_B: torch.Tensor, config: MosConfig, *, trainable: bool):
        super().__init__()
        self.name, self.config = name, config
        self.A = nn.Parameter(pool_A.detach().to(torch.float32).clone(), requires_grad=trainable)
        self.B = nn.Parameter(pool_B.detach().to(torch.float32).clone(), requires_grad=trainable)


class MosLinear(nn.Module):
    """An ``nn.Linear`` plus a MoS adapter: ``forward(x) = base(x) + (α/r)·(x Aᵀ) Bᵀ``.

    ``A``, ``B`` are assembled at every forward from the shared ``pool`` (the same module in every
    layer of the type; rows picked by the fixed ``index_A``/``index_B`` buffers, ``((r - p)·l,)``) and
    this layer's ``private_A (p·l, d_in/l)``/``private_B (p·l, d_out/l)``, so gradients reach the pools.
    ``base`` is kept as ``self.base`` and never modified; ``scale`` is ``alpha / r``.
    """

    def __init__(
        self, base: nn.Linear, pool: MosPool, index_A: torch.Tensor, index_B: torch.Tensor,
        private_A: torch.Tensor, private_B: torch.Tensor, scale: float, *, trainable: bool,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise UnsupportedAdapterError(f"MoS layers wrap nn.Linear only, got {type(base).__name__}")
        device = base.weight.device
        self.base, self.pool, self.scale = base, pool, float(scale)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.register_buffer("index_A", index_A.to(device, torch.long).clone())
        self.register_buffer("index_B", index_B.to(device, torch.long).clone())
        self.private_A = nn.Parameter(private_A.detach().to(device, torch.float32).clone(), requires_grad=trainable)
        self.private_B = nn.Parameter(private_B.detach().to(device, torch.float32).clone(), requires_grad=trainable)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The assembled ``A (r, d_in)`` and ``B (d_out, r)`` (with gradients)."""
        p = self.pool
        return assemble_factors(p.A, p.B, self.index_A, self.index_B, self.private_A, self.private_B,
                                self.in_features, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        A, B = self.factors()
        return out + (F.linear(F.linear(x.to(A.dtype), A), B) * self.scale).to(out.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, pool={self.pool.name!r}, rank={self.index_A.numel()}"


# ----------------------------------------------------------------------------- the compact form


@dataclass
class MosGroup:
    """One projection type: its shared pools and, per layer (in ``paths`` order), indices and private shards.

    ``name`` is the leaf name (``q_proj``), or ``leaf.<d_in>x<d_out>`` when a leaf name has several
    shapes (BERT's ``dense``). Shapes, with ``n = (R_eq - p)·L·l`` shared shards: ``pool_A (n, d_in/l)``,
    ``pool_B (n, d_out/l)``, ``index_A``/``index_B (L, (r - p)·l)`` int64, ``private_A (L, p·l, d_in/l)``,
    ``private_B (L, p·l, d_out/l)``.
    """

    name: str
    d_in: int
    d_out: int
    paths: list[str]
    pool_A: torch.Tensor
    pool_B: torch.Tensor
    index_A: torch.Tensor
    index_B: torch.Tensor
    private_A: torch.Tensor
    private_B: torch.Tensor

    def parameter_count(self) -> int:
        return sum(t.numel() for t in (self.pool_A, self.pool_B, self.private_A, self.private_B))


_GROUP_TENSORS = ("pool_A", "pool_B", "index_A", "index_B", "private_A", "private_B")


@dataclass
class MosPools:
    """A MoS adapter in its compact form: per projection type, pools + indices + private shards.

    ``to_tensors()`` gives ``({name: tensor}, JSON-able metadata)`` for safetensors (no pickle);
    ``assemble()`` gives the plain per-layer PEFT LoRA of rank ``r``.
    """

    config: MosConfig
    groups: dict[str, MosGroup]
    base_model: str | None = None
    task_type: str | None = None
    exclude_modules: list[str] = field(default_factory=list)

    def parameter_count(self) -> int:
        return sum(g.parameter_count() for g in self.groups.values())

    def shapes(self) -> list[tuple[int, int]]:
        return [(g.d_in, g.d_out) for g in self.groups.values() for _ in g.paths]

    def modules(self) -> dict[str, LoraModule]:
        """Each adapted layer as a rank-``r`` ``LoraModule`` (scale ``alpha / r``)."""
        out = {}
        for g in self.groups.values():
            for i, path in enumerate(g.paths):
                A, B = assemble_factors(g.pool_A, g.pool_B, g.index_A[i], g.index_B[i], g.private_A[i],
                                        g.private_B[i], g.d_in, g.d_out)
                out[path] = LoraModule(A=A.detach().clone(), B=B.detach().contiguous(), scale=self.config.scale)
        return dict(sorted(out.items()))

    def assemble(self, *, base_model: str | None = None, task_type: str | None = None) -> LoraAdapter:
        """The plain per-layer PEFT LoRA of rank ``r`` (as the official ``save_tied_lora`` writes).

        ``target_modules`` are the adapted leaf names; layers those names would also select but MoS
        did not adapt (BERT's ``pooler.dense``) go to ``exclude_modules``, so PEFT builds the same
        layers. ``base_model``/``task_type`` override the recorded ones (``CAUSAL_LM`` on a Llama).
        """
        overrides: dict[str, object] = {}
        if task_type or self.task_type:
            overrides["task_type"] = task_type or self.task_type
        if self.exclude_modules:
            overrides["exclude_modules"] = list(self.exclude_modules)
        modules = self.modules()
        return LoraAdapter.from_modules(
            modules, base_model=base_model or self.base_model,
            target_modules=sorted({p.rsplit(".", 1)[-1] for p in modules}), config_overrides=overrides or None,
        )

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """``({"<group>.<pool_A|pool_B|index_A|index_B|private_A|private_B>": tensor}, metadata)``."""
        groups = self.groups.values()
        tensors = {f"{g.name}.{k}": getattr(g, k).detach().contiguous().clone() for g in groups for k in _GROUP_TENSORS}
        meta = {
            "format": MOS_FORMAT, "format_version": MOS_FORMAT_VERSION, "config": self.config.to_json(),
            "base_model": self.base_model, "task_type": self.task_type, "exclude_modules": list(self.exclude_modules),
            "groups": [{"name": g.name, "d_in": g.d_in, "d_out": g.d_out, "paths": list(g.paths)} for g in groups],
        }
        return tensors, meta

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> "MosPools":
        """Rebuild from ``to_tensors()`` output; ``InvalidAdapterError`` on any bad format, config,
        shape, dtype, NaN/Inf or index outside its pool."""
        if meta.get("format") != MOS_FORMAT or meta.get("format_version") != MOS_FORMAT_VERSION:
            raise InvalidAdapterError(f"not a MoS pool set: format {meta.get('format')!r} v{meta.get('format_version')!r}, "
                                      f"expected {MOS_FORMAT!r} v{MOS_FORMAT_VERSION}")
        try:
            config = MosConfig(**meta["config"])
            specs = [(str(s["name"]), int(s["d_in"]), int(s["d_out"]), [str(p) for p in s["paths"]]) for s in meta["groups"]]
            for _, d_in, d_out, paths in specs:
                config.check_shape(paths[0], d_in, d_out)
        except (InvalidParameterError, KeyError, IndexError, TypeError, ValueError) as e:
            raise InvalidAdapterError(f"MoS pool metadata is malformed: {e}") from e
        R, r, l, p = config.budget_rank, config.rank, config.shards_per_vector, config.private_rank
        groups = {}
        for name, d_in, d_out, paths in specs:
            L, n = len(paths), (R - p) * len(paths) * l
            expected = {"pool_A": (n, d_in // l), "pool_B": (n, d_out // l), "index_A": (L, (r - p) * l),
                        "index_B": (L, (r - p) * l), "private_A": (L, p * l, d_in // l), "private_B": (L, p * l, d_out // l)}
            parts = {}
            for k, shape in expected.items():
                key, t = f"{name}.{k}", tensors.get(f"{name}.{k}")
                if t is None or tuple(t.shape) != shape:
                    found = "missing" if t is None else f"shape {tuple(t.shape)}"
                    raise InvalidAdapterError(f"MoS pools lack tensor '{key}' of shape {shape} ({found})", path=key)
                if k.startswith("index") and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
                    raise InvalidAdapterError(f"MoS index '{key}' must be integer, got {t.dtype}", path=key)
                if k.startswith("index") and t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
                    raise InvalidAdapterError(
                        f"MoS index '{key}' has values in [{int(t.min())}, {int(t.max())}] but its pool has {n} shards "
                        f"(valid: 0..{n - 1}); the pool file is corrupt", path=key)
                if not k.startswith("index") and (not t.is_floating_point() or not bool(torch.isfinite(t).all())):
                    raise InvalidAdapterError(f"MoS tensor '{key}' must hold finite floats", path=key)
                parts[k] = t.to(torch.long if k.startswith("index") else torch.float32)
            groups[name] = MosGroup(name=name, d_in=d_in, d_out=d_out, paths=paths, **parts)
        return cls(config=config, groups=groups, base_model=meta.get("base_model"), task_type=meta.get("task_type"),
                   exclude_modules=list(meta.get("exclude_modules") or []))


# ----------------------------------------------------------------------------- on a model


def _targets(model: nn.Module, config: MosConfig) -> list[str]:
    """Paths of the plain ``nn.Linear`` layers ``config`` selects; refuses layers already adapted."""
    targets = config.target_modules if config.target_modules is not None else DEFAULT_TARGET_MODULES
    paths = []
    for path in find_target_linears(model, targets, config.exclude_modules):
        layer = model.get_submodule(path)
        if isinstance(layer, LoraLinear):
            raise UnsupportedAdapterError(f"layer '{path}' already holds LoRA adapters; MoS installs on a bare model")
        parent = path.rpartition(".")[0]
        if isinstance(model.get_submodule(parent) if parent else model, MosLinear):
            raise UnsupportedAdapterError(f"layer '{parent}' already holds a MoS adapter")
        paths.append(path)
    if not paths:
        raise InvalidParameterError(f"target_modules={targets!r} selects no linear layer of this model")
    return paths


def _also_selected(model: nn.Module, paths: Sequence[str]) -> list[str]:
    """Linear layers the adapted leaf names would select in PEFT that MoS did not adapt."""
    leaves = sorted({p.rsplit(".", 1)[-1] for p in paths})
    return [p for p in find_target_linears(model, leaves, None) if p not in set(paths)]


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _draw(n: int, pool: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` pool rows, without repetition while the pool is large enough (then permutation after permutation)."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    chunks = [torch.randperm(pool, generator=generator) for _ in range(math.ceil(n / pool))]
    return torch.cat(chunks)[:n]


def init_pools(model: nn.Module, config: MosConfig) -> MosPools:
    """Fresh MoS pools for the layers ``config`` selects (does not change ``model``); deterministic in
    ``config.seed``. Raises ``InvalidParameterError`` (nothing selected, a size not divisible by ``l``)
    or ``UnsupportedAdapterError`` (a selected layer already holds adapters)."""
    R, r, l, p = config.budget_rank, config.rank, config.shards_per_vector, config.private_rank
    by_key: dict[tuple[str, int, int], list[str]] = {}
    for path in _targets(model, config):
        layer = model.get_submodule(path)
        config.check_shape(path, layer.in_features, layer.out_features)
        by_key.setdefault((path.rsplit(".", 1)[-1], layer.in_features, layer.out_features), []).append(path)
    leaves = [leaf for leaf, _, _ in by_key]
    g = torch.Generator().manual_seed(config.seed)
    groups = {}
    for (leaf, d_in, d_out), paths in by_key.items():
        name = leaf if leaves.count(leaf) == 1 else f"{leaf}.{d_in}x{d_out}"
        L, n_shared, bound = len(paths), (R - p) * len(paths) * l, 1.0 / math.sqrt(d_in)
        pool_A = torch.empty(n_shared, d_in // l).uniform_(-bound, bound, generator=g)
        private_A = torch.empty(L, p * l, d_in // l)
        index_A = torch.empty(L, (r - p) * l, dtype=torch.long)
        index_B = torch.empty(L, (r - p) * l, dtype=torch.long)
        for i in range(L):
            private_A[i].uniform_(-bound, bound, generator=g)
            index_A[i] = _draw((r - p) * l, n_shared, g)
            index_B[i] = _draw((r - p) * l, n_shared, g)
        groups[name] = MosGroup(
            name=name, d_in=d_in, d_out=d_out, paths=paths, pool_A=pool_A, pool_B=torch.zeros(n_shared, d_out // l),
            index_A=index_A, index_B=index_B, private_A=private_A, private_B=torch.zeros(L, p * l, d_out // l),
        )
    paths = [p for grp in groups.values() for p in grp.paths]
    return MosPools(config=config, groups=groups, exclude_modules=_also_selected(model, paths))


def attach_pools(model: nn.Module, pools: MosPools, *, trainable: bool = False) -> list[str]:
    """Wrap every layer ``pools`` adapts in a :class:`MosLinear` reading copies of its tensors. Mutates ``model``.

    Nothing is changed unless every path names an ``nn.Linear`` of the right shape.

    Returns the wrapped paths. Raises ``InvalidAdapterError`` if a path is missing or its shape differs.
    """
    for grp in pools.groups.values():
        for path in grp.paths:
            try:
                layer = model.get_submodule(path)
            except AttributeError as e:
                raise InvalidAdapterError(f"MoS pools adapt '{path}', which this model does not have") from e
            if not isinstance(layer, nn.Linear) or (layer.in_features, layer.out_features) != (grp.d_in, grp.d_out):
                raise InvalidAdapterError(f"MoS pools adapt '{path}' as an nn.Linear {grp.d_in} -> {grp.d_out}, but the "
                                          f"model has {layer!r}; use pools trained for this base model")
    wrapped = []
    for grp in pools.groups.values():
        device = model.get_submodule(grp.paths[0]).weight.device
        pool = MosPool(grp.name, grp.pool_A, grp.pool_B, pools.config, trainable=trainable).to(device)
        for i, path in enumerate(grp.paths):
            _replace(model, path, MosLinear(model.get_submodule(path), pool, grp.index_A[i], grp.index_B[i],
                                            grp.private_A[i], grp.private_B[i], pools.config.scale, trainable=trainable))
            wrapped.append(path)
    return wrapped


def install_mos(model: nn.Module, config: MosConfig) -> MosPools:
    """Install a fresh, trainable MoS adapter (``init_pools`` + ``attach_pools``). Mutates ``model``.

    Only the new pools and private shards require gradients; the caller freezes the rest. Returns the
    initial pools (copies; read the live ones with :func:`pools_from_model`).
    """
    pools = init_pools(model, config)
    attach_pools(model, pools, trainable=True)
    return pools


def mos_layers(model: nn.Module) -> Iterator[tuple[str, MosLinear]]:
    """Every ``MosLinear`` in the model with its path (the path of the layer it replaced)."""
    yield from ((path, m) for path, m in model.named_modules() if isinstance(m, MosLinear))


def mos_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The distinct MoS parameters of the model (each shared pool once, then private shards)."""
    params = [p for _, m in mos_layers(model) for p in (m.pool.A, m.pool.B, m.private_A, m.private_B)]
    return list({id(p): p for p in params}.values())


def remove_mos(model: nn.Module) -> nn.Module:
    """Put every wrapped ``nn.Linear`` back, dropping the MoS adapter. Mutates and returns ``model``."""
    for path, layer in list(mos_layers(model)):
        _replace(model, path, layer.base)
    return model


@contextlib.contextmanager
def mos_installed(model: nn.Module, config_or_pools: MosConfig | MosPools, *, trainable: bool = True) -> Iterator[list[str]]:
    """Install MoS (fresh from a config, or stored pools) for a ``with`` block, then restore ``model``.

    Layers wrapped here are unwrapped on exit, even after an error; MoS layers that were there
    before are kept. Yields the wrapped paths.
    """
    before = {path for path, _ in mos_layers(model)}
    try:
        if isinstance(config_or_pools, MosConfig):
            install_mos(model, config_or_pools) if trainable else attach_pools(model, init_pools(model, config_or_pools))
        else:
            attach_pools(model, config_or_pools, trainable=trainable)
        yield [path for path, _ in mos_layers(model) if path not in before]
    finally:
        for path, layer in list(mos_layers(model)):
            if path not in before:
                _replace(model, path, layer.base)


def pools_from_model(
    model: nn.Module, *, base_model: str | None = None, task_type: str | None = None, config: MosConfig | None = None
) -> MosPools:
    """The compact form of the MoS adapter in ``model`` (copies); ``config`` defaults to the installed one.
    Raises ``InvalidParameterError`` if the model holds no MoS layer."""
    layers = list(mos_layers(model))
    if not layers:
        raise InvalidParameterError("the model holds no MoS adapter; install one with install_mos")
    by_pool: dict[int, list[tuple[str, MosLinear]]] = {}
    for path, layer in layers:
        by_pool.setdefault(id(layer.pool), []).append((path, layer))
    groups = {}
    for members in by_pool.values():
        first, lay = members[0][1], [m for _, m in members]
        stack = {k: torch.stack([getattr(m, k).detach() for m in lay]).cpu() for k in _GROUP_TENSORS[2:]}
        groups[first.pool.name] = MosGroup(
            name=first.pool.name, d_in=first.in_features, d_out=first.out_features, paths=[p for p, _ in members],
            pool_A=first.pool.A.detach().cpu().clone(), pool_B=first.pool.B.detach().cpu().clone(), **stack,
        )
    return MosPools(config=config or layers[0][1].pool.config, groups=groups, base_model=base_model, task_type=task_type,
                    exclude_modules=_also_selected(model, [p for p, _ in layers]))


def export_lora(
    source: nn.Module | MosPools, *, base_model: str | None = None, task_type: str | None = None
) -> LoraAdapter:
    """The MoS adapter as a plain per-layer PEFT LoRA of rank ``r`` (each layer's assembled A, B).

    ``source`` is a model holding MoS layers (the object PEFT will wrap, e.g. ``BaseModel.model``) or
    a :class:`MosPools`; ``base_model`` and ``task_type`` (``"CAUSAL_LM"`` on a Llama) go to the config.
    """
    pools = source if isinstance(source, MosPools) else pools_from_model(source)
    return pools.assemble(base_model=base_model, task_type=task_type)
