"""Merge commands: ``adapterhub merge`` and ``adapterhub methods``.

The merge options are generated from the merge-method registry, so every method parameter is a
flag (``--density``, ``--majority-sign``, ...) with the registry's help text, and a new method's
parameters appear here without touching this file. The registry (pydantic models behind the
facade) is read only when ``merge`` or ``methods`` is used: the root group imports this module
on first use of one of them.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from typing import Any, Optional

import typer

from adapterhub.cli.catalog import JSON_OPTION, open_hub
from adapterhub.cli.lazy import command_app
from adapterhub.cli.output import (
    handle_errors,
    human_size,
    info,
    print_json,
    print_mapping,
    print_table,
    stderr_console,
)
from adapterhub.errors import InvalidParameterError


def _registry_params() -> dict[str, dict[str, Any]]:
    """Parameter name -> help, choices and per-method defaults, over all methods (but ``k``)."""
    # the facade imports SQLAlchemy and the registry pydantic: load them when merge is used
    from adapterhub.app import AdapterHub

    params: dict[str, dict[str, Any]] = {}
    for method, rows in AdapterHub.merge_parameters().items():
        for p in rows:
            if p["name"] == "k":
                continue
            entry = params.setdefault(p["name"], {"help": p["help"], "choices": p["choices"], "defaults": {}})
            entry["defaults"][method] = p["default"]
            if p.get("kind") == "int" and p["default"] is None:
                entry["optional_int"] = True
    return params


def _parse_weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise InvalidParameterError(f"--weights must be comma-separated numbers, e.g. 0.5,0.5; got {text!r}") from None


def _run_merge(
    names: list[str],
    method: str,
    k: Optional[int],
    weights: Optional[str],
    name: Optional[str],
    seed: int,
    force: bool,
    task: Optional[str],
    tag: list[str],
    json_output: bool,
    **method_params: Any,
) -> None:
    # a choice arrives as a member of its generated Enum; the facade takes the plain value
    params = {
        key: value.value if isinstance(value, enum.Enum) else value
        for key, value in method_params.items()
        if value is not None
    }
    # Rich draws the progress bar (only on a terminal); it is imported when a merge runs
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    with handle_errors():
        hub = open_hub()
        parsed_weights = _parse_weights(weights)
        with Progress(
            TextColumn("[bold]merging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), console=console, transient=True,
            disable=json_output or not console.is_terminal,
        ) as bar:
            job = bar.add_task("", total=None)

            def progress(done: int, total: int, path: str) -> None:
                bar.update(job, completed=done, total=total, description=path)

            outcome = hub.merge(
                names, method=method, k=k, weights=parsed_weights, params=params, name=name, seed=seed,
                force=force, task=task, tags=tag, progress=progress,
            )
    if json_output:
        print_json(outcome.to_dict())
        return
    report = outcome.report
    summary = {
        "name": outcome.record.name,
        "method": outcome.method,
        "rank": outcome.record.rank,
        "size": human_size(outcome.record.size),
        "weights": ", ".join(f"{w:g}" for w in outcome.weights),
        "params": ", ".join(f"{k}={v}" for k, v in outcome.params.items()) or "-",
        "rel. error vs weighted sum": _error_text(report["rel_error"]),
        "shape error (best rescale)": _error_text(report["shape_error"]),
        "modules": len(report["modules"]),
        "time": f"{report['elapsed_s']:.2f} s",
    }
    if report.get("mixing_share") is not None:
        summary["cluster mixing share"] = f"{report['mixing_share']:.3f}"
    if outcome.auto:
        summary["chosen by"] = f"auto ({outcome.auto['basis']})"
    print_mapping("merge", summary)
    if outcome.auto:
        info(f"auto: {outcome.auto['reason']}")
    for warning in report.get("warnings", []):
        info(f"warning: {warning}")


def _error_text(value: float | None) -> str:
    """An error from the report; ``None`` means the weighted sum is zero and the merge is not."""
    return f"{value:.4f}" if value is not None else "inf (the inputs cancel; see the warning)"


def _flag(name: str, meta: dict[str, Any]) -> inspect.Parameter:
    """One generated option, typed from the registry so Click shows and checks it.

    Choices become an Enum (``[kmeans|kmedoids]``, anything else is a usage error), booleans a
    ``--x/--no-x`` pair, numbers INTEGER or FLOAT (``--density abc`` exits 2, before any work). The
    default is always None: an option not given leaves the method's own default in place.
    """
    defaults = ", ".join(f"{m}: {d}" for m, d in meta["defaults"].items())
    choices = meta["choices"]
    help_text = f"{meta['help'].rstrip('.')}. Defaults: {defaults}."
    flag = "--" + name.replace("_", "-")
    kinds = {type(d) for d in meta["defaults"].values() if d is not None} or ({int} if meta.get("optional_int") else set())
    if choices:
        values = [str(c) for c in choices]
        annotation: Any = Optional[enum.Enum(f"{name}_choice", {v: v for v in values}, type=str)]  # type: ignore[misc]
        option = typer.Option(None, flag, metavar="[" + "|".join(values) + "]", help=help_text)
    elif kinds == {bool}:
        annotation = Optional[bool]
        option = typer.Option(None, f"{flag}/--no-{flag[2:]}", help=help_text)
    elif kinds == {int}:
        annotation = Optional[int]
        option = typer.Option(None, flag, metavar="INTEGER", help=help_text)
    elif kinds and kinds <= {int, float}:
        annotation = Optional[float]
        option = typer.Option(None, flag, metavar="FLOAT", help=help_text)
    else:
        annotation = Optional[str]
        option = typer.Option(None, flag, metavar="TEXT", help=help_text)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option)


def _build_merge_command() -> Callable[..., None]:
    """``merge`` with one flag per registry parameter (generated signature for Typer)."""

    def keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)

    base = [
        keyword("names", list[str], typer.Argument(..., metavar="NAME", help="Adapters to merge (two or more), by catalog name.")),
        keyword("method", str, typer.Option("lego", "--method", "-m", metavar="TEXT",
                                            help="Merge method; see `adapterhub methods`. `auto` picks the method and weights.")),
        keyword("k", Optional[int], typer.Option(None, "--k", metavar="INTEGER",
                                                 help="Output rank (methods that take one; default 8).")),
        keyword("weights", Optional[str], typer.Option(
            None, "--weights", metavar="W1,W2,...", help="Comma-separated, one per input. Default: 1/n for "
            "averaging methods (lego), 1 for sums (linear, cat, svd, ties, dare, magnitude).")),
        keyword("name", Optional[str], typer.Option(
            None, "--name", "-n", metavar="NAME", help="Catalog name of the result (default merged/<method>-<digest>).")),
        keyword("seed", int, typer.Option(
            0, "--seed", metavar="INTEGER", help="Seed for every random choice (0 to 2**63 - 1)."
        )),
        keyword("force", bool, typer.Option(False, "--force", help="Merge adapters of different base models anyway.")),
        keyword("task", Optional[str], typer.Option(None, "--task", metavar="TEXT", help="Task recorded on the result.")),
        keyword("tag", list[str], typer.Option([], "--tag", metavar="TEXT",
                                               help="Tag recorded on the result; repeatable.")),
        keyword("json_output", bool, typer.Option(False, "--json", help="Print JSON (data only).")),
    ]
    extra = [_flag(pname, meta) for pname, meta in sorted(_registry_params().items())]
    param_names = [p.name for p in extra]

    def merge(**kwargs: Any) -> None:
        method_params = {p: kwargs.pop(p) for p in param_names}
        _run_merge(**kwargs, **method_params)

    merge.__signature__ = inspect.Signature(base + extra)  # type: ignore[attr-defined]
    merge.__doc__ = """Merge adapters into a new catalog adapter (LoRA-LEGO by default).

    Shows the output rank, size and the relative error against the exact weighted sum (sum of
    w_i * s_i * B_i @ A_i); `--json` prints the full report. Method parameters (--density,
    --cluster, ...) apply to the methods that take them; see `adapterhub methods`.

    \b
    Example:
        adapterhub merge acme/a acme/b --k 8 --name acme/ab
        adapterhub merge acme/a acme/b --method ties --density 0.3 --k 16
    """
    return merge


def methods(json_output: bool = JSON_OPTION) -> None:
    """List merge methods, their parameters, defaults and references.

    \b
    Example:
        adapterhub methods --json
    """
    # the facade imports SQLAlchemy and the registry pydantic: load them when this runs
    from adapterhub.app import AdapterHub

    listed = AdapterHub.methods()
    if json_output:
        print_json(listed)
        return
    rows = []
    for m in listed:
        params = "; ".join(f"{p['name']}={p['default']}" + (f" {p['range']}" if p.get("range") else "")
                           for p in m["parameters"]) or "-"
        rows.append([m["name"], params, "1/n" if m["default_weights"] == "uniform" else "1", m["reference_url"]])
    print_table("merge methods", ["method", "parameters (defaults, ranges)", "weights", "reference"], rows)


def typer_app() -> typer.Typer:
    """The merge commands (the root group calls this when one of them is first used)."""
    app = command_app()
    app.command("merge")(_build_merge_command())
    app.command("methods")(methods)
    return app
