"""Output for the CLI: data to stdout (Rich tables, or JSON with ``--json``), messages to stderr.

One place maps expected errors to a one-line message and exit code 1, so no command prints a
traceback for a user error (set ``ADAPTERHUB_DEBUG=1`` to see it anyway).

Rich is imported only when a table is printed: ``adapterhub list --json`` and every message path
stay on plain ``json`` and ``typer.echo``, which keeps catalog commands quick to start.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

import typer

from adapterhub.errors import AdapterHubError
from adapterhub.settings import env_flag

if TYPE_CHECKING:
    from rich.console import Console


@cache
def _console(err: bool = False) -> Console:
    """One Rich console per stream, made on first use (Rich costs ~20 ms to import)."""
    from rich.console import Console

    return Console(stderr=err, soft_wrap=True)


def stderr_console() -> Console:
    """The Rich console on stderr, for progress bars (which Rich draws only on a terminal)."""
    return _console(err=True)


def print_json(data: Any) -> None:
    """Only data on stdout, so scripts can parse it; ``[]`` for an empty list.

    Indented on a terminal for people; compact when piped, because Python's JSON encoder only uses
    its fast C path without indentation (4x faster on a 100k-row catalog listing).
    """
    if sys.stdout.isatty():
        text = json.dumps(data, indent=2, default=str)
    else:
        text = json.dumps(data, default=str, separators=(",", ":"))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    _console().print(table)


def print_mapping(title: str, data: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value, default=str) if value else ""
        table.add_row(key, "" if value is None else str(value))
    _console().print(table)


def info(message: str) -> None:
    """A message for people on stderr, printed as is (no markup: ``[removed]`` stays literal)."""
    typer.echo(message, err=True)


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn an ``AdapterHubError`` into ``error: <message>`` on stderr and exit code 1."""
    try:
        yield
    except AdapterHubError as e:
        if env_flag("ADAPTERHUB_DEBUG"):
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from None


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
