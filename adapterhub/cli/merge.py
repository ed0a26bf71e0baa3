"""Merge commands: ``adapterhub merge`` and ``adapterhub methods``.

The merge options are generated from the merge-method registry, so every method parameter is a
flag (``--density``, ``--majority-sign``, ...) with the registry's help text, and a new method's
parameters appear here without touching this file.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapterhub.cli.catalog import open_hub
from adapterhub.cli.output import handle_errors, human_size, info, print_json, print_mapping, print_table, stderr


def _registry_params() -> dict[str, dict[str, Any]]:
    """Parameter name -> help, choices and per-method defaults, over all methods (but ``k``)."""
    from adapterhub.app import AdapterHub

    params: dict[str, dict[str, Any]] = {}
    for method, rows in AdapterHub.merge_parameters().items():
        for p in rows:
            if p["name"] == "k":
                continue
            entry = params.setdefault(p["name"], {"help": p["help"], "choices": p["choices"], "defaults": {}})
            entry["defaults"][method] = p["default"]
    return params


def _parse_weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        from adapterhub.errors import InvalidParameterError

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
    params = {key: value for key, value in method_params.items() if value is not None}
    with handle_errors():
        hub = open_hub()
        parsed_weights = _parse_weights(weights)
        with Progress(
            TextColumn("[bold]merging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), console=stderr, transient=True, disable=json_output or not stderr.is_terminal,
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
        "rel. error vs weighted sum": f"{report['rel_error']:.4f}",
        "shape error (best rescale)": f"{report['shape_error']:.4f}",
        "modules": len(report["modules"]),
        "time": f"{report['elapsed_s']:.2f} s",
    }
    if report.get("mixing_share") is not None:
        summary["cluster mixing share"] = f"{report['mixing_share']:.3f}"
    print_mapping("merge", summary)
    for warning in report.get("warnings", []):
        info(f"warning: {warning}")


def _build_merge_command():
    """``merge`` with one flag per registry parameter (generated signature for Typer)."""
    base = [
        inspect.Parameter("names", inspect.Parameter.KEYWORD_ONLY, annotation=list[str],
                          default=typer.Argument(..., help="Adapters to merge, by catalog name.")),
        inspect.Parameter("method", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Option("lego", "--method", "-m", help="Merge method; see `adapterhub methods`.")),
        inspect.Parameter("k", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int],
                          default=typer.Option(None, "--k", help="Output rank (methods that take one; default 8).")),
        inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                          default=typer.Option(None, "--weights", help="Comma-separated, one per input. Default: "
                                               "1/n for averaging methods (lego), 1 for sums (linear, cat, svd, ties, dare, magnitude).")),
        inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                          default=typer.Option(None, "--name", "-n", help="Catalog name of the result (default merged/<method>-<digest>).")),
        inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                          default=typer.Option(0, "--seed", help="Seed for every random choice.")),
        inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--force", help="Merge adapters of different base models anyway.")),
        inspect.Parameter("task", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                          default=typer.Option(None, "--task", help="Task recorded on the result.")),
        inspect.Parameter("tag", inspect.Parameter.KEYWORD_ONLY, annotation=list[str],
                          default=typer.Option([], "--tag", help="Tag recorded on the result; repeatable.")),
        inspect.Parameter("json_output", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--json", help="Print JSON (data only).")),
    ]
    extra = []
    for pname, meta in sorted(_registry_params().items()):
        defaults = ", ".join(f"{m}: {d}" for m, d in meta["defaults"].items())
        choices = f" One of {', '.join(map(str, meta['choices']))}." if meta["choices"] else ""
        help_text = f"{meta['help'].rstrip('.')}.{choices} Defaults: {defaults}."
        extra.append(
            inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                              default=typer.Option(None, "--" + pname.replace("_", "-"), help=help_text))
        )
    param_names = [p.name for p in extra]

    def merge(**kwargs: Any) -> None:
        method_params = {p: kwargs.pop(p) for p in param_names}
        _run_merge(**kwargs, **method_params)

    merge.__signature__ = inspect.Signature(base + extra)  # type: ignore[attr-defined]
    merge.__doc__ = """Merge adapters into a new catalog adapter (LoRA-LEGO by default).

    Shows the output rank, size and the relative error against the exact weighted sum
    (sum of w_i * s_i * B_i @ A_i); `--json` prints the full report.

    Example:
        adapterhub merge acme/a acme/b --k 8 --name acme/ab
        adapterhub merge acme/a acme/b --method ties --density 0.3 --k 16
    """
    return merge


def methods(json_output: bool = typer.Option(False, "--json", help="Print JSON (data only).")) -> None:
    """List merge methods, their parameters, defaults and references.

    Example:
        adapterhub methods --json
    """
    from adapterhub.app import AdapterHub

    listed = AdapterHub.methods()
    if json_output:
        print_json(listed)
        return
    rows = []
    for m in listed:
        params = "; ".join(f"{p['name']}={p['default']}" for p in m["parameters"]) or "-"
        rows.append([m["name"], params, "1/n" if m["default_weights"] == "uniform" else "1", m["reference_url"]])
    print_table("merge methods", ["method", "parameters (defaults)", "weights", "reference"], rows)


def register(app: typer.Typer) -> None:
    app.command("merge")(_build_merge_command())
    app.command("methods")(methods)
