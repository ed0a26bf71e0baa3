"""``adapterhub jobs``: submit, list, show (``--follow`` with Rich progress), cancel and run jobs.

Jobs are catalog rows (``app/jobs``), so this lists the jobs of every process sharing the catalog,
servers included. ``submit`` runs the job in this process by default and follows it to the end;
with ``ADAPTERHUB_RAY_ADDRESS`` set it runs on that Ray cluster, and this command still follows it
(Ray cancels the tasks of a driver that exits). ``--detach`` only queues it: a running
``adapterhub serve`` on the same catalog, or ``adapterhub jobs run ID``, picks it up.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from adapterhub.cli.catalog import JSON_OPTION, open_hub
from adapterhub.cli.lazy import command_app
from adapterhub.cli.output import handle_errors, info, print_json, print_mapping, print_table, stderr_console
from adapterhub.errors import InvalidParameterError

if TYPE_CHECKING:
    from adapterhub.app import AdapterHub

JOBS_HELP = """Long operations as jobs (merge batches, quality tables, transfers): submit, list, show, cancel.

Jobs run in this process, or on a Ray cluster when ADAPTERHUB_RAY_ADDRESS is set; their state is in
the catalog, so every process sharing it sees them.

\b
Example:
    adapterhub jobs submit merge-batch merges.json
    adapterhub jobs list
    adapterhub jobs show 3f2a... --follow
"""

FOLLOW_POLL_S = 0.3


def _params(source: str) -> dict[str, Any]:
    """Parameters from a JSON file, ``-`` (stdin) or an inline JSON object."""
    try:
        if source == "-":
            text = sys.stdin.read()
        elif source.lstrip().startswith("{"):
            text = source
        else:
            text = Path(source).read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as e:
        raise InvalidParameterError(f"cannot read {source}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise InvalidParameterError(f"{source} is not JSON ({e.msg} at line {e.lineno}); give the job's parameters") from None
    if not isinstance(data, dict):
        raise InvalidParameterError(f"{source} must hold a JSON object: the job's parameters")
    return data


def _summary(job: Any) -> str:
    """How far a job is, in a few words."""
    stages = [f"{stage} {p['done']}/{p['total']}" if p.get("total") else f"{stage} {p['done']}"
              for stage, p in job.progress.items()]
    return ", ".join(stages) or "-"


def _follow(hub: AdapterHub, job_id: str, *, quiet: bool) -> Any:
    """Poll the job until it ends, with a Rich progress bar per stage on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=quiet or not console.is_terminal) as bar:
        tasks: dict[str, Any] = {}
        while True:
            job = hub.jobs.show(job_id)
            for stage, p in job.progress.items():
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=None)
                bar.update(tasks[stage], completed=p["done"], total=p["total"] or None,
                           description=f"{stage} {p.get('message', '')}"[:80])
            if job.done:
                return job
            time.sleep(FOLLOW_POLL_S)


def _render(job: Any, json_output: bool) -> None:
    if json_output:
        print_json(job.to_dict())
        return
    data = job.to_dict()
    shown = {k: data[k] for k in ("id", "kind", "status", "attempts", "worker", "created", "started", "finished")}
    shown["progress"] = _summary(job)
    if job.error:
        shown["error"] = job.error["message"] + (f" ({job.error['detail']})" if job.error.get("detail") else "")
    if job.result and job.kind == "merge_batch":
        shown["results"] = ", ".join(m["name"] + (" (already stored)" if m["existing"] else "")
                                     for m in job.result["merges"])
    print_mapping(f"job {job.id}", shown)


def _exit_for(job: Any) -> None:
    if job.status == "failed":
        raise typer.Exit(code=1)


def submit(
    kind: str = typer.Argument(
        ..., metavar="KIND", help="merge-batch, quality, transfer, train-batch, mhr or shard-pack."
    ),
    params: str = typer.Argument("{}", metavar="PARAMS", help="A JSON file, - for stdin, or an inline JSON object."),
    detach: bool = typer.Option(False, "--detach", help="Only queue it (a server or `jobs run` runs it)."),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1, max=20, help="Runs before a job whose worker keeps dying fails."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Submit a job and follow it to the end (Rich progress on a terminal).

    A merge-batch file is {"merges": [{"names": [...], "method": "lego", "k": 8, "name": ...}, ...]};
    each merge takes `adapterhub merge`'s options.

    \b
    Example:
        adapterhub jobs submit merge-batch merges.json
        adapterhub jobs submit quality '{"quick": true, "max_examples": 40}'
        ADAPTERHUB_RAY_ADDRESS=head:6379 adapterhub jobs submit merge-batch merges.json --json
    """
    with handle_errors():
        hub = open_hub()
        job = hub.jobs.submit(kind, _params(params), max_attempts=max_attempts, dispatch=not detach)
        if detach:
            info(f"queued job {job.id}; `adapterhub serve` on this catalog or `adapterhub jobs run {job.id}` runs it")
        else:
            info(f"job {job.id} ({job.kind}) runs on the {hub.jobs.backend.name} backend")
            job = _follow(hub, job.id, quiet=json_output)
    _render(job, json_output)
    _exit_for(job)


def list_(
    status: Optional[str] = typer.Option(None, "--status", metavar="STATUS", help="queued, running, succeeded, failed, cancelled."),
    kind: Optional[str] = typer.Option(None, "--kind", metavar="KIND", help="Only jobs of this kind."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many (newest first)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """List jobs, newest first (a running job whose worker died is requeued or failed first).

    \b
    Example:
        adapterhub jobs list --status running
    """
    with handle_errors():
        jobs = open_hub().jobs.list(status=status, kind=kind.replace("-", "_") if kind else None, limit=limit)
    if json_output:
        print_json([j.to_dict() for j in jobs])
        return
    print_table(f"{len(jobs)} job(s)", ["id", "kind", "status", "attempts", "progress", "created"],
                [[j.id, j.kind, j.status, f"{j.attempts}/{j.max_attempts}", _summary(j), j.to_dict()["created"]]
                 for j in jobs])


def show(
    job_id: str = typer.Argument(..., metavar="ID", help="The job id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Wait for it to end, with progress bars."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Show one job: status, attempts, progress, then its result or error.

    \b
    Example:
        adapterhub jobs show 3f2a9c... --follow
    """
    with handle_errors():
        hub = open_hub()
        job = _follow(hub, job_id, quiet=json_output) if follow else hub.jobs.show(job_id)
    _render(job, json_output)
    _exit_for(job)


def cancel(job_id: str = typer.Argument(..., metavar="ID", help="The job id.")) -> None:
    """Cancel a queued or running job (a running one stops before storing anything more).

    \b
    Example:
        adapterhub jobs cancel 3f2a9c...
    """
    with handle_errors():
        job = open_hub().jobs.cancel(job_id)
    info(f"job {job.id} is {job.status}")


def run(
    job_id: str = typer.Argument(..., metavar="ID", help="The job id."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Run a queued job in this process now (e.g. one submitted with --detach).

    \b
    Example:
        adapterhub jobs run 3f2a9c...
    """
    with handle_errors():
        hub = open_hub()
        job = hub.jobs.run(job_id)
    _render(job, json_output)
    _exit_for(job)


def typer_app() -> typer.Typer:
    """The jobs commands (the root group calls this when ``jobs`` is first used)."""
    jobs = command_app(help=JOBS_HELP, no_args_is_help=True)
    jobs.command("submit")(submit)
    jobs.command("list")(list_)
    jobs.command("show")(show)
    jobs.command("cancel")(cancel)
    jobs.command("run")(run)
    app = command_app()
    app.add_typer(jobs, name="jobs")
    return app
