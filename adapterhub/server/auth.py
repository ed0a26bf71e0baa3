"""Token checks for the server: ``Authorization: Bearer <token>``, as ``huggingface_hub`` sends it.

The decisions themselves are the facade's (``adapterhub.app.access``, where the model is written
down); these functions read the header, apply the server's ``--read-token-required`` switch and
call them. A token that is sent but unknown is refused even where none is needed, so a typo never
passes unnoticed. These functions block (they query the catalog): call them from sync routes or a
thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request

from adapterhub.errors import AuthError

if TYPE_CHECKING:
    from adapterhub.app import AdapterHub

__all__ = ["bearer", "hub_of", "request_token", "require_read", "require_write"]


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


def request_token(request: Request) -> Any:
    """The caller's token record (None without one), with ``--read-token-required`` applied.

    Raises:
        AuthError: bad token, or no token where the server requires one for reads.
    """
    token = hub_of(request).check_token(bearer(request))
    if token is None and request.app.state.read_token_required:
        raise AuthError(
            "this server requires a token for reads; pass one as HF_TOKEN or 'Authorization: Bearer <token>' "
            "(create it with `adapterhub token create --read-only`)"
        )
    return token


def require_read(request: Request, repo_id: str | None = None) -> Any:
    """Check read access (to ``repo_id`` when given); returns the token record or None.

    Raises:
        AuthError: bad token, or no token where one is required.
        RepoNotFoundError: ``repo_id`` does not exist, or is private and not readable with this
            token (the same answer, so private names cannot be probed).
    """
    token = request_token(request)
    if repo_id is not None:
        hub_of(request).authorize_read(token, repo_id)
    return token


def require_write(request: Request, repo_id: str | None, *, must_exist: bool = True) -> Any:
    """Check that the caller may write to ``repo_id`` (``must_exist=False``: may create it).

    ``repo_id=None``: only that the caller may write at all (before a body names the repo); every
    route must then check the repo itself too.

    Returns the token record.

    Raises:
        AuthError: no token or a bad one (401).
        RepoNotFoundError: ``must_exist`` and the repo is missing or hidden from this token (404).
        PermissionDeniedError: a read-only token, or another namespace than the token's (403).
    """
    return hub_of(request).authorize_write(hub_of(request).check_token(bearer(request)), repo_id, must_exist=must_exist)
