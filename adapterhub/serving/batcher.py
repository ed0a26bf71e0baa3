"""``Batcher``: collect requests for a few milliseconds, run them as one batch on one thread.

A request is a list of rows (an embeddings call with three inputs is three rows). The worker waits
for the first request, then keeps collecting until ``max_wait_s`` has passed since it arrived or
``max_rows`` rows are waiting, and hands the whole batch to ``run`` — one base forward pass for
requests that use different adapters (``gathered``). A request larger than ``max_rows`` runs in a
batch of its own. The queue is bounded: past ``max_queue`` waiting rows a submit is refused at
once (:class:`OverloadedError`, a 503), so overload sheds load instead of growing latency without
bound.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from adapterhub.errors import InvalidParameterError, OverloadedError

__all__ = ["Batcher", "BatchStats"]

Row = TypeVar("Row")


@dataclass
class _Request(Generic[Row]):
    rows: Sequence[Row]
    future: Future[list[Any]]
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher did (for the benchmark and the tests)."""

    batches: int = 0
    rows: int = 0
    refused: int = 0

    @property
    def mean_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


class Batcher(Generic[Row]):
    """Runs ``run(rows) -> results`` (one result per row, in order) on batches of requests.

    Args:
        run: computes a batch; called on the batcher's own thread only, so it may use one model
            without locks. An exception fails every request of that batch.
        max_rows: rows per batch (a larger single request is run alone).
        max_wait_s: how long the first request of a batch waits for company.
        max_queue: most rows waiting; more are refused with ``OverloadedError``.
        name: the worker thread's name.
    """

    def __init__(
        self,
        run: Callable[[list[Row]], Sequence[Any]],
        *,
        max_rows: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 1024,
        name: str = "adapterhub-batcher",
    ) -> None:
        if max_rows < 1 or max_queue < 1 or max_wait_s < 0:
            raise InvalidParameterError("the batcher needs max_rows >= 1, max_queue >= 1 and max_wait_s >= 0")
        self._run = run
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: deque[_Request[Row]] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self.stats = BatchStats()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, rows: Sequence[Row]) -> Future[list[Any]]:
        """Queue one request; its future gets the results of its rows, in order.

        Raises:
            OverloadedError: the queue is full (retry later), or the batcher is closed.
        """
        future: Future[list[Any]] = Future()
        if not rows:
            future.set_result([])
            return future
        with self._cond:
            if self._closed:
                raise OverloadedError("the inference queue is shut down")
            if self._queued_rows + len(rows) > self.max_queue and self._queue:
                self.stats.refused += 1
                raise OverloadedError(
                    f"the server is busy ({self._queued_rows} inputs queued); retry in a moment"
                )
            self._queue.append(_Request(rows, future))
            self._queued_rows += len(rows)
            self._cond.notify()
        return future

    def close(self) -> None:
        """Stop the worker after the batch it runs; queued requests fail with ``OverloadedError``."""
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
            self._cond.notify_all()
        for request in left:
            request.future.set_exception(OverloadedError("the inference queue was shut down"))
        self._thread.join(timeout=10)

    def _take(self) -> list[_Request[Row]] | None:
        """The next batch: wait for a request, then for company until the deadline or the row cap."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = self._queue[0].arrived + self.max_wait_s
            while self._queued_rows < self.max_rows and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken: list[_Request[Row]] = []
            count = 0
            while self._queue and (not taken or count + len(self._queue[0].rows) <= self.max_rows):
                request = self._queue.popleft()
                taken.append(request)
                count += len(request.rows)
            self._queued_rows -= count
            return taken

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            taken = [r for r in taken if r.future.set_running_or_notify_cancel()]
            if not taken:
                continue
            rows = [row for request in taken for row in request.rows]
            try:
                results = list(self._run(rows))
                if len(results) != len(rows):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(rows)} rows")
            except BaseException as exc:  # every waiting request learns of it; the worker goes on
                for request in taken:
                    request.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.rows += len(rows)
            start = 0
            for request in taken:
                request.future.set_result(results[start : start + len(request.rows)])
                start += len(request.rows)
