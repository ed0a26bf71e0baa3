"""Catalog commands: add, list, show, rm, export, lineage, verify, gc."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from adapterhub.cli.lazy import command_app
from adapterhub.cli.output import handle_errors, human_size, info, print_json, print_mapping, print_table

if TYPE_CHECKING:
    from adapterhub.app import AdapterHub

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (data only) instead of a table.")


def open_hub() -> AdapterHub:
    """The facade on the settings from the environment (``ADAPTERHUB_HOME``, ``ADAPTERHUB_DATABASE_URL``)."""
    # the facade imports SQLAlchemy: load it when a command runs, not for `--help`
    from adapterhub.app import AdapterHub

    return AdapterHub()


def _record_row(record: Any) -> list[Any]:
    return [
        record.name,
        record.base_model or "",
        record.rank,
        ",".join(record.target_modules),
        record.task or "",
        ",".join(record.tags),
        human_size(record.size),
        record.digest[:12],
    ]


def _render_tree(node: dict[str, Any], depth: int = 0) -> list[str]:
    how = f" ({node['operation']}, weight {node['weight']})" if node.get("operation") else ""
    missing = " [removed]" if node.get("missing") else ""
    lines = ["  " * depth + ("└─ " if depth else "") + node["name"] + how + missing]
    for parent in node["parents"]:
        lines.extend(_render_tree(parent, depth + 1))
    return lines


def add(
    path: Path = typer.Argument(
        ..., metavar="FOLDER", help="PEFT adapter folder (adapter_config.json + adapter_model.safetensors)."
    ),
    name: str = typer.Option(..., "--name", "-n", metavar="NAME", help="Catalog name, 'namespace/name'."),
    task: Optional[str] = typer.Option(None, "--task", metavar="TEXT", help="Task the adapter was trained for."),
    tag: list[str] = typer.Option([], "--tag", metavar="TEXT", help="A tag; repeat for several."),
    base_model: Optional[str] = typer.Option(
        None, "--base-model", metavar="TEXT", help="Override base_model_name_or_path."
    ),
    description: Optional[str] = typer.Option(None, "--description", metavar="TEXT", help="Free-text description."),
    examples: Optional[Path] = typer.Option(
        None, "--examples", metavar="FILE", help='Example inputs for routing: JSON lines {"text": ...}, at most 32.'
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Import a PEFT LoRA adapter folder into the catalog.

    The folder's adapterhub_examples.jsonl (or --examples FILE) is kept with it: the prototype and
    learned routers embed these inputs.

    \b
    Example:
        adapterhub add ./my-lora --name acme/sql-lora --task text-to-sql --tag sql
    """
    with handle_errors():
        record = open_hub().add(
            path, name, task=task, tags=tag, base_model=base_model, description=description, examples=examples
        )
    if json_output:
        print_json(record.to_dict())
    else:
        info(f"added {record.name} (rank {record.rank}, {human_size(record.size)}, sha256 {record.digest[:12]})")


def list_(
    base_model: Optional[str] = typer.Option(
        None, "--base-model", metavar="TEXT", help="Only adapters for this base model."
    ),
    task: Optional[str] = typer.Option(None, "--task", metavar="TEXT", help="Only adapters for this task."),
    tag: Optional[str] = typer.Option(None, "--tag", metavar="TEXT", help="Only adapters with this tag."),
    query: Optional[str] = typer.Option(
        None, "--search", "-s", metavar="TEXT", help="Free text in name, task, tags, description."
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, metavar="INTEGER", help="One page of at most this many rows (--cursor alone: 50)."
    ),
    cursor: Optional[str] = typer.Option(
        None, "--cursor", metavar="TEXT", help="Continue after the previous page (its next_cursor)."
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """List catalog entries.

    All of them, or one page at a time: with --limit or --cursor the listing is
    paged: --json prints {"items": [...], "next_cursor": ...} (null on the last
    page), a table is followed by the option for the next page. Pages cost the
    same however deep they are, so this is the way through a large catalog.

    \b
    Example:
        adapterhub list --task text-to-sql --json
        adapterhub list --limit 50 --cursor MTphY21lL3NxbA --json
    """
    paged = limit is not None or cursor is not None
    with handle_errors():
        hub = open_hub()
        if paged:
            page = hub.list_page(
                base_model=base_model, task=task, tag=tag, query=query, limit=limit or 50, cursor=cursor
            )
            records, next_cursor = page.items, page.next_cursor
        else:
            records, next_cursor = hub.list(base_model=base_model, task=task, tag=tag, query=query), None
    if json_output:
        rows = [r.to_dict() for r in records]
        print_json({"items": rows, "next_cursor": next_cursor} if paged else rows)
        return
    print_table(
        f"{len(records)} adapter(s)",
        ["name", "base model", "rank", "targets", "task", "tags", "size", "digest"],
        [_record_row(r) for r in records],
    )
    if next_cursor is not None:
        info(f"more: add --cursor {next_cursor} for the next page")


def show(
    name: str = typer.Argument(..., metavar="NAME", help="Catalog name, 'namespace/name'."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Show one adapter: metadata, lineage, metrics, revisions.

    \b
    Example:
        adapterhub show acme/sql-lora
    """
    with handle_errors():
        data = open_hub().show(name)
    if json_output:
        print_json(data)
        return
    summary = {k: v for k, v in data.items() if k not in {"config", "lineage", "metrics", "revisions", "children"}}
    summary["size"] = human_size(data["size"])
    summary["parents"] = ", ".join(p["parent_name"] for p in data["lineage"]) or "-"
    summary["children"] = ", ".join(data["children"]) or "-"
    print_mapping(name, summary)
    if data["metrics"]:
        print_table(
            "metrics",
            ["task", "split", "metric", "value"],
            [[m["task"], m["split"], m["metric"], f"{m['value']:.4f}"] for m in data["metrics"]],
        )


def rm(name: str = typer.Argument(..., metavar="NAME", help="Catalog name, 'namespace/name'.")) -> None:
    """Remove an adapter (its blob is deleted when no other entry uses it).

    \b
    Example:
        adapterhub rm acme/old-lora
    """
    with handle_errors():
        record = open_hub().remove(name)
    info(f"removed {record.name}")


def export(
    name: str = typer.Argument(..., metavar="NAME", help="Catalog name, 'namespace/name'."),
    folder: Path = typer.Argument(..., metavar="FOLDER", help="Folder to write the PEFT adapter into."),
    force: bool = typer.Option(
        False, "--force", help="Write into a folder that already has files (same-named files are replaced)."
    ),
) -> None:
    """Export an adapter as a PEFT folder that PEFT loads.

    The folder gets adapter_config.json and adapter_model.safetensors, which
    PeftModel.from_pretrained loads. A new or empty folder is required unless --force is given.

    \b
    Example:
        adapterhub export acme/sql-lora ./sql-lora
    """
    with handle_errors():
        out = open_hub().export(name, folder, force=force)
    info(f"exported {name} to {out}")


def lineage(
    name: str = typer.Argument(..., metavar="NAME", help="Catalog name, 'namespace/name'."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Show what an adapter was made from, recursively.

    A parent that was removed since is shown as [removed].

    \b
    Example:
        adapterhub lineage acme/merged --json
    """
    with handle_errors():
        tree = open_hub().lineage(name)
    if json_output:
        print_json(tree)
    else:
        typer.echo("\n".join(_render_tree(tree)))


def verify(json_output: bool = JSON_OPTION) -> None:
    """Re-hash every blob the catalog references.

    Exits with 1 if any blob is missing or corrupt.

    \b
    Example:
        adapterhub verify
    """
    with handle_errors():
        result = open_hub().verify()
    if json_output:
        print_json(result)
    else:
        info(f"missing: {len(result['missing'])}, corrupt: {len(result['corrupt'])}")
    if result["missing"] or result["corrupt"]:
        raise typer.Exit(code=1)


def gc(
    grace_seconds: float = typer.Option(
        3600.0, "--grace-seconds", min=0, metavar="FLOAT", help="Keep files younger than this."
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Delete unreferenced blobs and temp files left by interrupted writes.

    Files younger than --grace-seconds are kept, since another process may be writing them.

    \b
    Example:
        adapterhub gc --grace-seconds 0
    """
    with handle_errors():
        result = open_hub().gc(grace_seconds=grace_seconds)
    if json_output:
        print_json(result)
    else:
        info(
            f"removed {len(result['blobs'])} blob(s) and {len(result['temp_files'])} temp file(s), "
            f"{human_size(result['bytes_freed'])} freed"
        )


def typer_app() -> typer.Typer:
    """The catalog commands (the root group calls this when one of them is first used)."""
    app = command_app()
    app.command("add")(add)
    app.command("list")(list_)
    app.command("show")(show)
    app.command("rm")(rm)
    app.command("export")(export)
    app.command("lineage")(lineage)
    app.command("verify")(verify)
    app.command("gc")(gc)
    return app
