"""Routing commands: ``adapterhub route QUERY`` and ``adapterhub route train-mhr``.

``route`` is a group with a default: a first argument that is not a subcommand is a query, so
``adapterhub route "some text"`` routes while ``adapterhub route train-mhr ...`` trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from adapterhub.cli.catalog import JSON_OPTION, open_hub
from adapterhub.cli.lazy import command_app
from adapterhub.cli.output import handle_errors, info, print_json, print_table
from adapterhub.errors import InvalidParameterError

ROUTE_HELP = """Route queries to adapter mixtures, or train an MHR adapter from an inventory.

\b
Example:
    adapterhub route "a small brown bird of European woodlands" --top-k 3
    adapterhub route --file queries.jsonl --router learned --json
    adapterhub route train-mhr --task wn_pos --shots 16 --inventory acme/a --inventory acme/b --name acme/pos
"""


class _RouteGroup(TyperGroup):
    """A group whose default command is ``query``: ``route TEXT`` means ``route query TEXT``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["query", *args]
        return super().parse_args(ctx, args)


def _read_queries(path: Path) -> list[str]:
    """Queries from a file: JSON lines ``{"query": ...}`` (or ``{"text": ...}``), or plain lines."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidParameterError(f"cannot read queries from {path}: {e}") from None
    queries = []
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except ValueError:
                raise InvalidParameterError(f"{path} line {number} is not JSON") from None
            text = row.get("query", row.get("text")) if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise InvalidParameterError(f'{path} line {number} needs a "query" (or "text") string')
            queries.append(text)
        else:
            queries.append(line)
    return queries


def route_query(
    query: Optional[str] = typer.Argument(None, metavar="QUERY", help="The text to route (or --file)."),
    file: Optional[Path] = typer.Option(None, "--file", help="Route every line of a file (JSON lines or text)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Candidate labels, comma-separated."),
    router: str = typer.Option("prototype", "--router", help="prototype, learned, hedged (best on text alone) or arrow."),
    top_k: int = typer.Option(3, "--top-k", help="How many adapters each query mixes."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature of the mixture."),
    among: Optional[list[str]] = typer.Option(None, "--among", help="Route among these adapters only (repeat)."),
    run: bool = typer.Option(False, "--run", help="Also predict one of --labels under the routed mixture."),
    merge: bool = typer.Option(False, "--merge", help="Store each mixture as one adapter (routed/...), for one-LoRA clients."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Route a query (or a file of queries) to a mixture of catalog adapters.

    \b
    Example:
        adapterhub route "an old word for a sailing ship" --top-k 2
        adapterhub route "noun: a large bird" --labels noun.animal,noun.food --run --json
    """
    with handle_errors():
        if (query is None) == (file is None):
            raise InvalidParameterError("give one QUERY or --file FILE")
        queries = [query] if query is not None else _read_queries(file)  # type: ignore[arg-type]
        label_list = [label.strip() for label in labels.split(",") if label.strip()] if labels else None
        decisions = open_hub().route(
            queries, router=router, top_k=top_k, temperature=temperature, among=among, labels=label_list, run=run,
            merge=merge,
        )
    answer = [d.to_dict() for d in decisions]
    if as_json:
        print_json({"routes": answer})
        return
    rows = []
    for d in answer:
        mix = ", ".join(f"{a['name']} {a['weight']:.2f}" for a in d["adapters"])
        rows.append([d["query"][:60], d["router"], mix] + ([d.get("prediction", "")] if run else [])
                    + ([d.get("merged", "")] if merge else []))
    columns = ["query", "router", "adapters (weight)"] + (["prediction"] if run else []) + (["merged"] if merge else [])
    print_table("routes", columns, rows)


def train_mhr(
    task: str = typer.Option(..., "--task", help="The shipped task whose train split gives the shots."),
    shots: int = typer.Option(16, "--shots", help="Labelled examples to learn from."),
    inventory: list[str] = typer.Option(..., "--inventory", help="Adapters to route among (repeat)."),
    name: str = typer.Option(..., "--name", help="Catalog name of the new adapter, namespace/name."),
    variant: str = typer.Option("z", "--variant", help="z (learn routing only) or mu (average, then fine-tune)."),
    seed: int = typer.Option(0, "--seed", help="Picks the shots and seeds the training."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (default: chosen on validation)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train an MHR adapter for a new task from a few shots over an inventory of adapters.

    \b
    Example:
        adapterhub route train-mhr --task wn_pos --shots 16 --inventory acme/a --inventory acme/b --name acme/pos
    """
    with handle_errors():
        record = open_hub().train_mhr(
            task=task, shots=shots, inventory=inventory, name=name, variant=variant, seed=seed, steps=steps
        )
    if as_json:
        print_json(record.to_dict())
    else:
        info(f"trained {record.name} (MHR-{variant}, {shots} shots of {task}) over {len(inventory)} adapters")


def typer_app() -> typer.Typer:
    """The routing commands (the root group calls this when ``route`` is first used)."""
    group = command_app(cls=_RouteGroup, help=ROUTE_HELP, no_args_is_help=True)
    group.command("query")(route_query)
    group.command("train-mhr")(train_mhr)
    app = command_app()
    app.add_typer(group, name="route")
    return app
