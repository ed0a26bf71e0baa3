"""Access tokens of ``adapterhub serve``: create, list, revoke, check.

Only a token's sha256 is stored; the secret is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from adapterhub.app.core import HubCore
from adapterhub.errors import AuthError, InvalidTokenError
from adapterhub.store import hub_catalog
from adapterhub.store.hub_catalog import TokenRecord

_TOUCH_EVERY_SECONDS = 60.0  # last_used to the minute, not a database write per request


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(core: HubCore, *, name: str | None = None, write: bool = True) -> dict[str, Any]:
    """Make a new access token for ``adapterhub serve``; the secret is returned only here.

    ``write=False`` makes a read-only token (for servers started with ``--read-token-required``).

    Returns:
        The token's record as a dict plus ``"token"``, the secret.

    Raises:
        InvalidParameterError: a token of that name exists.
    """
    secret = "ah_" + secrets.token_urlsafe(32)
    record = hub_catalog.add_token(
        core.catalog, name=name or f"token-{secrets.token_hex(3)}", token_sha256=_hash(secret), write=write
    )
    return {**record.to_dict(), "token": secret}


def list_tokens(core: HubCore) -> list[dict[str, Any]]:
    """All tokens (never their secrets)."""
    return [t.to_dict() for t in hub_catalog.list_tokens(core.catalog)]


def revoke_token(core: HubCore, key: str) -> dict[str, Any]:
    """Delete a token by name (or id); it stops working at once. Raises ``AuthError`` if unknown."""
    return hub_catalog.remove_token(core.catalog, key).to_dict()


def check_token(core: HubCore, secret: str | None, *, write: bool = False) -> TokenRecord | None:
    """The token record for ``secret`` (None when no secret is given).

    Raises:
        InvalidTokenError: the secret is unknown or was revoked.
        AuthError: ``write`` is asked of a read-only token.
    """
    if not secret:
        return None
    record = hub_catalog.find_token(core.catalog, _hash(secret))
    if record is None:
        raise InvalidTokenError(
            "invalid token: it is unknown or was revoked; create one with `adapterhub token create`"
        )
    if write and not record.write:
        raise AuthError(f"token '{record.name}' is read-only; writes need a token made without --read-only")
    now = time.monotonic()
    if now - core.token_last_touched.get(record.id, float("-inf")) > _TOUCH_EVERY_SECONDS:
        core.token_last_touched[record.id] = now
        hub_catalog.touch_token(core.catalog, record.id)
    return record
