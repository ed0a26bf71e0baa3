"""The lineage graph of an adapter page, drawn as inline SVG on the server.

Columns left to right: the oldest ancestors shown, the operation that made each merged adapter
(its method and parameters), ..., this adapter, its children. Each adapter box links to its page;
a node the reader may not see is a grey "hidden" box with no name (``redact_lineage`` already took
its name out), a removed one says so. Drawn here, not in the browser, so the graph needs no script
and no library, and the page's CSP can forbid both; every text is escaped (``markupsafe``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

__all__ = ["MAX_DEPTH", "lineage_svg"]

MAX_DEPTH = 3  # generations of ancestors drawn (a deeper history is one click away, on a parent's page)
MAX_PER_COLUMN = 24  # nodes per column; the rest are summarised in one box
BOX_W, BOX_H, OP_W, GAP_X, GAP_Y, PAD = 220, 34, 170, 46, 14, 12
MAX_LABEL = 30
PARAM_KEYS = ("k", "seed", "density", "majority_sign", "output_reweight", "weights")


@dataclass
class _Node:
    key: str
    kind: str  # adapter | this | hidden | missing | op | more
    label: str
    sub: str = ""
    href: str | None = None
    column: int = 0
    row: int = 0
    inputs: list[str] = field(default_factory=list)  # keys of the nodes with edges into this one


def _short(text: str, n: int = MAX_LABEL) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _op_label(operation: str | None, params: dict[str, Any] | None) -> tuple[str, str]:
    params = params or {}
    shown = [f"{k}={params[k]}" for k in PARAM_KEYS if params.get(k) is not None and not isinstance(params[k], (list, dict))]
    return _short(operation or "derived", 24), _short(" ".join(shown), 26)


def adapter_href(name: str) -> str:
    """The page of adapter ``name`` (each part URL-quoted)."""
    namespace, _, rest = name.partition("/")
    return f"/ui/adapters/{quote(namespace, safe='')}/{quote(rest, safe='')}"


def lineage_svg(tree: dict[str, Any], children: list[str]) -> Markup:
    """SVG for ``tree`` (``redact_lineage(lineage(name))``) and the names of its readable children."""
    nodes: dict[str, _Node] = {}
    columns: dict[int, list[str]] = {}

    def place(node: _Node) -> _Node:
        existing = nodes.get(node.key)
        if existing is not None:
            return existing
        column = columns.setdefault(node.column, [])
        if len(column) >= MAX_PER_COLUMN:
            more_key = f"more:{node.column}"
            if more_key not in nodes:
                nodes[more_key] = _Node(more_key, "more", "more not shown", column=node.column, row=len(column))
                column.append(more_key)
            return nodes[more_key]
        node.row = len(column)
        nodes[node.key] = node
        column.append(node.key)
        return node

    def adapter_node(item: dict[str, Any], column: int, this: bool = False) -> _Node:
        if item.get("hidden"):
            return _Node(f"hidden:{id(item)}", "hidden", "hidden", "private: sign in to see", column=column)
        name = str(item.get("name") or "?")
        if item.get("missing"):
            return _Node(f"a:{name}", "missing", _short(name), "removed", column=column)
        sub = _short(str(item.get("base_model") or ""), 34)
        return _Node(f"a:{name}", "this" if this else "adapter", _short(name), sub,
                     None if this else adapter_href(name), column=column)

    def walk(item: dict[str, Any], column: int, depth: int, this: bool = False) -> _Node:
        node = place(adapter_node(item, column, this))
        parents = item.get("parents") or []
        if not parents or depth >= MAX_DEPTH or node.kind in ("hidden", "missing", "more"):
            return node
        first = parents[0]
        label, sub = _op_label(first.get("operation"), first.get("params"))
        op = place(_Node(f"op:{node.key}", "op", label, sub, column=column - 1))
        if op.key not in node.inputs:
            node.inputs.append(op.key)
        for parent in parents:
            drawn = walk(parent, column - 2, depth + 1)
            if drawn.key not in op.inputs:
                op.inputs.append(drawn.key)
        return node

    root = walk(tree, 0, 0, this=True)
    for child in children:
        drawn = place(_Node(f"a:{child}", "adapter", _short(child), "child", adapter_href(child), column=1))
        if root.key not in drawn.inputs:
            drawn.inputs.append(root.key)
    return _draw(nodes, columns)


def _draw(nodes: dict[str, _Node], columns: dict[int, list[str]]) -> Markup:
    order = sorted(columns)
    xs: dict[int, int] = {}
    x = PAD
    for c in order:
        xs[c] = x
        x += (OP_W if any(nodes[k].kind == "op" for k in columns[c]) else BOX_W) + GAP_X
    width = x - GAP_X + PAD
    tallest = max(len(columns[c]) for c in order)
    height = PAD * 2 + tallest * BOX_H + (tallest - 1) * GAP_Y

    def box(n: _Node) -> tuple[int, int, int]:
        w = OP_W if n.kind == "op" else BOX_W
        column_h = len(columns[n.column]) * BOX_H + (len(columns[n.column]) - 1) * GAP_Y
        top = (height - column_h) // 2 + n.row * (BOX_H + GAP_Y)
        return xs[n.column], top, w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="lineage graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>']
    for n in nodes.values():
        x2, y2, _ = box(n)
        for key in n.inputs:
            x1, y1, w1 = box(nodes[key])
            parts.append(f'<path class="edge" marker-end="url(#arrow)" d="M{x1 + w1},{y1 + BOX_H // 2} '
                         f'C{x1 + w1 + GAP_X // 2},{y1 + BOX_H // 2} {x2 - GAP_X // 2},{y2 + BOX_H // 2} '
                         f'{x2 - 2},{y2 + BOX_H // 2}"/>')
    for n in nodes.values():
        x0, y0, w = box(n)
        rx = 14 if n.kind == "op" else 5
        shape = (f'<g class="node {n.kind}"><rect x="{x0}" y="{y0}" width="{w}" height="{BOX_H}" rx="{rx}"/>'
                 f'<text x="{x0 + 8}" y="{y0 + 14}" class="label">{escape(n.label)}</text>'
                 f'<text x="{x0 + 8}" y="{y0 + 27}" class="sub">{escape(n.sub)}</text></g>')
        if n.href:
            shape = f'<a href="{escape(n.href)}"><title>{escape(n.label)}</title>{shape}</a>'
        parts.append(shape)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text above is escaped)
