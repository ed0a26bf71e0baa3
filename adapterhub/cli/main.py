"""Entry point of the ``adapterhub`` command; each command group lives in its own module.

The root group imports a command's module only when that command runs (see ``cli/lazy.py``), so
``adapterhub list`` does not pay for the merge, evaluation or hub commands.
"""

from __future__ import annotations

import typer

from adapterhub.cli.lazy import LazyCommand, LazyGroup

_CATALOG, _MERGE, _ROUTE, _SHARD, _TRANSFER, _EVAL, _HUB = (
    f"adapterhub.cli.{m}" for m in ("catalog", "merge", "route", "shard", "transfer", "evaluate", "hub")
)

COMMANDS: dict[str, LazyCommand] = {
    "add": LazyCommand(_CATALOG, "Catalog", "Import a PEFT LoRA adapter folder into the catalog."),
    "list": LazyCommand(_CATALOG, "Catalog", "List catalog entries."),
    "show": LazyCommand(_CATALOG, "Catalog", "Show one adapter: metadata, lineage, metrics, revisions."),
    "rm": LazyCommand(_CATALOG, "Catalog", "Remove an adapter (its blob is deleted when no other entry uses it)."),
    "export": LazyCommand(_CATALOG, "Catalog", "Export an adapter as a PEFT folder that PEFT loads."),
    "lineage": LazyCommand(_CATALOG, "Catalog", "Show what an adapter was made from, recursively."),
    "verify": LazyCommand(_CATALOG, "Catalog", "Re-hash every blob the catalog references."),
    "gc": LazyCommand(_CATALOG, "Catalog", "Delete unreferenced blobs and temp files left by interrupted writes."),
    "merge": LazyCommand(_MERGE, "Merging", "Merge adapters into a new catalog adapter (LoRA-LEGO by default)."),
    "methods": LazyCommand(_MERGE, "Merging", "List merge methods, their parameters, defaults and references."),
    "route": LazyCommand(
        _ROUTE, "Routing", "Route queries to adapter mixtures, or train an MHR adapter from an inventory."
    ),
    "shard": LazyCommand(
        _SHARD, "Sharding", "Pack a base's adapters into shared shard pools: pack, unpack, stats, verify."
    ),
    "transfer": LazyCommand(
        _TRANSFER, "Transfer",
        "Move an adapter to another base model without its training data (Trans-LoRA, NeurIPS 2024).",
    ),
    "train": LazyCommand(
        _EVAL, "Evaluation", "Train a LoRA (or a MoS adapter) for a shipped task and add it to the catalog."
    ),
    "eval": LazyCommand(_EVAL, "Evaluation", "Score an adapter on the test split of its task(s)."),
    "quality": LazyCommand(_EVAL, "Evaluation", "Build the merge-quality table of every merge method."),
    "demo": LazyCommand(
        _EVAL, "Evaluation", "Merge the shipped task adapters and score every merge; route unlabeled queries among them."
    ),
    "push": LazyCommand(_HUB, "Hub", "Upload an adapter to a hub repo, creating the repo if needed."),
    "pull": LazyCommand(_HUB, "Hub", "Download, validate and import an adapter from a hub repo."),
    "serve": LazyCommand(_HUB, "Hub", "Serve the catalog as a Hugging Face-compatible hub and a REST API."),
    "token": LazyCommand(_HUB, "Hub", "Access tokens of `adapterhub serve`: create, list, revoke."),
    "jobs": LazyCommand(
        "adapterhub.cli.jobs", "Jobs",
        "Long operations as jobs (merge batches, quality tables, transfers): submit, list, show, cancel.",
    ),
}


class AdapterhubGroup(LazyGroup):
    """The root group: the commands of ``COMMANDS``, each imported when it runs."""

    table = COMMANDS


def _print_version(value: bool) -> None:
    if not value:
        return
    # importlib.metadata costs ~20 ms to import: only ``--version`` pays for it
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"adapterhub {version('adapterhub')}")
    except PackageNotFoundError:
        typer.echo("adapterhub (version unknown: the package is not installed)")
    raise typer.Exit()


app = typer.Typer(
    name="adapterhub",
    cls=AdapterhubGroup,
    help=(
        "Keep a catalog of LoRA adapters and compose new adapters from them.\n\n"
        "Run `adapterhub COMMAND --help` for a command's options and an example."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Options of the root command (the commands are in ``COMMANDS``)."""


def main() -> None:
    app(prog_name="adapterhub")


if __name__ == "__main__":
    main()
