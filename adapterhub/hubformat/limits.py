"""Bounds on untrusted structured input: request bodies, JSON and YAML nesting, YAML alias expansion.

Why each bound exists (every one was an attack on ``adapterhub serve``):
- ``MAX_BODY_BYTES``: a JSON or YAML request body is read whole; without a bound a 400 MiB body
  grows the server by gigabytes. Routes that stream large uploads raise their own, larger limit.
- ``MAX_NESTING``: 50,000 nested ``[[[…`` crash recursive parsers (``RecursionError``, a 500).
- ``MAX_FRONT_MATTER_BYTES``: PyYAML's safe loader is pure Python (~1 s per 100 KB); a card's
  front matter is a few KB in practice.
- ``MAX_YAML_EXPANSION``: YAML aliases share nodes, so 444 bytes of nested ``*alias`` lists expand
  to 30 MB once the data is written out as JSON (a "billion laughs"). ``load_yaml_bounded`` counts
  every node and scalar character *as expanded* while composing, and refuses past the budget, before
  any Python object is built. Recursive aliases are refused too (JSON cannot hold them).
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import Node, ScalarNode

from adapterhub.lora.config import MAX_JSON_DEPTH, JsonNestingError, json_depth, loads_json_bounded

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_FRONT_MATTER_BYTES",
    "MAX_NESTING",
    "MAX_YAML_EXPANSION",
    "JsonNestingError",
    "YamlLimitError",
    "json_depth",
    "load_yaml_bounded",
    "loads_json_bounded",
]

MAX_BODY_BYTES = 4 << 20
MAX_NESTING = MAX_JSON_DEPTH
MAX_FRONT_MATTER_BYTES = 64 << 10
MAX_YAML_EXPANSION = 1 << 20  # nodes + scalar characters, counted as if every alias were copied


class YamlLimitError(yaml.YAMLError):
    """YAML that is too deep, expands too far or refers to itself."""


class _BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that measures each composed node as expanded (size, height) and refuses
    documents past ``MAX_YAML_EXPANSION`` or ``MAX_NESTING``; an alias is charged its target's size."""

    max_depth = MAX_NESTING
    budget = MAX_YAML_EXPANSION

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # depth of the node being composed (0: above the root)
        self._cost = 0  # expanded size composed so far
        self._reach = 0  # deepest absolute depth reached inside the current node
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)

    def _charge(self, cost: int, reach: int) -> None:
        self._cost += cost
        self._reach = max(self._reach, reach)
        if self._cost > self.budget:
            raise YamlLimitError(
                f"the YAML expands to more than {self.budget} nodes and characters (aliases count in full)"
            )
        if reach > self.max_depth:
            raise YamlLimitError(f"the YAML nests deeper than {self.max_depth} levels")

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None:
                measured = self._measured.get(id(target))
                if measured is None:  # the alias sits inside the node it names
                    raise YamlLimitError("the YAML has a recursive alias (a node that contains itself)")
                size, height = measured
                self._charge(size, self._depth + height)
            return super().compose_node(parent, index)
        self._depth += 1
        cost_before, reach_before = self._cost, self._reach
        self._reach = self._depth
        self._charge(1, self._depth)
        node = super().compose_node(parent, index)
        if isinstance(node, ScalarNode):
            self._charge(len(node.value), self._depth)
        self._measured[id(node)] = (self._cost - cost_before, self._reach - self._depth + 1)
        self._reach = max(reach_before, self._reach)
        self._depth -= 1
        return node


_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in ``text``, counted in C-speed passes.

    PyYAML is pure Python: composing 20,000 nested ``[`` takes a few hundred milliseconds, all of it
    holding the GIL, which stalls every other request of the server. Brackets inside quoted strings
    are counted too; no real card nests 64 of them.
    """
    brackets = _NOT_BRACKETS.sub("", text)
    if not brackets:
        return 0
    return max(accumulate(1 if c in "[{" else -1 for c in brackets))


def load_yaml_bounded(text: str) -> Any:
    """``yaml.safe_load`` for untrusted text, within the nesting and alias-expansion budgets.

    Raises:
        YamlLimitError: too deep, too large once expanded, or recursive.
        yaml.YAMLError: not valid YAML.
    """
    if _flow_depth(text) > MAX_NESTING:  # refused before the pure-Python parser holds the GIL
        raise YamlLimitError(f"the YAML nests deeper than {MAX_NESTING} levels")
    try:
        return yaml.load(text, Loader=_BoundedSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # a safety net: the depth bound should stop long before this
        raise YamlLimitError(f"the YAML nests deeper than {MAX_NESTING} levels") from None
