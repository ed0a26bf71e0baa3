"""The server's one error table: every adapterhub error gets a deliberate status, bugs leak nothing."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from fastapi.testclient import TestClient

import adapterhub
from adapterhub.errors import (
    AdapterHubError,
    BlobCorruptError,
    EntryNotFoundError,
    HubError,
    InvalidTokenError,
    OverloadedError,
    StorageUnavailableError,
)
from adapterhub.server import create_app
from adapterhub.server.errors import HUB_ERROR_CODES, HUB_ERROR_MESSAGES, STATUS, http_status

# Not the client's fault: a damaged store, an upstream hub, a full inference queue or an object
# store that does not answer (both: retry later).
SERVER_FAULTS = {BlobCorruptError: 500, HubError: 502, OverloadedError: 503, StorageUnavailableError: 503}


def all_error_classes() -> list[type[AdapterHubError]]:
    """Every ``AdapterHubError`` subclass defined anywhere in the package (all modules imported)."""
    for module in pkgutil.walk_packages(adapterhub.__path__, "adapterhub."):
        importlib.import_module(module.name)
    found: list[type[AdapterHubError]] = []
    todo = [AdapterHubError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("adapterhub.") and sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def test_every_error_maps_to_a_client_status_unless_it_is_a_server_fault():
    classes = all_error_classes()
    assert len(classes) >= 20  # the walk really found the package's errors
    for cls in classes:
        fault = next((status for base, status in SERVER_FAULTS.items() if issubclass(cls, base)), None)
        if fault is not None:
            assert http_status(cls) == fault, cls
        else:
            assert 400 <= http_status(cls) < 500, cls


@pytest.mark.parametrize("table", [STATUS, HUB_ERROR_CODES, HUB_ERROR_MESSAGES])
def test_no_row_is_hidden_behind_an_earlier_more_general_one(table):
    for i, (cls, _) in enumerate(table):
        for earlier, _ in table[:i]:
            assert not issubclass(cls, earlier), f"{cls.__name__} can never match: {earlier.__name__} comes first"


class StubHub:
    """Just enough of the facade for a read route: no catalog, no blobs."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def check_token(self, secret: str | None, *, write: bool = False) -> None:
        if secret is not None:
            raise self.error
        return None

    def hub_repo_private(self, repo_id: str) -> bool:
        return False

    def authorize_read(self, token: object, repo_id: str) -> bool:
        return False  # a public repo

    def hub_snapshot(self, repo_id: str, revision: str = "main") -> None:
        raise self.error


def client_for(error: BaseException) -> TestClient:
    return TestClient(create_app(StubHub(error)), raise_server_exceptions=False)  # type: ignore[arg-type]


def test_an_unexpected_exception_is_a_500_that_leaks_no_path_or_traceback():
    client = client_for(RuntimeError("disk I/O error at /srv/secret/catalog.db"))
    response = client.get("/a/b/resolve/main/README.md")
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error; see the server log", "type": "InternalError"}
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "secret" not in str(response.headers)


def test_an_expected_error_gets_its_status_and_the_hub_headers():
    revision = "ab" * 20
    response = client_for(EntryNotFoundError("a/b", revision, "x.txt")).get("/a/b/resolve/main/x.txt")
    assert response.status_code == 404
    assert response.headers["X-Error-Code"] == "EntryNotFound"
    assert response.headers["X-Repo-Commit"] == revision
    assert response.json()["type"] == "EntryNotFoundError"


def test_an_unknown_token_gets_the_message_hub_clients_expect():
    client = client_for(InvalidTokenError("token not found"))
    response = client.get("/v1/adapters", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    assert response.json()["error"] == "token not found"
