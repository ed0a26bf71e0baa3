"""The import rules of DESIGN.md, checked on the source (an AST scan, nothing is imported).

Layers, bottom to top; a module may import its own package and strictly lower layers only:

    0  errors                                            (the one set of error classes)
    1  settings, names, files, threads, tasks            (foundation: no torch at import, no SQL)
    2  lora/
    3  store/  merge/  models/                            (siblings never import one another)
    4  eval/  hubformat/  route/  shard/  transfer/       (engines and formats)
    5  serving/                                          (inference: batching across adapters, cache)
    6  app/                                              (the facade and its services)
    7  server/                                           (a face)
    8  cli/                                              (a face; it may start the server)

Faces see the facade, the errors, the settings and plain format types only. Imports under
``if TYPE_CHECKING:`` are for type checkers and do not count; lazy (function-local) imports do.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adapterhub"

LAYERS: dict[str, int] = {
    "errors": 0, "__init__": 0,
    "settings": 1, "names": 1, "files": 1, "threads": 1, "tasks": 1,
    "lora": 2,
    "store": 3, "merge": 3, "models": 3,
    "eval": 4, "hubformat": 4, "route": 4, "shard": 4, "transfer": 4,
    "serving": 5,
    "app": 6,
    "server": 7,
    "cli": 8,
}
FACES = {"cli", "server"}
FACE_MAY_IMPORT = {"app", "errors", "settings", "hubformat", "server"}  # cli starts the server


def _unit(module: str) -> str:
    """The layered unit of a dotted module name: its first component under ``adapterhub``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, own: str) -> list[tuple[str, int]]:
    """Absolute ``adapterhub`` modules imported by a file (relative imports resolved), with lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "adapterhub")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "adapterhub":
                found.append((module, node.lineno))
                for alias in node.names:  # `from adapterhub import errors` names a module
                    if (PACKAGE.parent / module.replace(".", "/") / f"{alias.name}.py").exists() or (
                        PACKAGE.parent / module.replace(".", "/") / alias.name
                    ).is_dir():
                        found.append((f"{module}.{alias.name}", node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_every_unit_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in _sources()}
    assert units <= set(LAYERS), f"give these a layer in this test and in DESIGN.md: {sorted(units - set(LAYERS))}"


def _layer_violations(files: list[tuple[Path, str]]) -> list[str]:
    """Imports against the layering in ``files`` (path, dotted module name)."""
    problems = []
    for path, own in files:
        here = _unit(own)
        if here not in LAYERS:
            continue  # test_every_unit_has_a_layer reports it
        for module, line in _imports(path, own):
            there = _unit(module)
            if there == here or there == "__init__":
                continue
            where = f"{own}:{line} imports {module}"
            if LAYERS.get(there, -1) >= LAYERS[here]:
                problems.append(f"{where} (layer {LAYERS[here]} -> {LAYERS.get(there)}: not downward)")
            elif here in FACES and there not in FACE_MAY_IMPORT:
                problems.append(f"{where} (a face may import only {sorted(FACE_MAY_IMPORT)})")
    return problems


def test_imports_only_go_down() -> None:
    problems = _layer_violations([(p, _module_name(p)) for p in _sources()])
    assert problems == [], "\n".join(problems)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    names = {_module_name(p) for p in _sources()}
    for path in _sources():
        own = _module_name(path)
        graph[own] = {m for m, _ in _imports(path, own) if m in names and m != own}
    # a package's __init__ re-exporting its modules is not a cycle with them: drop edges child -> parent
    for module, deps in graph.items():
        deps -= {d for d in deps if module.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := walk(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_scan_sees_violations(tmp_path: Path) -> None:
    """The checks can fail: upward, sideways and face-to-engine imports are all reported."""
    probes = {
        "adapterhub.lora.probe": "from adapterhub.app import AdapterHub\n",
        "adapterhub.merge.probe": "def f():\n    import adapterhub.models.base\n",
        "adapterhub.cli.probe": "from adapterhub.store import Catalog\n",
        "adapterhub.eval.probe": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from adapterhub.app import X\n",
    }
    files = []
    for module, text in probes.items():
        path = tmp_path / f"{module}.py"
        path.write_text(text, encoding="utf-8")
        files.append((path, module))
    problems = _layer_violations(files)
    assert [p.split(" (")[0] for p in problems] == [
        "adapterhub.lora.probe:1 imports adapterhub.app",
        "adapterhub.merge.probe:2 imports adapterhub.models.base",
        "adapterhub.cli.probe:1 imports adapterhub.store",
    ]


def test_no_file_over_500_lines() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in _sources() if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}
    assert len((PACKAGE / "app" / "hub.py").read_text().splitlines()) < 250
