"""A command group that imports each command's module only when that command is used.

Why: importing every command module up front (and through them the facade with SQLAlchemy,
pydantic for the generated ``merge`` flags, and Rich) cost about 0.3 s before ``adapterhub list``
did any work. The root group knows its commands from a table (name -> module, help section,
one-line summary), so ``adapterhub --help`` prints the list without importing any command module,
and ``adapterhub list`` imports the catalog commands only.

Each command module provides ``typer_app() -> typer.Typer`` with its commands; it is called, and
turned into Click objects, the first time one of its commands is looked up.

Only Typer's documented extension points are used: a ``TyperGroup`` subclass passed as
``typer.Typer(cls=...)`` overriding ``list_commands``/``get_command`` (plus Click's
``format_commands`` for the summary table), and ``typer.main.get_command``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import click
import typer
import typer.main
from typer.core import TyperArgument, TyperGroup


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives and how ``adapterhub --help`` lists it.

    Attributes:
        module: the module whose ``typer_app()`` defines the command.
        section: the heading it is listed under in the root help.
        summary: its one-line description there (a test keeps it equal to the command's own).
    """

    module: str
    section: str
    summary: str


def command_app(**kwargs: Any) -> typer.Typer:
    """A ``typer.Typer`` for a command module, with the settings every adapterhub command shares.

    ``rich_markup_mode=None`` gives Click's plain help: paragraphs re-wrapped to the terminal,
    ``\\b`` blocks (examples) kept line by line, no type placeholder on flags, and no Rich import
    for ``--help``.
    """
    return typer.Typer(rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False, **kwargs)


def _untyped_argument_help(command: click.Command) -> None:
    """Drop the ``<str>``/``<list[str]>`` that Typer appends to every argument in ``--help``.

    The metavar already names the value (``NAME...``, ``FOLDER``); Typer offers no switch for its
    type suffix on arguments, so each argument answers "no type to display" instead.
    """
    for param in command.params:
        if isinstance(param, TyperArgument):
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        _untyped_argument_help(sub)


class _Commands(Mapping[str, Any]):
    """``group.commands`` of a lazy group: the names are known, a command is built when read."""

    def __init__(self, group: LazyGroup) -> None:
        self._group = group

    def __getitem__(self, name: str) -> Any:
        if name not in self._group.table:
            raise KeyError(name)
        return self._group.load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._group.table)

    def __len__(self) -> int:
        return len(self._group.table)


class LazyGroup(TyperGroup):
    """A ``TyperGroup`` whose commands come from ``table`` and are imported on first use.

    Subclass it with a ``table`` and pass the subclass as ``typer.Typer(cls=...)``.
    """

    table: ClassVar[Mapping[str, LazyCommand]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._modules: dict[str, Any] = {}  # module name -> its Click group, built once
        self.commands = _Commands(self)  # type: ignore[assignment]  # read-only: names from the table

    def load(self, name: str) -> Any:
        """The Click command ``name``, importing and building its module's commands if needed."""
        module = self.table[name].module
        if module not in self._modules:
            built = typer.main.get_command(importlib.import_module(module).typer_app())
            _untyped_argument_help(built)
            self._modules[module] = built
        return self._modules[module].commands[name]

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(self.table)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        return self.load(cmd_name) if cmd_name in self.table else None

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        """The command list of ``--help`` from the table, by section, importing no command module."""
        sections: dict[str, list[tuple[str, str]]] = {}
        for name, entry in self.table.items():
            sections.setdefault(entry.section, []).append((name, entry.summary))
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)
