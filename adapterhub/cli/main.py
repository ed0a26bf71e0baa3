"""Entry point of the ``adapterhub`` command; each command group lives in its own module."""

from __future__ import annotations

import typer

from adapterhub.cli import catalog

app = typer.Typer(
    name="adapterhub",
    help="Keep a catalog of LoRA adapters and compose new adapters from them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

catalog.register(app)

for _module in ("adapterhub.cli.merge", "adapterhub.cli.evaluate", "adapterhub.cli.hub"):
    try:
        _mod = __import__(_module, fromlist=["register"])
    except ModuleNotFoundError as _e:  # a command group not built yet
        if _e.name != _module:
            raise
        continue
    _mod.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
