"""The one place where adapterhub errors become HTTP answers: status codes and hub error headers.

``STATUS`` maps error classes to status codes, most specific class first (the first class an
error is an instance of wins). ``HUB_ERROR_CODES`` gives the ``X-Error-Code`` header that
``huggingface_hub`` reads to raise its own ``RepositoryNotFoundError``, ``RevisionNotFoundError``
and ``EntryNotFoundError``; ``HUB_ERROR_MESSAGES`` the few ``X-Error-Message`` texts it matches
exactly. Anything that is not an ``AdapterHubError`` is a bug: the client gets a fixed 500 body
(no message, path or traceback) and the traceback goes to the server log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from fastapi.responses import JSONResponse

from adapterhub.errors import (
    AdapterExistsError,
    AdapterHubError,
    AdapterNotFoundError,
    AuthError,
    BlobCorruptError,
    CommitConflictError,
    EntryNotFoundError,
    HubError,
    HubRevisionNotFoundError,
    IncompatibleAdaptersError,
    InvalidAdapterError,
    InvalidNameError,
    InvalidParameterError,
    InvalidTokenError,
    OperationCancelledError,
    OverloadedError,
    PermissionDeniedError,
    RepoNotFoundError,
    StorageUnavailableError,
    TooManyRequestsError,
    UnsupportedAdapterError,
    UploadTooLargeError,
)

__all__ = [
    "HUB_ERROR_CODES",
    "HUB_ERROR_MESSAGES",
    "INTERNAL_ERROR_BODY",
    "STATUS",
    "error_response",
    "http_status",
    "internal_error_response",
]

STATUS: tuple[tuple[type[AdapterHubError], int], ...] = (
    (AdapterNotFoundError, 404),  # also RepoNotFoundError, HubRevisionNotFoundError, EntryNotFoundError
    (AdapterExistsError, 409),  # a conflict: the repo or entry exists
    (PermissionDeniedError, 403),  # a valid token that may not: read-only, or another namespace
    (AuthError, 401),  # no token where one is needed; also InvalidTokenError
    (CommitConflictError, 412),  # a stale parentCommit: precondition failed, as the HF hub answers
    (UploadTooLargeError, 413),  # more bytes than the server takes
    (TooManyRequestsError, 429),  # this token already runs as many merges as it may
    (OverloadedError, 503),  # the inference queue is full: shed load, the client retries
    (StorageUnavailableError, 503),  # the bucket did not answer: nothing changed, the client retries
    (OperationCancelledError, 499),  # the client went away (nginx's code; nobody reads the answer)
    (InvalidNameError, 400),  # also InvalidRepoPathError
    (InvalidAdapterError, 422),  # also ForbiddenFileError
    (UnsupportedAdapterError, 422),
    (IncompatibleAdaptersError, 422),
    (InvalidParameterError, 422),
    (BlobCorruptError, 500),  # the store is damaged: not the client's fault
    (HubError, 502),  # an upstream hub failed
    (AdapterHubError, 400),
)

HUB_ERROR_CODES: tuple[tuple[type[AdapterHubError], str], ...] = (
    (HubRevisionNotFoundError, "RevisionNotFound"),
    (EntryNotFoundError, "EntryNotFound"),
    (RepoNotFoundError, "RepoNotFound"),
    (AdapterNotFoundError, "RepoNotFound"),  # a catalog entry is a repo
)

HUB_ERROR_MESSAGES: tuple[tuple[type[AdapterHubError], str], ...] = (
    (InvalidTokenError, "Invalid credentials in Authorization header"),
)

INTERNAL_ERROR_BODY = {"error": "internal server error; see the server log", "type": "InternalError"}


_T = TypeVar("_T")


def _first_match(table: Sequence[tuple[type[AdapterHubError], _T]], error_type: type[AdapterHubError]) -> _T | None:
    """The value of the first row whose class ``error_type`` is (a subclass of)."""
    for cls, value in table:
        if issubclass(error_type, cls):
            return value
    return None


def http_status(error_type: type[AdapterHubError]) -> int:
    """The HTTP status code the server answers for errors of this class."""
    status = _first_match(STATUS, error_type)
    return 500 if status is None else status


def _header_safe(text: str) -> str:
    """One line of latin-1, as HTTP headers must be."""
    line = " ".join(text.split())
    return line.encode("latin-1", errors="replace").decode("latin-1")[:1000]


def error_response(exc: AdapterHubError) -> JSONResponse:
    """The answer to an expected error: ``{"error": message, "type": class}`` plus hub headers."""
    message = str(exc)
    headers = {"X-Error-Message": _header_safe(_first_match(HUB_ERROR_MESSAGES, type(exc)) or message)}
    code = _first_match(HUB_ERROR_CODES, type(exc))
    if code is not None:
        headers["X-Error-Code"] = code
    if isinstance(exc, EntryNotFoundError) and exc.revision:
        headers["X-Repo-Commit"] = exc.revision
    body = {"error": message, "type": type(exc).__name__}
    return JSONResponse(body, status_code=http_status(type(exc)), headers=headers)


def internal_error_response() -> JSONResponse:
    """The answer to a bug: a fixed body, so no path, message or traceback reaches the client."""
    return JSONResponse(dict(INTERNAL_ERROR_BODY), status_code=500)
