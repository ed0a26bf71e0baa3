"""One root exception for everything adapterhub reports as a user-facing error.

Each subclass carries the fields a caller needs and, where it fits, also subclasses a builtin
(``LookupError``, ``ValueError``) so generic handlers keep working. Messages say what to do next.
The CLI maps every ``AdapterHubError`` to exit code 1 and one line; the server maps each class to
an HTTP status in one table of its own (``adapterhub.server.errors``): nothing here knows HTTP.
"""

from __future__ import annotations

from pathlib import Path


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


# -- hub repos (the hub server and the facade's repo operations) ------------------------------


class RepoNotFoundError(AdapterNotFoundError):
    """No repo (catalog entry or created hub repo) has this id."""

    def __init__(self, name: str) -> None:
        self.name = name
        AdapterHubError.__init__(
            self, f"no repo named '{name}' on this hub; create it first (`HfApi.create_repo`) or check the id"
        )


class HubRevisionNotFoundError(AdapterNotFoundError):
    """The repo exists but has no such revision (or no revision at all yet)."""

    def __init__(self, name: str, revision: str, detail: str = "") -> None:
        self.name = name
        self.revision = revision
        AdapterHubError.__init__(
            self, f"repo '{name}' has no revision '{revision}'{detail}; use 'main' or a commit id it lists"
        )


class EntryNotFoundError(AdapterNotFoundError):
    """The revision exists but holds no file at this path."""

    def __init__(self, name: str, revision: str, path: str) -> None:
        self.name = name
        self.revision = revision
        self.path = path
        AdapterHubError.__init__(
            self, f"repo '{name}' at revision {revision[:12]} has no file '{path}'; list its files with the tree API"
        )


class InvalidRepoPathError(InvalidNameError):
    """A path in a repo that could escape it or is not portable (``..``, absolute, backslashes)."""


class ForbiddenFileError(InvalidAdapterError):
    """A file the hub never stores: pickled weights or compiled code."""


class UploadTooLargeError(InvalidAdapterError):
    """A commit carries more bytes than the server's limit."""


class CommitConflictError(InvalidParameterError):
    """The commit was built on a revision that is no longer the head."""


class InvalidTokenError(AuthError):
    """A token was sent but is unknown or revoked."""


class PermissionDeniedError(AuthError):
    """A valid token that may not do this: read-only, or another namespace than its own (HTTP 403)."""


# -- store errors: the catalog's revisions, the blob store, the catalog's schema ------------------


class RevisionNotFoundError(AdapterHubError, LookupError):
    """An adapter has no revision with this id (or the prefix is ambiguous)."""

    def __init__(self, name: str, revision: str, detail: str = "") -> None:
        self.name = name
        self.revision = revision
        super().__init__(
            f"adapter '{name}' has no revision '{revision}'{detail}; "
            "use 'main' for the newest or list the revisions of the adapter"
        )


class DigestMismatchError(InvalidAdapterError):
    """Bytes being stored do not hash to the digest the caller expected (truncated or altered input)."""

    def __init__(self, *, expected: str, actual: str, source: str | None = None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"content hashes to sha256 {actual} but {expected} was expected; "
            "the file was truncated or changed in transit — fetch or export it again",
            path=source,
        )


class BlobNotFoundError(BlobCorruptError, FileNotFoundError):
    """A blob the caller asked for is not in the store (the catalog points at a missing blob)."""

    def __init__(self, digest: str, path: Path) -> None:
        self.digest = digest
        self.path = path
        super().__init__(
            f"blob sha256:{digest} is missing from the blob store ({path}); "
            "re-import the adapter or restore the blob folder from a backup"
        )


class CatalogSchemaError(AdapterHubError):
    """The database's schema cannot be used by this version of adapterhub."""


# -- limits on work -------------------------------------------------------------------------------


class TooManyRequestsError(AdapterHubError):
    """A caller already has as much work running as it may; it should wait and try again."""


class OverloadedError(AdapterHubError):
    """The server has more work queued than it takes; retry in a moment (HTTP 503)."""


class StorageUnavailableError(AdapterHubError):
    """The object store holding the blobs did not answer; nothing was changed (HTTP 503)."""


class OperationCancelledError(AdapterHubError):
    """Work stopped before it stored anything, because whoever asked for it went away."""
