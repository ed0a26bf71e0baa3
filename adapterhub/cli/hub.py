"""Hub commands: push, pull, serve, and the server's access tokens (token create/list/revoke)."""

from __future__ import annotations

import os

from typing import Any, Optional

import typer

from adapterhub.cli.catalog import JSON_OPTION, open_hub
from adapterhub.cli.lazy import command_app
from adapterhub.cli.output import handle_errors, info, print_json, print_table

ENDPOINT_OPTION = typer.Option(
    None, "--endpoint", metavar="URL", help="Hub URL (default HF_ENDPOINT, else huggingface.co)."
)
TOKEN_OPTION = typer.Option(
    None, "--token", metavar="TEXT", help="Access token (default HF_TOKEN, else the saved login)."
)


def push(
    name: str = typer.Argument(..., metavar="NAME", help="Catalog name, 'namespace/name'."),
    repo_id: str = typer.Argument(..., metavar="REPO_ID", help="Hub repo id, 'namespace/name'."),
    revision: str = typer.Option("main", "--revision", metavar="TEXT", help="Branch to commit to."),
    private: bool = typer.Option(False, "--private", help="Create the repo private (if it does not exist)."),
    endpoint: Optional[str] = ENDPOINT_OPTION,
    token: Optional[str] = TOKEN_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Upload an adapter to a hub repo, creating the repo if needed.

    The repo gets the PEFT folder and a model card.

    \b
    Example:
        adapterhub push acme/sql-lora acme/sql-lora --endpoint http://127.0.0.1:8000
    """
    with handle_errors():
        result = open_hub().push(name, repo_id, revision=revision, private=private, endpoint=endpoint, token=token)
    if json_output:
        print_json(result)
    else:
        info(f"pushed {name} to {result['url']} (commit {result['revision'][:12]})")


def pull(
    repo_id: str = typer.Argument(..., metavar="REPO_ID", help="Hub repo id, 'namespace/name'."),
    revision: Optional[str] = typer.Option(
        None, "--revision", metavar="TEXT", help="Branch, tag or commit (default main)."
    ),
    name: Optional[str] = typer.Option(
        None, "--name", "-n", metavar="NAME", help="Catalog name (default: the repo id)."
    ),
    endpoint: Optional[str] = ENDPOINT_OPTION,
    token: Optional[str] = TOKEN_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Download, validate and import an adapter from a hub repo.

    Pulling a repo again after a new commit adds that commit as a new revision.

    \b
    Example:
        adapterhub pull org/some-lora --name acme/some-lora
    """
    with handle_errors():
        record = open_hub().pull(repo_id, revision=revision, name=name, endpoint=endpoint, token=token)
    if json_output:
        print_json(record.to_dict())
    else:
        info(
            f"pulled {repo_id}@{(record.source_revision or '')[:12]} as {record.name} "
            f"(revision {(record.revision or '')[:12]}, sha256 {record.digest[:12]})"
        )


def serve(
    host: str = typer.Option("127.0.0.1", "--host", metavar="TEXT", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, metavar="INTEGER", help="TCP port."),
    read_token_required: bool = typer.Option(
        False, "--read-token-required", help="Reads need a token too (writes always do)."
    ),
    max_upload_mb: int = typer.Option(
        2048, "--max-upload-mb", min=1, metavar="INTEGER", help="Most MiB of files per commit."
    ),
    lfs_threshold_mb: float = typer.Option(
        10.0,
        "--lfs-threshold-mb",
        min=0,
        metavar="FLOAT",
        envvar="ADAPTERHUB_LFS_THRESHOLD_MB",
        help="Files this large, and all *.safetensors, upload before the commit (LFS, or Xet with hf_xet); 0: all inline.",
    ),
    log_level: str = typer.Option("info", "--log-level", metavar="TEXT", help="uvicorn log level."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, metavar="INTEGER", help="Server processes on this port (one catalog)."
    ),
    rate_limit: float = typer.Option(
        50.0, "--rate-limit", min=0, metavar="FLOAT", envvar="ADAPTERHUB_SERVE_RATE_LIMIT",
        help="Inference requests per second per token, per worker (0: no limit).",
    ),
    cache_mb: float = typer.Option(
        512.0, "--cache-mb", min=1, metavar="FLOAT", envvar="ADAPTERHUB_SERVE_CACHE_MB",
        help="Adapter factors kept in memory per served base (LRU).",
    ),
    max_batch: int = typer.Option(
        32, "--max-batch", min=1, max=4096, metavar="INTEGER", envvar="ADAPTERHUB_SERVE_MAX_BATCH",
        help="Inference inputs per batch (requests for different adapters share one).",
    ),
    batch_wait_ms: float = typer.Option(
        5.0, "--batch-wait-ms", min=0, max=1000, metavar="FLOAT", envvar="ADAPTERHUB_SERVE_BATCH_WAIT_MS",
        help="How long the first request of a batch waits for others.",
    ),
) -> None:
    """Serve the catalog as a Hugging Face-compatible hub and a REST API.

    Clients point HF_ENDPOINT at it: huggingface_hub and PEFT then push and pull as usual. The
    API docs are at /docs. OpenAI-compatible inference (/v1/embeddings, /v1/classify,
    /v1/completions, /v1/chat/completions, /v1/models) takes an adapter name, "base", "auto" or
    "mixture" as the model, and batches requests for different adapters together. The server runs until stopped (Ctrl-C), so start clients in a second
    terminal, or run the server in the background as below. Several processes (--workers, or
    servers on several hosts sharing one ADAPTERHUB_DATABASE_URL) may serve one home: commits to
    a repo never overwrite each other.

    \b
    Example:
        adapterhub token create --owner acme     # prints TOKEN, needed for pushes to acme/
        adapterhub serve --port 8000 &
        export HF_ENDPOINT=http://127.0.0.1:8000
        adapterhub push acme/sql-lora acme/sql-lora --token TOKEN
    """
    try:
        from adapterhub.server import serve as run_server
    except ModuleNotFoundError as e:
        if e.name not in ("fastapi", "uvicorn", "starlette"):
            raise
        info(f"error: `adapterhub serve` needs {e.name}; install it with: pip install 'adapterhub[server]'")
        raise typer.Exit(code=1) from None

    from adapterhub.server.lfs import threshold_from_mb

    lfs_threshold = threshold_from_mb(lfs_threshold_mb)
    # the inference service reads its limits from the environment, in this process or the workers
    os.environ["ADAPTERHUB_SERVE_CACHE_MB"] = str(cache_mb)
    os.environ["ADAPTERHUB_SERVE_MAX_BATCH"] = str(max_batch)
    os.environ["ADAPTERHUB_SERVE_BATCH_WAIT_MS"] = str(batch_wait_ms)
    with handle_errors():
        hub = open_hub()
    info(f"adapterhub serving {hub.settings.home} on http://{host}:{port} (docs at /docs)")
    if workers > 1:
        from adapterhub.server.workers import serve_workers

        settings = hub.settings
        hub.close()  # each worker opens its own facade on the same home
        serve_workers(
            workers=workers,
            home=str(settings.home),
            database_url=settings.database_url,
            host=host,
            port=port,
            read_token_required=read_token_required,
            max_upload_bytes=max_upload_mb * 1024 * 1024,
            lfs_threshold=lfs_threshold,
            log_level=log_level,
            rate_limit=rate_limit,
        )
        return
    run_server(
        hub,
        host=host,
        port=port,
        read_token_required=read_token_required,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        lfs_threshold=lfs_threshold,
        log_level=log_level,
        rate_limit=rate_limit,
    )


TOKEN_HELP = """Access tokens of `adapterhub serve`: create, list, revoke.

A token acts for one namespace (--owner, default its --name): it writes only there and into the
namespaces granted with --namespace, and reads private repos only there; public repos are
readable by all. --admin makes an operator token (every namespace). Only their sha256 is stored;
a token is shown once, when it is created.

\b
Example:
    adapterhub token create --owner acme --name ci
"""


def token_create(
    name: Optional[str] = typer.Option(None, "--name", metavar="TEXT", help="A name to list and revoke it by."),
    owner: Optional[str] = typer.Option(
        None, "--owner", metavar="NAMESPACE", help="Namespace it acts for (default: its --name)."
    ),
    namespaces: list[str] = typer.Option(
        [], "--namespace", metavar="NAMESPACE", help="One more namespace it may write and read privately (repeat)."
    ),
    read_only: bool = typer.Option(False, "--read-only", help="Allow reads only, no writes."),
    admin: bool = typer.Option(False, "--admin", help="Operator token: every namespace, every private repo."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Create a token and print it once (it cannot be shown again).

    Without --owner the token owns the namespace named like the token (--name), as a hub user owns
    the namespace of their name.

    \b
    Example:
        adapterhub token create --owner acme --name acme-ci
        adapterhub token create --owner acme --namespace team2 --read-only
        adapterhub token create --admin --name operator
    """
    with handle_errors():
        result = open_hub().create_token(
            name=name, write=not read_only, owner=owner, namespaces=namespaces, admin=admin
        )
    if json_output:
        print_json(result)
    else:
        typer.echo(result["token"])
        info(
            f"token '{result['name']}' ({result['scope']}, {_namespaces(result)}) created; "
            "store it now, it is not shown again"
        )


def _namespaces(token: dict[str, Any]) -> str:
    """What a token may write or read privately, in words."""
    if token["admin"]:
        return "admin: every namespace"
    return "namespaces: " + ", ".join([token["owner"], *token["namespaces"]])


def token_list(json_output: bool = JSON_OPTION) -> None:
    """List tokens (names, scopes and namespaces, never the secrets).

    \b
    Example:
        adapterhub token list --json
    """
    with handle_errors():
        tokens = open_hub().list_tokens()
    if json_output:
        print_json(tokens)
        return
    print_table(
        f"{len(tokens)} token(s)",
        ["id", "name", "scope", "namespaces", "created", "last used"],
        [
            [t["id"], t["name"], t["scope"], _namespaces(t).split(": ", 1)[1], t["created"], t["last_used"] or "-"]
            for t in tokens
        ],
    )


def token_revoke(key: str = typer.Argument(..., metavar="NAME", help="Token name (or id).")) -> None:
    """Revoke a token; clients using it are refused at once.

    \b
    Example:
        adapterhub token revoke ci
    """
    with handle_errors():
        result = open_hub().revoke_token(key)
    info(f"revoked token '{result['name']}'")


def typer_app() -> typer.Typer:
    """The hub commands (the root group calls this when one of them is first used)."""
    tokens = command_app(help=TOKEN_HELP, no_args_is_help=True)
    tokens.command("create")(token_create)
    tokens.command("list")(token_list)
    tokens.command("revoke")(token_revoke)
    app = command_app()
    app.command("push")(push)
    app.command("pull")(pull)
    app.command("serve")(serve)
    app.add_typer(tokens, name="token")
    return app
