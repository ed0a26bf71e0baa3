"""Access tokens of ``adapterhub serve``: create, list, revoke, check.

Only a token's sha256 is stored; the secret is shown once, when it is made. A token has an owner
namespace, optional granted namespaces, a read or write scope and an admin flag; what those allow
is decided in ``access`` (one place for every authorization decision).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from typing import Any

from adapterhub.app.core import HubCore
from adapterhub.errors import InvalidNameError, InvalidParameterError, InvalidTokenError
from adapterhub.names import validate_name
from adapterhub.store import hub_catalog
from adapterhub.store.hub_catalog import TokenRecord

_TOUCH_EVERY_SECONDS = 60.0  # last_used to the minute, not a database write per request


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    core: HubCore,
    *,
    name: str | None = None,
    write: bool = True,
    owner: str | None = None,
    namespaces: Sequence[str] = (),
    admin: bool = False,
) -> dict[str, Any]:
    """Make a new access token for ``adapterhub serve``; the secret is returned only here.

    A token acts for one namespace, its ``owner``: it writes only there (and into the extra
    ``namespaces`` it is granted) and reads private repos only there; public repos are readable by
    all. ``owner`` defaults to the token's ``name`` (as a hub user's namespace is their name), so
    ``create_token(name="alice")`` makes alice's token. ``admin=True`` makes the operator's token:
    every namespace, every private repo (it needs no owner). ``write=False`` makes it read-only.

    Returns:
        The token's record as a dict plus ``"token"``, the secret.

    Raises:
        InvalidParameterError: a token of that name exists, or no valid owner namespace.
    """
    name = name or f"token-{secrets.token_hex(3)}"
    if owner is None and not admin:
        owner = name
    scopes = [ns for ns in (owner, *namespaces) if ns is not None]
    for ns in scopes:
        check_namespace(ns, what="--owner (the token's name when --owner is not given)" if ns == owner else "--namespace")
    secret = "ah_" + secrets.token_urlsafe(32)
    record = hub_catalog.add_token(
        core.catalog,
        name=name,
        token_sha256=_hash(secret),
        write=write,
        owner=owner,
        namespaces=sorted(set(namespaces) - {owner}),
        admin=admin,
    )
    return {**record.to_dict(), "token": secret}


def list_tokens(core: HubCore) -> list[dict[str, Any]]:
    """All tokens (never their secrets)."""
    return [t.to_dict() for t in hub_catalog.list_tokens(core.catalog)]


def revoke_token(core: HubCore, key: str) -> dict[str, Any]:
    """Delete a token by name (or id); it stops working at once. Raises ``AuthError`` if unknown."""
    return hub_catalog.remove_token(core.catalog, key).to_dict()


def check_token(core: HubCore, secret: str | None) -> TokenRecord | None:
    """The token record for ``secret`` (None when no secret is given); what it may do is ``access``'s.

    Raises:
        InvalidTokenError: the secret is unknown or was revoked.
    """
    if not secret:
        return None
    record = hub_catalog.find_token(core.catalog, _hash(secret))
    if record is None:
        raise InvalidTokenError(
            "invalid token: it is unknown or was revoked; create one with `adapterhub token create`"
        )
    now = time.monotonic()
    if now - core.token_last_touched.get(record.id, float("-inf")) > _TOUCH_EVERY_SECONDS:
        core.token_last_touched[record.id] = now
        hub_catalog.touch_token(core.catalog, record.id)
    return record


def check_namespace(namespace: str, *, what: str = "namespace") -> str:
    """Return ``namespace`` if it can be the first part of a repo id (``namespace/name``).

    Raises:
        InvalidParameterError: naming ``what`` and the rule.
    """
    try:
        validate_name(f"{namespace}/x")
    except InvalidNameError:
        raise InvalidParameterError(
            f"{what} {namespace!r} is not a namespace: use letters, digits, '-', '_' or '.' (as in 'acme')"
        ) from None
    return namespace
