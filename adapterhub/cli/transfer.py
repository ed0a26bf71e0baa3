"""``adapterhub transfer``: move an adapter to a new base model without its data (Trans-LoRA).

Two forms share one command, as the issue's interface has them: ``transfer NAME --to-base B``
runs a transfer; ``transfer prepare NAME --data FILE`` builds the source-side kit while the data
is at hand. (A Click group cannot take both a sub-command and a free ``NAME`` in its first slot,
so the first word decides.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

from adapterhub.cli.catalog import JSON_OPTION, open_hub
from adapterhub.cli.lazy import command_app
from adapterhub.cli.output import handle_errors, info, print_json, print_table, stderr_console

_STAGES = ("discriminator data", "generated", "accepted", "distillation")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def transfer(
    words: list[str] = typer.Argument(..., metavar="NAME | prepare NAME", help="The adapter (or `prepare` NAME)."),
    to_base: Optional[str] = typer.Option(None, "--to-base", metavar="BASE", help="Target base: mpnet, smollm2, minilm."),
    samples: int = typer.Option(250, "--samples", min=1, metavar="N", help="Synthetic inputs to distil on (|D_syn|)."),
    max_candidates: Optional[int] = typer.Option(
        None, "--max-candidates", min=1, metavar="N", help="Generation budget (default 8 x --samples)."),
    seeds: Optional[Path] = typer.Option(
        None, "--seeds", metavar="FILE", help='Seed inputs, {"text": ...} per line (default: the kit\'s 5).'),
    generator: str = typer.Option("smollm2", "--generator", metavar="BASE", help="The generator LM (a causal base)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", metavar="NS/NEW", help="Name of the new adapter."),
    data: Optional[Path] = typer.Option(
        None, "--data", metavar="FILE", help='prepare: the adapter\'s training inputs, {"text": ...} per line.'),
    filter_rule: str = typer.Option(
        "top", "--filter", metavar="RULE",
        help="top: keep the --samples candidates the discriminator rates most real (of 2 x --samples); "
             "threshold: keep those it calls real (p > 0.5, the paper's rule; 8 x --samples budget)."),
    rank: int = typer.Option(8, "--rank", min=1, metavar="R", help="Rank of the new adapter."),
    epochs: int = typer.Option(2, "--epochs", min=1, metavar="E", help="Distillation passes over D_syn."),
    seed: int = typer.Option(0, "--seed", metavar="S", help="Seeds sampling, the discriminator and the student."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, metavar="N", help="Torch threads."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Move an adapter to another base model without its training data (Trans-LoRA, NeurIPS 2024).

    A generator LM prompted with the adapter's 5 seed inputs samples candidates; the discriminator
    built at source time keeps those it judges real; the source adapter (teacher) labels them; a
    fresh LoRA on the target base (student) is distilled on its class distributions. The new
    adapter is scored on the task's test split beside the target's zero-shot, and its lineage
    records the source, the seeds' and the synthetic set's digests, the acceptance rate and the
    generator. `train` builds the kit; for other adapters, `transfer prepare NAME --data FILE`.
    Without a kit, --seeds gives an unfiltered transfer.

    \b
    Example:
        adapterhub transfer prepare acme/wn-pos --data pos_train.jsonl
        adapterhub transfer acme/wn-pos --to-base mpnet --samples 250
    """
    if words[0] == "prepare":
        if len(words) != 2:
            _usage("usage: adapterhub transfer prepare NAME --data FILE")
        _prepare(words[1], data, seeds, generator, seed, threads, json_output)
        return
    if len(words) != 1:
        _usage("usage: adapterhub transfer NAME --to-base BASE (or: transfer prepare NAME --data FILE)")
    if to_base is None:
        _usage("--to-base is required: the base model to move the adapter to (e.g. mpnet)")
    if data is not None:
        _usage("--data belongs to `adapterhub transfer prepare NAME --data FILE`")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    with handle_errors():
        hub = open_hub()
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True, disable=json_output or not console.is_terminal) as bar:
            jobs = {stage: bar.add_task(stage, total=None, visible=False) for stage in _STAGES}

            def progress(stage: str, done: int, total: int) -> None:
                bar.update(jobs[stage], completed=done, total=total, visible=True)

            result = hub.transfer(words[0], to_base=to_base, samples=samples, max_candidates=max_candidates,
                                  seeds=seeds, generator=generator, new_name=name, filter_rule=filter_rule,
                                  rank=rank, epochs=epochs,
                                  seed=seed, threads=threads, progress=progress)
    if json_output:
        print_json(result)
        return
    stats, test = result["stats"], result["metrics"]["test"]
    print_table(
        f"{result['source']} -> {result['adapter']['name']} on {result['to_base']}",
        ["generated", "accepted", "acceptance", "distil steps", "test accuracy", "target zero-shot"],
        [[stats["generated"], stats["accepted"], f"{stats['acceptance_rate']:.1%}", stats["distillation_steps"],
          _pct(test["accuracy"]), _pct(test["zero_shot_accuracy"])]],
    )
    if not result["filtered"]:
        info("unfiltered: the source had no transfer kit, so every sampled candidate was used")


def _prepare(name: str, data: Path | None, seeds: Path | None, generator: str, seed: int, threads: int | None,
             json_output: bool) -> None:
    if data is None:
        _usage("transfer prepare needs --data FILE: the adapter's training inputs, one {\"text\": ...} per line")
    with handle_errors():
        result = open_hub().transfer_prepare(name, data=data, seeds=seeds, generator=generator, seed=seed,
                                             threads=threads)
    if json_output:
        print_json(result)
        return
    stats = result["stats"]
    info(f"transfer kit of {name} stored ({result['kit'][:12]}): {result['seeds']} seeds, discriminator on "
         f"{result['discriminator_base']} — held-out accuracy {stats['discriminator_validation_accuracy']:.1%}")


def _usage(message: str) -> NoReturn:
    """A usage error: one line on stderr, exit code 2 (as Click's own)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def typer_app() -> typer.Typer:
    """The transfer command (the root group calls this when ``transfer`` is first used)."""
    app = command_app()
    app.command("transfer")(transfer)

    @app.callback()
    def _group() -> None:  # a callback keeps Typer from collapsing a one-command app into that command
        """The transfer command."""

    return app
