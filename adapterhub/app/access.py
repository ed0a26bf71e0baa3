"""Who may read and write what on the hub server: every authorization decision, in one place.

The model follows the HF hub's fine-grained tokens:

- A repo ``namespace/name`` belongs to its namespace, however it was made (hub API, ``/v1/merge``
  or the CLI). The CLI runs as the operator on the server's own files: it is never checked here.
- A token acts for one namespace, its ``owner``, plus the ``namespaces`` it was granted. It may
  write (create repos, commit, name a merge result) only there, and only with the ``write`` scope.
  It reads private repos only there. Public repos are readable by anyone (by any valid token when
  the server runs with ``--read-token-required``). An ``admin`` token (the operator's) may use
  every namespace.
- A private repo that a caller may not read answers exactly like a missing one
  (``RepoNotFoundError``, 404), on every route, so its name cannot be probed. A write that the
  caller may see but not do is refused with ``PermissionDeniedError`` (403); no token at all is
  ``AuthError`` (401).
- A merge is readable only by those who can read its result, and only a reader of every parent may
  make it; its result is private when any parent is (``merging`` records that).

Readers of lineage and ``show`` see the names of private parents and children only when they may
read them; otherwise the node says ``hidden``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from adapterhub.app.core import HubCore
from adapterhub.errors import AdapterExistsError, AuthError, PermissionDeniedError, RepoNotFoundError
from adapterhub.store import hub_catalog
from adapterhub.store.hub_catalog import TokenRecord

__all__ = [
    "authorize_merge",
    "authorize_read",
    "authorize_write",
    "may_use_namespace",
    "private_result",
    "readable",
    "redact_lineage",
    "redact_show",
]

_T = TypeVar("_T")


def _namespace(repo_id: str) -> str:
    return repo_id.split("/", 1)[0]


def may_use_namespace(token: TokenRecord | None, repo_id: str) -> bool:
    """Whether ``token`` acts for the namespace of ``repo_id`` (its owner's, a granted one, or admin)."""
    if token is None:
        return False
    return token.admin or _namespace(repo_id) in {token.owner, *token.namespaces}


def _scopes(token: TokenRecord) -> str:
    if token.admin:
        return "every namespace"
    return ", ".join(repr(ns) for ns in (token.owner, *token.namespaces) if ns) or "no namespace"


def authorize_read(core: HubCore, token: TokenRecord | None, repo_id: str) -> bool:
    """Check that ``token`` may read ``repo_id``; returns whether the repo is private.

    Raises:
        RepoNotFoundError: no such repo, or a private one the token may not read (the same answer,
            so that private names cannot be listed by probing).
    """
    repo = hub_catalog.get_repo(core.catalog, repo_id)
    private = bool(repo and repo.private)
    if private and not may_use_namespace(token, repo_id):
        raise RepoNotFoundError(repo_id)
    if repo is None and not core.catalog.exists(repo_id):
        raise RepoNotFoundError(repo_id)
    return private


def _check_writer(token: TokenRecord | None, repo_id: str | None) -> TokenRecord:
    if token is None:
        raise AuthError(
            "writes need a token: create one with `adapterhub token create --owner NAMESPACE` on the server "
            "and pass it as HF_TOKEN or 'Authorization: Bearer <token>'"
        )
    if not token.write:
        raise PermissionDeniedError(
            f"token '{token.name}' is read-only; writes need a token made without --read-only"
        )
    if repo_id is not None and not may_use_namespace(token, repo_id):
        raise PermissionDeniedError(
            f"token '{token.name}' may not write to '{repo_id}': it writes only into {_scopes(token)}; "
            f"ask the operator for a token with --namespace {_namespace(repo_id)}"
        )
    return token


def authorize_write(
    core: HubCore, token: TokenRecord | None, repo_id: str | None, *, must_exist: bool = True
) -> TokenRecord:
    """Check that ``token`` may write to ``repo_id`` (commit; ``must_exist=False``: create it).

    ``repo_id=None`` checks only that the token may write at all (a route that has not read the
    repo id yet answers 401/403 before reading a body); check the repo once it is known.

    Raises:
        AuthError: no token (401).
        RepoNotFoundError: ``must_exist`` and no such repo, or a private one the token cannot read.
        PermissionDeniedError: a read-only token, or a namespace the token does not act for (403).
    """
    if token is not None and must_exist and repo_id is not None:
        authorize_read(core, token, repo_id)  # first: a hidden repo answers as a missing one
    return _check_writer(token, repo_id)


def authorize_merge(
    core: HubCore, token: TokenRecord | None, names: Sequence[str], result_name: str | None
) -> str:
    """Check that ``token`` may merge ``names`` into ``result_name``; returns the namespace for a
    result without a name (the token's owner, or ``merged`` for the operator).

    Every parent must be readable by the token (a hidden one answers as missing), and the result
    goes only into a namespace the token may write.

    Raises:
        AuthError, RepoNotFoundError, PermissionDeniedError.
    """
    writer = _check_writer(token, None)
    for name in names:
        authorize_read(core, writer, name)
    namespace = writer.owner if writer.owner and not writer.admin else "merged"
    _check_writer(writer, result_name or f"{namespace}/x")
    return namespace


@contextmanager
def private_result(core: HubCore, parents: Sequence[str], result_name: str) -> Iterator[bool]:
    """Keep a derived adapter at least as private as its most private parent; yields whether it is.

    When a parent is private, ``result_name`` is recorded as a private hub repo *before* the block
    stores the entry (so it is never public, not even for a moment) and the record is removed
    again if the block fails. A result name that is already a public repo cannot take private
    content.

    Raises:
        AdapterExistsError: a parent is private and ``result_name`` is a public repo or a catalog entry.
    """
    private = hub_catalog.private_repo_names(core.catalog)
    if not any(p in private for p in parents):
        yield False
        return
    existing = hub_catalog.get_repo(core.catalog, result_name)
    if existing is not None and not existing.private:
        raise AdapterExistsError(result_name)
    created = existing is None and hub_catalog.create_repo(core.catalog, result_name, private=True)
    if existing is None and not created:
        raise AdapterExistsError(result_name)
    try:
        yield True
    except BaseException:
        if created:
            hub_catalog.forget_repo(core.catalog, result_name)
        raise


def readable(
    core: HubCore, token: TokenRecord | None, items: Iterable[_T], name_of: Callable[[_T], str]
) -> list[_T]:
    """The ``items`` (catalog records, repo ids, …) whose repo the token may read, in order;
    ``name_of`` gives each item's repo id. Private repos of other namespaces are left out."""
    private = hub_catalog.private_repo_names(core.catalog)
    return [item for item in items if name_of(item) not in private or may_use_namespace(token, name_of(item))]


def _hidden(core: HubCore, token: TokenRecord | None, private: set[str], name: str | None) -> bool:
    return name is not None and name in private and not may_use_namespace(token, name)


def redact_lineage(core: HubCore, token: TokenRecord | None, tree: dict[str, Any]) -> dict[str, Any]:
    """The lineage tree with every node the token may not read replaced by ``{"hidden": true}``
    (no name, digest, base model or ancestors); the operation and weight that link it stay."""
    private = hub_catalog.private_repo_names(core.catalog)

    def walk(node: dict[str, Any]) -> dict[str, Any]:
        if _hidden(core, token, private, node.get("name")):
            kept = {k: node[k] for k in ("operation", "weight") if k in node}
            return {"name": None, "hidden": True, "parents": [], **kept}
        return {**node, "parents": [walk(p) for p in node.get("parents", [])]}

    return walk(tree)


def redact_show(core: HubCore, token: TokenRecord | None, shown: dict[str, Any]) -> dict[str, Any]:
    """``AdapterHub.show`` output without the names of private parents and children the token may
    not read (a hidden parent keeps its operation and weight; hidden children are left out)."""
    private = hub_catalog.private_repo_names(core.catalog)
    lineage = []
    for row in shown.get("lineage", []):
        if _hidden(core, token, private, row.get("parent_name")):
            row = {**row, "parent_name": None, "parent_digest": None, "params": {}, "hidden": True}
        lineage.append(row)
    children = [c for c in shown.get("children", []) if not _hidden(core, token, private, c)]
    return {**shown, "lineage": lineage, "children": children}
