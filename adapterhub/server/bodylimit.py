"""``BodyLimitMiddleware``: every request body is bounded (413 past the bound), and every response
header is stripped of control characters.

Why a middleware and not a check in each route: FastAPI reads a JSON body for a pydantic model
before the route runs, and a route added later must not forget the bound. Every request starts
with ``MAX_BODY_BYTES`` (a few MiB, plenty for JSON and YAML); a route that streams large uploads
(the NDJSON commit, LFS uploads) raises its own limit with ``allow_body`` before it reads. The bound
is checked while the body is read: ``Content-Length`` up front, and the bytes actually received
(chunked bodies, or a client that lies about the length) as they arrive, so an oversized body is
never held in memory and the refusal comes after at most the limit's worth of bytes.

Headers: ``h11`` refuses to send a header value holding NUL, CR, LF or other control characters
and drops the connection instead; a ``%00`` in a URL path ends up in ``X-Error-Message``. Every
header the server sends passes through ``clean_header_value`` here, so no route can trip on it.
"""

from __future__ import annotations

import json
import re
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapterhub.errors import UploadTooLargeError
from adapterhub.hubformat.limits import MAX_BODY_BYTES

__all__ = ["MAX_BODY_BYTES", "BodyLimitMiddleware", "BodyTooLargeError", "allow_body", "clean_header_value"]

_STATE_KEY = "adapterhub.body_limit"
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # every C0 control but TAB, and DEL


class BodyTooLargeError(UploadTooLargeError):
    """A request body over the route's limit (answered 413)."""

    def __init__(self, limit: int, received: int | None = None) -> None:
        self.limit = limit
        size = f"{received} bytes" if received is not None else f"more than {limit} bytes"
        super().__init__(f"the request body is {size}; this route takes at most {limit} bytes")


class _BodyState:
    """The limit of one request and the bytes received so far."""

    def __init__(self, limit: int, declared: int | None) -> None:
        self.limit = limit
        self.declared = declared
        self.received = 0
        self.refused: BodyTooLargeError | None = None

    def check(self, more: int = 0) -> None:
        """Count ``more`` bytes received; raise (and remember) a refusal past the limit.

        Called with 0 before the first read, so a declared ``Content-Length`` over the limit is
        refused before any of the body is waited for.
        """
        self.received += more
        if self.refused is None and self.declared is not None and self.declared > self.limit:
            self.refused = BodyTooLargeError(self.limit, self.declared)
        elif self.refused is None and self.received > self.limit:
            self.refused = BodyTooLargeError(self.limit)
        if self.refused is not None:
            raise self.refused


def allow_body(request: Request, max_bytes: int) -> None:
    """Let this request's body be up to ``max_bytes`` (call before reading it; streaming routes only)."""
    state = request.scope.get(_STATE_KEY)
    if isinstance(state, _BodyState):
        state.limit = max_bytes


def clean_header_value(value: bytes) -> bytes:
    """A header value with control characters (NUL, CR, LF, ...) replaced by spaces, and no
    leading or trailing blanks (``h11`` refuses those too)."""
    return _CONTROL.sub(b" ", value).strip(b" \t")


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimitMiddleware:
    """Pure ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _BodyState(self.max_bytes, _declared_length(scope))
        scope[_STATE_KEY] = state
        started = False

        async def bounded_receive() -> Message:
            state.check()
            message = await receive()
            if message["type"] == "http.request":
                state.check(len(message.get("body", b"")))
            return message

        async def refuse() -> None:
            assert state.refused is not None
            body = json.dumps({"error": str(state.refused), "type": "UploadTooLargeError"}).encode()
            headers: list[tuple[bytes, bytes]] = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-error-message", clean_header_value(str(state.refused).encode("latin-1", "replace"))),
                (b"connection", b"close"),  # the rest of the body is never read
            ]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if state.refused is not None:
                # Whatever the app made of the refusal (FastAPI turns a failed body read into a 400),
                # the client gets the one 413 answer.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await refuse()
                return
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [(k, clean_header_value(v)) for k, v in message.get("headers", [])]}
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if state.refused is None:
                raise
            if not started:  # the refusal, however the route wrapped it
                started = True
                await refuse()
