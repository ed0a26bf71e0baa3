"""Bounded merge work on the server: a few merges per token at once, and none left running for a
client that went away.

Parameter bounds (the merge registry) cap the work of one merge; this caps how many run at once,
so one token cannot occupy every core with back-to-back requests (429 past its share), and a merge
whose client disconnected stops at its next module instead of finishing for nobody.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from adapterhub.errors import OperationCancelledError, TooManyRequestsError

__all__ = ["MergeSlots", "run_cancellable"]

T = TypeVar("T")
_POLL_SECONDS = 0.2  # how often a running merge checks whether its client is still there


class MergeSlots:
    """Counts running merges, per key (a token) and in all.

    Args:
        per_key: merges one token may run at once.
        total: merges the server runs at once (default: one per core).
    """

    def __init__(self, *, per_key: int = 1, total: int | None = None) -> None:
        self.per_key = per_key
        self.total = total or max(1, os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """A slot for ``key`` while the block runs.

        Raises:
            TooManyRequestsError: ``key`` already holds ``per_key`` slots, or all are taken.
        """
        with self._lock:
            if self._running.get(key, 0) >= self.per_key:
                raise TooManyRequestsError(
                    f"this token already runs {self.per_key} merge or route call(s); wait for it to finish and try again"
                )
            if sum(self._running.values()) >= self.total:
                raise TooManyRequestsError(f"the server is running {self.total} merges; try again shortly")
            self._running[key] = self._running.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]


async def run_cancellable(request: Request, work: Callable[[Callable[[], None]], T]) -> T:
    """Run ``work(check)`` in a worker thread; ``check()`` raises once the client has disconnected.

    ``work`` calls ``check`` between steps (a merge: after each module), so it stops before it
    stores anything, and the thread is free again within one step of the client leaving.
    """
    gone = threading.Event()

    def check() -> None:
        if gone.is_set():
            raise OperationCancelledError("the client disconnected; the work stopped and stored nothing")

    task = asyncio.ensure_future(run_in_threadpool(work, check))
    while not task.done():
        await asyncio.wait({task}, timeout=_POLL_SECONDS)
        if not task.done() and await request.is_disconnected():
            gone.set()
    return task.result()
