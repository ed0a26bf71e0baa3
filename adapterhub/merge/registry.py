"""Merge methods as declared data: a name, a description, a paper, typed parameters, a function.

Each method's parameters are a frozen pydantic model with ``extra="forbid"``, so the CLI flags,
the HTTP schema and the docs are generated from one source (``list_methods``), and a typo fails
when the request is parsed, naming the valid choices, instead of silently falling back to a
default. The registry is an explicit list (``methods.MERGE_METHODS``); registering a name twice
raises.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from adapterhub.errors import InvalidParameterError
from adapterhub.merge.base import ModuleMergeFn
from adapterhub.merge.params import is_numeric, value_range

DefaultWeights = Literal["uniform", "ones"]
Seeded = Literal["never", "always", "below_total_rank"]

WEIGHT_CONVENTIONS: dict[str, str] = {"avg": "1/n", "sqrt": "1/√n", "sum": "1"}
"""Weight conventions for ``n`` inputs (key -> how it prints): every input weighs ``1/n`` (an
average), ``1/sqrt(n)`` (between the two; keeps the norm of a sum of orthogonal deltas) or ``1``
(a sum). The methods' own defaults are ``avg`` (``default_weights="uniform"``) or ``sum``."""


def convention_weights(convention: str, n: int) -> list[float]:
    """The weights of ``n`` inputs under a convention of ``WEIGHT_CONVENTIONS``.

    Raises:
        InvalidParameterError: unknown convention.
    """
    if convention == "avg":
        return [1.0 / n] * n
    if convention == "sqrt":
        return [1.0 / math.sqrt(n)] * n
    if convention == "sum":
        return [1.0] * n
    raise InvalidParameterError(
        f"unknown weight convention {convention!r}; choose one of {', '.join(WEIGHT_CONVENTIONS)}"
    )


@dataclass(frozen=True)
class MergeMethod:
    """One merge method.

    Attributes:
        name: the registry key (``adapterhub merge --method NAME``).
        description: one paragraph for ``adapterhub methods``; says how weights default.
        reference_url: the paper or reference implementation the method follows.
        params: pydantic model of the method's parameters (frozen, ``extra="forbid"``).
        default_weights: ``"uniform"`` (``1/n``, averaging methods) or ``"ones"`` (sums).
        merge_module: the per-module function (see ``base.ModuleMergeFn``).
        seeded: whether ``seed`` can change the result: ``"never"`` (deterministic; the dense
            methods' randomised rank-k refit, used only for layers wider than 1024 or with
            ``refit="randomized"``, is the one exception), ``"always"`` (random drops), or
            ``"below_total_rank"`` (random clustering, only when ``k`` is below a module's total
            input rank; otherwise every unit is kept as it is). Tables use it to run a merge
            once instead of once per seed.
        seeded_when: parameter values under which ``seeded`` applies (e.g. ``knots`` draws random
            drops only with ``combine="dare_ties"``); with other values the method is deterministic.
    """

    name: str
    description: str
    reference_url: str
    params: type[BaseModel]
    default_weights: DefaultWeights
    merge_module: ModuleMergeFn
    seeded: Seeded = "never"
    seeded_when: Mapping[str, Any] | None = None

    @property
    def default_convention(self) -> str:
        """The default weights as a key of ``WEIGHT_CONVENTIONS`` (``"avg"`` or ``"sum"``)."""
        return "avg" if self.default_weights == "uniform" else "sum"

    def default_weight_values(self, n: int) -> list[float]:
        return convention_weights(self.default_convention, n)

    def uses_seed(self, k: int | None, total_rank: int, params: Mapping[str, Any] | None = None) -> bool:
        """Whether the seed can change a merge at rank ``k`` of inputs with ``total_rank`` units
        per module and parameters ``params`` (see ``seeded`` and ``seeded_when``)."""
        if self.seeded_when is not None:
            resolved = {**{n: f.default for n, f in self.params.model_fields.items()}, **dict(params or {})}
            if any(resolved.get(name) != value for name, value in self.seeded_when.items()):
                return False
        if self.seeded == "always":
            return True
        if self.seeded == "below_total_rank":
            return k is not None and k < total_rank
        return False


@dataclass(frozen=True)
class ParamInfo:
    """One parameter as the CLI and HTTP schema show it."""

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    range: str | None = None  # numeric parameters: their bounds, e.g. "[1, 4096]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "help": self.help,
            "choices": list(self.choices) if self.choices is not None else None,
            "range": self.range,
        }


@dataclass(frozen=True)
class MethodInfo:
    """A method's public description (``adapterhub methods``, ``GET /api/merge/methods``)."""

    name: str
    description: str
    reference_url: str
    default_weights: DefaultWeights
    parameters: tuple[ParamInfo, ...]
    json_schema: dict[str, Any]
    seeded: Seeded = "never"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "reference_url": self.reference_url,
            "default_weights": self.default_weights,
            "seeded": self.seeded,
            "parameters": [p.to_dict() for p in self.parameters],
            "json_schema": self.json_schema,
        }


def _type_name(annotation: Any) -> tuple[str, tuple[Any, ...] | None]:
    """A short type name for help text, and the choices of a ``Literal``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]).__name__, choices
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(arg)[0] if arg is not type(None) else "None" for arg in typing.get_args(annotation)]
        return " | ".join(parts), None
    return getattr(annotation, "__name__", str(annotation)), None


def describe(method: MergeMethod) -> MethodInfo:
    params = []
    for name, field in method.params.model_fields.items():
        type_name, choices = _type_name(field.annotation)
        bounds = value_range(field)
        help_text = (field.description or "") + (f" (range {bounds})" if bounds else "")
        params.append(ParamInfo(name, type_name, field.default, help_text, choices, bounds))
    return MethodInfo(
        name=method.name,
        description=method.description,
        reference_url=method.reference_url,
        default_weights=method.default_weights,
        parameters=tuple(params),
        json_schema=method.params.model_json_schema(),
        seeded=method.seeded,
    )


class MethodRegistry:
    """Name -> ``MergeMethod``; built from an explicit list, duplicates rejected."""

    def __init__(self, methods: Iterable[MergeMethod] = ()) -> None:
        self._methods: dict[str, MergeMethod] = {}
        for method in methods:
            self.register(method)

    def register(self, method: MergeMethod) -> MergeMethod:
        """Add a method.

        Raises:
            ValueError: a method with this name is already registered.
        """
        if method.name in self._methods:
            raise ValueError(f"merge method '{method.name}' is already registered; pick another name")
        if not method.reference_url.startswith(("http://", "https://")):
            raise ValueError(f"merge method '{method.name}' needs a reference_url (http or https)")
        config = method.params.model_config
        if config.get("extra") != "forbid":
            raise ValueError(f"merge method '{method.name}': its params model must set extra='forbid'")
        # a request must not buy unbounded work (restarts=1e6 kept a core busy after the client left)
        unbounded = [n for n, f in method.params.model_fields.items() if is_numeric(f) and value_range(f) is None]
        if unbounded:
            raise ValueError(
                f"merge method '{method.name}': numeric parameters need a lower and an upper bound "
                f"(Field(ge=..., le=...)): {', '.join(unbounded)}"
            )
        self._methods[method.name] = method
        return method

    @property
    def names(self) -> list[str]:
        return sorted(self._methods)

    def get(self, name: str) -> MergeMethod:
        """The method called ``name``.

        Raises:
            InvalidParameterError: no such method; the message lists the valid ones.
        """
        try:
            return self._methods[name]
        except KeyError:
            raise InvalidParameterError(
                f"unknown merge method '{name}'; choose one of: {', '.join(self.names)}"
            ) from None

    def parse_params(self, name: str, params: Mapping[str, Any] | None) -> BaseModel:
        """Validate ``params`` for method ``name`` (defaults filled in).

        Raises:
            InvalidParameterError: unknown method, unknown key (valid keys listed) or a bad value.
        """
        method = self.get(name)
        params = dict(params or {})
        fields = list(method.params.model_fields)
        unknown = sorted(set(params) - set(fields))
        if unknown:
            valid = f"valid parameters: {', '.join(fields)}" if fields else "it takes no parameters"
            raise InvalidParameterError(
                f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} "
                f"for merge method '{name}'; {valid}"
            )
        try:
            return method.params.model_validate(params)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']} (got {err.get('input')!r})"
                for err in e.errors()
            )
            raise InvalidParameterError(f"invalid parameters for merge method '{name}': {problems}") from None

    def describe(self) -> list[MethodInfo]:
        return [describe(self._methods[name]) for name in self.names]

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __len__(self) -> int:
        return len(self._methods)
