"""What keeps the web pages safe: headers, the sign-in cookie, CSRF tokens, who the caller is.

- Every page answer carries a strict Content-Security-Policy: scripts and styles only from this
  server's own files (no inline script, so a model card's ``<script>`` or ``onerror=`` could not
  run even if the sanitiser missed one), no frames, forms only to this server. ``connect-src
  'self'`` lets ``app.js`` poll a job; nothing else is allowed.
- Signing in stores the token in an ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
  other site's page sends it) cookie, ``Secure`` on https. The token is checked on every request
  by the same facade call as a ``Bearer`` header (``check_token``), so a revoked token stops
  working at once, and pages apply the API's read rules (``--read-token-required``, private repos).
- CSRF: a double-submit token. A random value in its own cookie (``SameSite=Strict``) must come
  back in each POST form; another site can neither read the cookie nor set the field. An
  ``Origin`` header, when the browser sends one, must also be this server.
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response

from adapterhub.errors import AuthError, PermissionDeniedError

if TYPE_CHECKING:
    from adapterhub.app import AdapterHub

__all__ = [
    "CSRF_COOKIE",
    "SECURITY_HEADERS",
    "TOKEN_COOKIE",
    "CsrfError",
    "check_csrf",
    "clear_token",
    "csrf_token",
    "page_token",
    "set_token",
]

TOKEN_COOKIE = "adapterhub_token"
CSRF_COOKIE = "adapterhub_csrf"
MAX_COOKIE = 512  # a token is ~50 characters; anything longer is not ours

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class CsrfError(PermissionDeniedError):
    """A form came without this browser's CSRF token (or from another origin): 403, nothing done."""

    def __init__(self, why: str = "the form's security token is missing or stale") -> None:
        super().__init__(f"{why}; reload the page and send the form again")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _cookie(request: Request, name: str) -> str | None:
    value = request.cookies.get(name)
    if not value or len(value) > MAX_COOKIE:
        return None
    return value


def page_token(request: Request, hub: AdapterHub) -> Any:
    """The signed-in token's record (None when signed out), with the API's read rule applied.

    Raises:
        AuthError: the cookie holds a token the hub no longer knows, or the server requires a
            token for reads and none is signed in.
    """
    token = hub.check_token(_cookie(request, TOKEN_COOKIE))
    if token is None and request.app.state.read_token_required:
        raise AuthError("this hub requires a token for reads: sign in with one (/ui/signin)")
    return token


def set_token(request: Request, response: Response, token: str) -> None:
    """Sign in: the token in an HttpOnly, SameSite=Strict cookie (Secure on https)."""
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/")


def clear_token(response: Response) -> None:
    """Sign out (the token itself stays valid: revoke it with ``adapterhub token revoke``)."""
    response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="strict")


def csrf_token(request: Request, response: Response | None = None) -> str:
    """This browser's CSRF token for a form; set as a cookie on ``response`` when it had none.

    The value is stored on ``request.state`` so that every form of one page carries the same token.
    """
    existing = getattr(request.state, "csrf", None) or _cookie(request, CSRF_COOKIE)
    value = existing or secrets.token_urlsafe(32)
    request.state.csrf = value
    if response is not None and _cookie(request, CSRF_COOKIE) != value:
        response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="strict", secure=_secure(request), path="/")
    return value


def check_csrf(request: Request, form: dict[str, list[str]]) -> None:
    """Refuse a POST whose form token does not match this browser's cookie, or that another
    origin sent.

    Raises:
        CsrfError.
    """
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") != str(request.base_url).rstrip("/"):
        raise CsrfError("the form was sent from another site")
    cookie = _cookie(request, CSRF_COOKIE)
    sent = (form.get("csrf") or [""])[0]
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise CsrfError()
