"""One root exception for everything adapterhub reports as a user-facing error.

Each subclass carries the fields a caller needs and, where it fits, also subclasses a builtin
(``LookupError``, ``ValueError``) so generic handlers keep working. Messages say what to do next.
The CLI maps every ``AdapterHubError`` to exit code 1 and one line; the server maps them to HTTP
status codes through ``HTTP_STATUS`` below, so the two faces agree.
"""

from __future__ import annotations


class AdapterHubError(Exception):
    """Root of all expected adapterhub errors (exit code 1, one line, no traceback)."""


class InvalidAdapterError(AdapterHubError, ValueError):
    """A PEFT folder or tensor file is malformed: truncated, wrong shapes, NaN, mismatched config."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class UnsupportedAdapterError(AdapterHubError, ValueError):
    """A valid PEFT adapter of a kind adapterhub cannot handle yet (DoRA, conv LoRA, non-LoRA)."""


class InvalidNameError(AdapterHubError, ValueError):
    """An adapter name that is not ``namespace/name`` or tries path tricks."""


class AdapterNotFoundError(AdapterHubError, LookupError):
    """No catalog entry has this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no adapter named '{name}' in the catalog; see `adapterhub list`")


class AdapterExistsError(AdapterHubError, ValueError):
    """A catalog entry with this name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"an adapter named '{name}' already exists; choose another --name or `adapterhub rm {name}` first"
        )


class BlobCorruptError(AdapterHubError):
    """A stored blob does not hash to its digest (disk corruption or tampering)."""


class IncompatibleAdaptersError(AdapterHubError, ValueError):
    """Adapters cannot be combined: different base models, shapes or settings."""


class InvalidParameterError(AdapterHubError, ValueError):
    """An engine parameter is unknown or out of range."""


class HubError(AdapterHubError):
    """A hub request failed (not found, unauthorised, gated, offline)."""


class AuthError(AdapterHubError, PermissionError):
    """Missing or invalid token for an operation that needs one."""


# One table maps error classes to HTTP status codes for the server face (most specific first).
HTTP_STATUS: list[tuple[type[AdapterHubError], int]] = [
    (AdapterNotFoundError, 404),
    (AdapterExistsError, 409),
    (AuthError, 401),
    (InvalidNameError, 400),
    (InvalidAdapterError, 422),
    (UnsupportedAdapterError, 422),
    (IncompatibleAdaptersError, 422),
    (InvalidParameterError, 422),
    (BlobCorruptError, 500),
    (HubError, 502),
    (AdapterHubError, 400),
]


def http_status_for(error: AdapterHubError) -> int:
    """The HTTP status code the server answers for ``error``."""
    for cls, status in HTTP_STATUS:
        if isinstance(error, cls):
            return status
    return 400
