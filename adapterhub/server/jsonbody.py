"""Reading a route's small JSON object body: bounded, parsed off the event loop, nesting-limited."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from adapterhub.errors import InvalidParameterError
from adapterhub.hubformat.limits import JsonNestingError, loads_json_bounded

__all__ = ["json_object"]


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body, read after the auth checks (so they answer first).

    The body is bounded by ``BodyLimitMiddleware`` (413 past it); it is parsed in a worker thread
    (a few MiB of JSON would stall every other request on the event loop) with a nesting bound.
    """
    body = await request.body()
    try:
        payload = await run_in_threadpool(loads_json_bounded, body)
    except JsonNestingError as e:
        raise InvalidParameterError(f"the request body is refused: {e}") from None
    except ValueError:  # also JSONDecodeError, UnicodeDecodeError
        payload = None
    if not isinstance(payload, dict):
        raise InvalidParameterError("the request body must be a JSON object")
    return payload
