"""TEMP shim: the old home of the hub format, errors and client, until app.py imports their new homes."""

from os import PathLike

from adapterhub.errors import CommitConflictError, EntryNotFoundError, ForbiddenFileError, HubRevisionNotFoundError, InvalidRepoPathError, InvalidTokenError, RepoNotFoundError, UploadTooLargeError  # noqa: F401, E501  # TEMP shim for app/ (lead removes)
from adapterhub.files import sha256_file as _sha256_file_and_size  # TEMP shim for app/ (lead removes)
from adapterhub.hubformat import DEFAULT_MAX_UPLOAD_BYTES, README_NAME, HubFile, HubSnapshot, StagedFile, UploadStaging, apply_commit, check_allowed_file, check_repo_path  # noqa: F401, E501  # TEMP shim for app/ (lead removes)
from adapterhub.store.hub_client import HubClient, RemoteRevision  # noqa: F401  # TEMP shim for app/ (lead removes)


def sha256_file(path: str | PathLike[str]) -> str:  # TEMP shim for app/ (lead removes): the old str-returning form
    return _sha256_file_and_size(path)[0]
