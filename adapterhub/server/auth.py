"""Token checks for the server: ``Authorization: Bearer <token>``, as ``huggingface_hub`` sends it.

Writes always need a write token. Reads are open, unless the server runs with
``--read-token-required`` or the repo is private; then any valid token will do. A token that is
sent but unknown is refused even where none is needed, so a typo never passes unnoticed.
These functions block (they query the catalog): call them from sync routes or a thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request

from adapterhub.errors import AuthError

if TYPE_CHECKING:
    from adapterhub.app import AdapterHub

__all__ = ["bearer", "hub_of", "require_read", "require_write"]


def hub_of(request: Request) -> AdapterHub:
    """The facade this server answers from (set by ``create_app``)."""
    hub: AdapterHub = request.app.state.hub
    return hub


def bearer(request: Request) -> str | None:
    """The token in the ``Authorization`` header, if any."""
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_read(request: Request, repo_id: str | None = None) -> Any:
    """Check read access (to ``repo_id`` when given); returns the token record or None.

    Raises:
        AuthError: bad token, or no token where one is required.
        RepoNotFoundError: ``repo_id`` does not exist.
    """
    hub = hub_of(request)
    token = hub.check_token(bearer(request))
    if token is None and request.app.state.read_token_required:
        raise AuthError(
            "this server requires a token for reads; pass one as HF_TOKEN or 'Authorization: Bearer <token>' "
            "(create it with `adapterhub token create --read-only`)"
        )
    if repo_id is not None and hub.hub_repo_private(repo_id) and token is None:
        raise AuthError(f"repo '{repo_id}' is private; pass a token (HF_TOKEN or 'Authorization: Bearer <token>')")
    return token


def require_write(request: Request) -> Any:
    """Check write access; returns the token record.

    Raises:
        AuthError: no token, a bad token or a read-only token.
    """
    token = hub_of(request).check_token(bearer(request), write=True)
    if token is None:
        raise AuthError(
            "writes need a token: create one with `adapterhub token create` on the server and pass it as "
            "HF_TOKEN or 'Authorization: Bearer <token>'"
        )
    return token
