"""Merge work a stranger can start is bounded in number, and stops when its client goes away.

Parameter bounds cap one merge (tests/merge/test_param_bounds.py); here a token gets 429 while its
own merge runs, the server as a whole runs at most ``total`` merges, and a merge whose client
disconnects stops at its next module and stores nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapterhub.app import AdapterHub
from adapterhub.errors import TooManyRequestsError
from adapterhub.server import create_app
from adapterhub.server.merge_slots import MergeSlots
from tests.helpers import live_server, random_adapter


class SlowMerges:
    """Stands in for ``hub.merge``: reports progress for ``seconds`` (like a long merge), then merges."""

    def __init__(self, hub: AdapterHub, seconds: float) -> None:
        self.real, self.seconds = hub.merge, seconds
        self.started, self.stopped_by = threading.Event(), []

    def __call__(self, *args: Any, progress: Any = None, **kwargs: Any) -> Any:
        self.started.set()
        deadline = time.monotonic() + self.seconds
        try:
            while time.monotonic() < deadline:
                progress(1, 2, "layer")  # the engine calls this after each module
                time.sleep(0.02)
        except Exception as e:  # noqa: BLE001 - recorded for the test, then raised as the engine would
            self.stopped_by.append(type(e).__name__)
            raise
        return self.real(*args, progress=progress, **kwargs)


@pytest.fixture
def server(tmp_path: Path, online: None) -> Iterator[tuple[str, AdapterHub, str, SlowMerges]]:
    hub = AdapterHub(tmp_path / "home")
    for i in range(2):
        hub.add_adapter(random_adapter(i), f"acme/a{i}")
    token = hub.create_token(name="acme")["token"]
    slow = SlowMerges(hub, seconds=3.0)
    hub.merge = slow  # type: ignore[method-assign]
    app = create_app(hub, merge_slots=MergeSlots(per_key=1, total=2))
    try:
        with live_server(app) as url:
            yield url, hub, token, slow
    finally:
        hub.close()


def _merge_body(name: str) -> dict[str, Any]:
    return {"names": ["acme/a0", "acme/a1"], "method": "linear", "name": name}


def test_a_token_runs_one_merge_at_a_time(server) -> None:
    url, hub, token, slow = server
    headers = {"Authorization": f"Bearer {token}"}
    first: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: first.update(r=httpx.post(f"{url}/v1/merge", json=_merge_body("acme/m1"), headers=headers,
                                                  timeout=30))
    )
    worker.start()
    assert slow.started.wait(10)
    second = httpx.post(f"{url}/v1/merge", json=_merge_body("acme/m2"), headers=headers, timeout=30)
    assert second.status_code == 429 and "already runs" in second.json()["error"]
    worker.join(30)
    assert first["r"].status_code == 200
    assert hub.catalog.exists("acme/m1") and not hub.catalog.exists("acme/m2")
    third = httpx.post(f"{url}/v1/merge", json=_merge_body("acme/m3"), headers=headers, timeout=30)
    assert third.status_code == 200  # the slot is free again


def test_a_merge_stops_when_its_client_leaves(server) -> None:
    url, hub, token, slow = server
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/merge", json=_merge_body("acme/gone"), headers={"Authorization": f"Bearer {token}"},
                   timeout=httpx.Timeout(30, read=0.5))
    deadline = time.monotonic() + 2.0  # well before the 3 s the merge would take
    while not slow.stopped_by and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow.stopped_by == ["OperationCancelledError"]
    assert not hub.catalog.exists("acme/gone")
    time.sleep(0.3)  # the slot is released once the worker thread returns
    ok = httpx.post(f"{url}/v1/merge", json=_merge_body("acme/back"), headers={"Authorization": f"Bearer {token}"},
                    timeout=30)
    assert ok.status_code == 200


def test_slots_count_per_token_and_in_all() -> None:
    slots = MergeSlots(per_key=2, total=3)
    with slots.hold("a"), slots.hold("a"):
        with pytest.raises(TooManyRequestsError, match="already runs 2"):
            with slots.hold("a"):
                pass
        with slots.hold("b"):
            with pytest.raises(TooManyRequestsError, match="running 3 merges"):
                with slots.hold("c"):
                    pass
    with slots.hold("a"), slots.hold("a"):  # all released
        pass
