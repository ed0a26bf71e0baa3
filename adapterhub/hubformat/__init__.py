"""The hub's repo format, with no SQL and no HTTP: what the hub server and the facade agree on.

- :mod:`~adapterhub.hubformat.rules`: which paths and files a repo may hold;
- :mod:`~adapterhub.hubformat.snapshot`: what a revision serves (:class:`HubFile`, :class:`HubSnapshot`);
- :mod:`~adapterhub.hubformat.staging`: receiving a commit's files before anything is stored;
- :mod:`~adapterhub.hubformat.ndjson`: streaming parser of ``huggingface_hub``'s NDJSON commit body;
- :mod:`~adapterhub.hubformat.modelcard`: model cards (``README.md``) written on push, read on pull;
- :mod:`~adapterhub.hubformat.lfs_objects`: files uploaded before their commit, kept by sha256;
- :mod:`~adapterhub.hubformat.xet` and :mod:`~adapterhub.hubformat.xet_store`: Xet uploads (xorbs
  and shards, checked against their hashes) rebuilt into those files.
"""

from adapterhub.hubformat.modelcard import CardInfo, parse_card, render_card, split_front_matter, validate_card
from adapterhub.hubformat.ndjson import CommitBodyParser
from adapterhub.hubformat.rules import (
    DEFAULT_MAX_UPLOAD_BYTES,
    FORBIDDEN_SUFFIXES,
    LFS_THRESHOLD,
    README_NAME,
    check_allowed_file,
    check_repo_path,
)
from adapterhub.hubformat.snapshot import HubFile, HubSnapshot, git_blob_oid
from adapterhub.hubformat.staging import StagedFile, StagedWriter, UploadStaging, apply_commit

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "FORBIDDEN_SUFFIXES",
    "LFS_THRESHOLD",
    "README_NAME",
    "CardInfo",
    "CommitBodyParser",
    "HubFile",
    "HubSnapshot",
    "StagedFile",
    "StagedWriter",
    "UploadStaging",
    "apply_commit",
    "check_allowed_file",
    "check_repo_path",
    "git_blob_oid",
    "parse_card",
    "render_card",
    "split_front_matter",
    "validate_card",
]
