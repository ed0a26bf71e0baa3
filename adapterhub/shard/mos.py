"""MoS (Mixture-of-Shards) LoRA: low-rank factors assembled from pools of shards shared across layers.

Wang et al., ICLR 2025, "MoS: Unleashing Parameter Efficiency of Low-Rank Adaptation with Mixture
of Shards" (official code ``Forence1999/MoS``, ``modules/Tied_LoRA.py``). Per *projection type*
(all ``query`` layers, all ``q_proj`` layers; one group per leaf name and shape) there is one A pool
and one B pool shared by every layer of that type:

* **vector sharding**: a rank vector is cut into ``l`` shards, an A row (``d_in``) into ``l`` shards of
  ``d_in/l`` and a B column (``d_out``) into ``l`` shards of ``d_out/l``;
* **subset selection**: each layer's ``r - p`` shared rank vectors are ``(r - p)·l`` shards drawn from
  the pool by a fixed random index (without repetition inside a layer while the pool allows it);
* **pair dissociation**: A and B draw separate indices;
* **shard privatization**: each layer also owns ``p`` private rank vectors (``p·l`` shards of each
  kind) that no other layer reads. They are taken out of the budget: the shared pools hold
  ``(R_eq - p)·L·l`` shards, so pools plus private shards are ``N = R_eq·L·l`` shards per kind and
  the trainable parameter count equals that of a LoRA of rank ``R_eq`` on the same layers.

The assembled per-layer LoRA has rank ``r`` (``p`` private rank vectors first, then ``r - p``
shared ones) and the forward is PEFT's: ``h = W x + (α/r)·B·A·x``. With ``p = r = R_eq`` every
rank vector is private, the pools are empty and MoS *is* a plain LoRA of rank ``R_eq`` (the
paper's consistency check), by construction.

The "router" of the official code is not a learned gate: it is the fixed random index drawn once
from ``seed`` at initialisation; only the pool and private shards are trained. That is what this
module implements.

Init as PEFT: A shards ``U(-1/√d_in, 1/√d_in)`` (Kaiming-uniform with ``a=√5``), B shards zeros.

Forms: on a model (:func:`install_mos` / :func:`mos_installed`, :class:`MosLinear` layers), the
compact storage form :class:`MosPools` (pools + indices + private shards, safetensors-friendly
via ``to_tensors``/``from_tensors``), and the plain per-layer PEFT LoRA of rank ``r`` that
:func:`export_lora` writes (as the official ``save_tied_lora`` does), which every PEFT consumer loads.

Mutation: :func:`install_mos`, :func:`attach_pools` and :func:`remove_mos` change the model in
place (they say so); :func:`mos_installed` undoes its own changes on exit, even after an error.
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
        budget_rank: ``R_eq``, the LoRA rank whose parameter count MoS matches (default 2).
        rank: ``r``, the rank of each layer's assembled LoRA (default 8); scale ``alpha / r``.
        shards_per_vector: ``l``, shards per rank vector; every adapted ``d_in`` and ``d_out`` must be
            divisible by it (default 2).
        private_rank: ``p``, private rank vectors per layer, ``0 <= p <= min(R_eq, r)`` (default 1).
        alpha: LoRA alpha (default 16).
        target_modules: PEFT-style layer selection (``None``: BERT's q/k/v/dense; the trainer picks
            the seven Llama projections for a causal LM).
        exclude_modules: PEFT-style exclusion (default: BERT's pooler).
        seed: fixes the shard indices and the init.

    Raises:
        InvalidParameterError: a size is not positive, ``p`` is out of range, or ``r > p`` while
            the shared pools would be empty (``p == R_eq``).
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
            raise InvalidParameterError(
                f"budget_rank, rank, shards_per_vector and alpha must be positive, got budget_rank={R}, "
                f"rank={r}, shards_per_vector={l}, alpha={self.alpha}"
            )
        if not 0 <= p <= min(R, r):
            raise InvalidParameterError(
                f"private_rank must be between 0 and min(budget_rank, rank) = {min(R, r)}, got {p}"
            )
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
        l, p = self.shards_per_vector, self.private_rank
        groups: dict[tuple[int, int], int] = {}
        for shape in shapes:
            groups[shape] = groups.get(shape, 0) + 1
        total = 0
        for (d_in, d_out), n_layers in groups.items():
            shard_size = (d_in + d_out) // l
            total += (self.budget_rank - p) * n_layers * l * shard_size + n_layers * p * l * shard_size
        return total

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        for name in ("target_modules", "exclude_modules"):
            if isinstance(out[name], tuple):
                out[name] = list(out[name])
        return out


def lora_parameter_count(shapes: Sequence[tuple[int, int]], rank: int) -> int:
    """Parameters of a plain LoRA of ``rank`` on layers of these ``(d_in, d_out)`` shapes."""
    return sum(rank * (d_in + d_out) for d_in, d_out in shapes)


def assemble_factors(
    pool_A: torch.Tensor, pool_B: torch.Tensor, index_A: torch.Tensor, index_B: torch.Tensor,
    private_A: torch.Tensor, private_B: torch.Tensor, d_in: int, d_out: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's ``A (r, d_in)`` and ``B (d_out, r)`` from its shards: private rank vectors first.

    ``l`` consecutive shards (of the private block, or picked by the index) make one rank vector.
    """
    A = torch.cat([private_A.reshape(-1, d_in), pool_A[index_A].reshape(-1, d_in)], dim=0)
    B = torch.cat([private_B.reshape(-1, d_out), pool_B[index_B].reshape(-1, d_out)], dim=0).T
    return A, B


class MosPool(nn.Module):
    """The shared A and B shard pools of one projection type (a module shared by its layers)."""

    def __init__(
        self, name: str, pool_A: torch.Tensor, pool_B: torch.Tensor, config: MosConfig, *, trainable: bool
    ) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.A = nn.Parameter(pool_A.detach().to(torch.float32).clone(), requires_grad=trainable)
        self.B = nn.Parameter(pool_B.detach().to(torch.float32).clone(), requires_grad=trainable)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, A={tuple(self.A.shape)}, B={tuple(self.B.shape)}"


class MosLinear(nn.Module):
    """An ``nn.Linear`` plus a MoS adapter: ``forward(x) = base(x) + (α/r)·(x Aᵀ) Bᵀ``.

    ``A`` and ``B`` are assembled at every forward from the shared ``pool`` (picked by the fixed
    ``index_A``/``index_B`` buffers) and this layer's ``private_A``/``private_B`` shards, so
    gradients flow into the shared pools.

    Args:
        base: the wrapped layer; kept as ``self.base`` and never modified.
        pool: the projection type's shared pools (the same module object in every layer of the type).
        index_A, index_B: ``((r - p)·l,)`` pool rows this layer reads.
        private_A, private_B: ``(p·l, d_in/l)`` and ``(p·l, d_out/l)`` private shards.
        scale: ``alpha / r``.
    """

    def __init__(
        self, base: nn.Linear, pool: MosPool, index_A: torch.Tensor, index_B: torch.Tensor,
        private_A: torch.Tensor, private_B: torch.Tensor, scale: float, *, trainable: bool,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise UnsupportedAdapterError(f"MoS layers wrap nn.Linear only, got {type(base).__name__}")
        device = base.weight.device
        self.base = base
        self.pool = pool
        self.register_buffer("index_A", index_A.to(device, torch.long).clone())
        self.register_buffer("index_B", index_B.to(device, torch.long).clone())
        self.private_A = nn.Parameter(private_A.detach().to(device, torch.float32).clone(), requires_grad=trainable)
        self.private_B = nn.Parameter(private_B.detach().to(device, torch.float32).clone(), requires_grad=trainable)
        self.scale = float(scale)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The assembled ``A (r, d_in)`` and ``B (d_out, r)`` (with gradients)."""
        return assemble_factors(
            self.pool.A, self.pool.B, self.index_A, self.index_B, self.private_A, self.private_B,
            self.in_features, self.out_features,
        )

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

    Attributes:
        name: the group key (the leaf name, e.g. ``q_proj``; ``leaf.<d_in>x<d_out>`` when one leaf
            name has several shapes, as BERT's ``dense``).
        d_in, d_out: the layers' shape.
        paths: the adapted module paths.
        pool_A, pool_B: ``(n_shared, d_in/l)`` and ``(n_shared, d_out/l)``, ``n_shared = (R_eq - p)·L·l``.
        index_A, index_B: ``(L, (r - p)·l)`` int64 pool rows.
        private_A, private_B: ``(L, p·l, d_in/l)`` and ``(L, p·l, d_out/l)``.
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

    ``to_tensors()`` gives ``({name: tensor}, metadata)`` for a safetensors file (the metadata is
    JSON-able; store it e.g. as ``{"mos": json.dumps(meta)}``); no pickle anywhere. ``assemble()``
    gives the plain per-layer PEFT LoRA of rank ``r``.
    """

    config: MosConfig
    groups: dict[str, MosGroup]
    base_model: str | None = None
    task_type: str | None = None
    exclude_modules: list[str] = field(default_factory=list)

    @property
    def module_paths(self) -> list[str]:
        return sorted(p for g in self.groups.values() for p in g.paths)

    def parameter_count(self) -> int:
        return sum(g.parameter_count() for g in self.groups.values())

    def shapes(self) -> list[tuple[int, int]]:
        return [(g.d_in, g.d_out) for g in self.groups.values() for _ in g.paths]

    def modules(self) -> dict[str, LoraModule]:
        """Each adapted layer as a rank-``r`` ``LoraModule`` (scale ``alpha / r``)."""
        out = {}
        for g in self.groups.values():
            for i, path in enumerate(g.paths):
                A, B = assemble_factors(
                    g.pool_A, g.pool_B, g.index_A[i], g.index_B[i], g.private_A[i], g.private_B[i], g.d_in, g.d_out
                )
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
        tensors = {
            f"{g.name}.{k}": getattr(g, k).detach().contiguous().clone() for g in self.groups.values() for k in _GROUP_TENSORS
        }
        meta = {
            "format": MOS_FORMAT, "format_version": MOS_FORMAT_VERSION, "config": self.config.to_json(),
            "base_model": self.base_model, "task_type": self.task_type, "exclude_modules": list(self.exclude_modules),
            "groups": [{"name": g.name, "d_in": g.d_in, "d_out": g.d_out, "paths": list(g.paths)} for g in self.groups.values()],
        }
        return tensors, meta

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> "MosPools":
        """Rebuild from ``to_tensors()`` output, checking every shape, dtype and index.

        Raises:
            InvalidAdapterError: wrong format, a bad config, a missing or misshapen tensor, NaN/Inf,
                or an index outside its pool.
        """
        if meta.get("format") != MOS_FORMAT or meta.get("format_version") != MOS_FORMAT_VERSION:
            raise InvalidAdapterError(
                f"not a MoS pool set (format {meta.get('format')!r} v{meta.get('format_version')!r}); "
                f"expected {MOS_FORMAT!r} v{MOS_FORMAT_VERSION}"
            )
        try:
            config = MosConfig(**meta["config"])
            specs = [(str(s["name"]), int(s["d_in"]), int(s["d_out"]), [str(p) for p in s["paths"]]) for s in meta["groups"]]
        except (InvalidParameterError, KeyError, TypeError, ValueError) as e:
            raise InvalidAdapterError(f"MoS pool metadata is malformed: {e}") from e
        R, r, l, p = config.budget_rank, config.rank, config.shards_per_vector, config.private_rank
        groups = {}
        for name, d_in, d_out, paths in specs:
            try:
                for path in paths:
                    config.check_shape(path, d_in, d_out)
            except InvalidParameterError as e:
                raise InvalidAdapterError(str(e)) from e
            L, n_shared = len(paths), (R - p) * len(paths) * l
            expected = {
                "pool_A": (n_shared, d_in // l), "pool_B": (n_shared, d_out // l),
                "index_A": (L, (r - p) * l), "index_B": (L, (r - p) * l),
                "private_A": (L, p * l, d_in // l), "private_B": (L, p * l, d_out // l),
            }
            parts = {}
            for k, shape in expected.items():
                key = f"{name}.{k}"
                t = tensors.get(key)
                if t is None:
                    raise InvalidAdapterError(f"MoS pools lack tensor '{key}'", path=key)
                if tuple(t.shape) != shape:
                    raise InvalidAdapterError(f"MoS tensor '{key}' has shape {tuple(t.shape)}, expected {shape}", path=key)
                if k.startswith("index"):
                    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                        raise InvalidAdapterError(f"MoS index '{key}' must be integer, got {t.dtype}", path=key)
                    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_shared):
                        raise InvalidAdapterError(
                            f"MoS index '{key}' has values in [{int(t.min())}, {int(t.max())}] but its pool has "
                            f"{n_shared} shards (valid: 0..{n_shared - 1}); the pool file is corrupt", path=key,
                        )
                    t = t.to(torch.long)
                elif not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                    raise InvalidAdapterError(f"MoS tensor '{key}' must be finite floats", path=key)
                parts[k] = t.to(torch.float32) if not k.startswith("index") else t
            groups[name] = MosGroup(name=name, d_in=d_in, d_out=d_out, paths=paths, **parts)
        return cls(
            config=config, groups=groups, base_model=meta.get("base_model"), task_type=meta.get("task_type"),
            exclude_modules=list(meta.get("exclude_modules") or []),
        )


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
            raise UnsupportedAdapterError(f"layer '{path.rpartition('.')[0]}' already holds a MoS adapter")
        paths.append(path)
    if not paths:
        raise InvalidParameterError(
            f"target_modules={targets!r} selects no linear layer of this model; pass names of nn.Linear modules"
        )
    return paths


def _also_selected(model: nn.Module, paths: Sequence[str]) -> list[str]:
    """Linear layers the adapted leaf names would select in PEFT that MoS did not adapt."""
    leaves = sorted({p.rsplit(".", 1)[-1] for p in paths})
    adapted = set(paths)
    return [p for p in find_target_linears(model, leaves, None) if p not in adapted]


def _draw(n: int, pool: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` pool rows, without repetition while the pool is large enough (then permutation after permutation)."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    chunks = [torch.randperm(pool, generator=generator) for _ in range(math.ceil(n / pool))]
    return torch.cat(chunks)[:n]


def init_pools(model: nn.Module, config: MosConfig) -> MosPools:
    """Fresh MoS pools for the layers ``config`` selects in ``model`` (does not change ``model``).

    Deterministic in ``config.seed``: groups in model order, each drawing its A pool, B pool
    (zeros), then per layer its private A shards and its A and B indices.

    Raises:
        InvalidParameterError: nothing selected, or a layer size not divisible by ``l``.
        UnsupportedAdapterError: a selected layer already holds adapters.
    """
    R, r, l, p = config.budget_rank, config.rank, config.shards_per_vector, config.private_rank
    by_key: dict[tuple[str, int, int], list[str]] = {}
    for path in _targets(model, config):
        layer = model.get_submodule(path)
        config.check_shape(path, layer.in_features, layer.out_features)
        by_key.setdefault((path.rsplit(".", 1)[-1], layer.in_features, layer.out_features), []).append(path)
    shapes_per_leaf: dict[str, int] = {}
    for leaf, _, _ in by_key:
        shapes_per_leaf[leaf] = shapes_per_leaf.get(leaf, 0) + 1
    g = torch.Generator().manual_seed(config.seed)
    groups = {}
    for (leaf, d_in, d_out), paths in by_key.items():
        name = leaf if shapes_per_leaf[leaf] == 1 else f"{leaf}.{d_in}x{d_out}"
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

    Returns:
        The wrapped paths.

    Raises:
        InvalidAdapterError: a path is missing from the model or its shape differs.
    """
    for grp in pools.groups.values():
        for path in grp.paths:
            try:
                layer = model.get_submodule(path)
            except AttributeError as e:
                raise InvalidAdapterError(f"MoS pools adapt '{path}', which this model does not have") from e
            if not isinstance(layer, nn.Linear) or (layer.in_features, layer.out_features) != (grp.d_in, grp.d_out):
                raise InvalidAdapterError(
                    f"MoS pools adapt '{path}' as an nn.Linear {grp.d_in} -> {grp.d_out}, but the model has "
                    f"{layer!r}; use pools trained for this base model"
                )
    wrapped = []
    for grp in pools.groups.values():
        pool = MosPool(grp.name, grp.pool_A, grp.pool_B, pools.config, trainable=trainable).to(
            model.get_submodule(grp.paths[0]).weight.device
        )
        for i, path in enumerate(grp.paths):
            layer = MosLinear(
                model.get_submodule(path), pool, grp.index_A[i], grp.index_B[i], grp.private_A[i], grp.private_B[i],
                pools.config.scale, trainable=trainable,
            )
            parent, _, leaf = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, layer)
            wrapped.append(path)
    return wrapped


def install_mos(model: nn.Module, config: MosConfig) -> MosPools:
    """Install a fresh, trainable MoS adapter (``init_pools`` + ``attach_pools``). Mutates ``model``.

    Only the new pools and private shards require gradients; the caller freezes the rest.

    Returns:
        The initial pools (copies; the live ones are in the model, read them with :func:`pools_from_model`).
    """
    pools = init_pools(model, config)
    attach_pools(model, pools, trainable=True)
    return pools


def mos_layers(model: nn.Module) -> Iterator[tuple[str, MosLinear]]:
    """Every ``MosLinear`` in the model with its path (the path of the layer it replaced)."""
    for path, module in model.named_modules():
        if isinstance(module, MosLinear):
            yield path, module


def mos_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The distinct MoS parameters of the model (each shared pool once, then private shards)."""
    seen: dict[int, nn.Parameter] = {}
    for _, layer in mos_layers(model):
        for p in (layer.pool.A, layer.pool.B, layer.private_A, layer.private_B):
            seen.setdefault(id(p), p)
    return list(seen.values())


def remove_mos(model: nn.Module) -> nn.Module:
    """Put every wrapped ``nn.Linear`` back, dropping the MoS adapter. Mutates and returns ``model``."""
    for path, layer in list(mos_layers(model)):
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, layer.base)
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
                parent, _, leaf = path.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, leaf, layer.base)


def pools_from_model(
    model: nn.Module, *, base_model: str | None = None, task_type: str | None = None, config: MosConfig | None = None
) -> MosPools:
    """The compact form of the MoS adapter installed in ``model`` (copies; does not change ``model``).

    ``config`` defaults to the one the layers were installed with.

    Raises:
        InvalidParameterError: the model holds no MoS layer.
    """
    layers = list(mos_layers(model))
    if not layers:
        raise InvalidParameterError("the model holds no MoS adapter; install one with install_mos")
    by_pool: dict[int, list[tuple[str, MosLinear]]] = {}
    for path, layer in layers:
        by_pool.setdefault(id(layer.pool), []).append((path, layer))
    groups = {}
    for members in by_pool.values():
        pool = members[0][1].pool
        lay = [m for _, m in members]
        groups[pool.name] = MosGroup(
            name=pool.name, d_in=lay[0].in_features, d_out=lay[0].out_features, paths=[p for p, _ in members],
            pool_A=pool.A.detach().clone(), pool_B=pool.B.detach().clone(),
            index_A=torch.stack([m.index_A for m in lay]).cpu(), index_B=torch.stack([m.index_B for m in lay]).cpu(),
            private_A=torch.stack([m.private_A.detach() for m in lay]).cpu(),
            private_B=torch.stack([m.private_B.detach() for m in lay]).cpu(),
        )
    config = config or layers[0][1].pool.config
    all_paths = [p for p, _ in layers]
    return MosPools(
        config=config, groups=groups, base_model=base_model, task_type=task_type,
        exclude_modules=_also_selected(model, all_paths),
    )


def export_lora(
    source: nn.Module | MosPools, *, base_model: str | None = None, task_type: str | None = None
) -> LoraAdapter:
    """The MoS adapter as a plain per-layer PEFT LoRA of rank ``r`` (each layer's assembled A, B).

    Args:
        source: a model holding MoS layers (pass the object PEFT will wrap, e.g. ``BaseModel.model``)
            or a :class:`MosPools`.
        base_model: recorded as ``base_model_name_or_path``.
        task_type: e.g. ``"CAUSAL_LM"`` for a Llama (kept in the PEFT config).
    """
    pools = source if isinstance(source, MosPools) else pools_from_model(source)
    return pools.assemble(base_model=base_model, task_type=task_type)
