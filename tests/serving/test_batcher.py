"""``Batcher``: requests collected into batches on one worker thread, a bounded queue, clean shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from adapterhub.errors import InvalidParameterError, OverloadedError
from adapterhub.serving.batcher import Batcher

WAIT = 10  # seconds any future may take in these tests (they take milliseconds)


class Recorder:
    """A batch function that records its calls; rows named ``gate`` block until ``release``,
    rows named ``bad`` make the batch fail."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, rows: list[str]) -> list[str]:
        self.calls.append(list(rows))
        self.threads.add(threading.current_thread().name)
        if "gate" in rows:
            self.entered.set()
            assert self.gate.wait(WAIT)
        if "bad" in rows:
            raise ValueError("bad row")
        return [f"out:{row}" for row in rows]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make(recorder: Recorder) -> Iterator:
    made: list[Batcher] = []

    def build(**kwargs) -> Batcher:
        batcher = Batcher(recorder, name="test-batcher", **kwargs)
        made.append(batcher)
        return batcher

    yield build
    recorder.gate.set()
    for batcher in made:
        batcher.close()


def hold_worker(batcher: Batcher, recorder: Recorder):
    """Occupy the worker with a ``gate`` batch (off the queue), so later submits wait in the queue."""
    future = batcher.submit(["gate"])
    assert recorder.entered.wait(WAIT)
    return future


def test_bad_settings_are_refused(recorder):
    for kwargs in ({"max_rows": 0}, {"max_queue": 0}, {"max_wait_s": -1}):
        with pytest.raises(InvalidParameterError):
            Batcher(recorder, **kwargs)


def test_requests_within_the_wait_run_as_one_batch(make, recorder):
    batcher = make(max_rows=100, max_wait_s=0.3)
    futures = [batcher.submit(rows) for rows in (["a"], ["b", "c"], ["d"])]
    results = [f.result(WAIT) for f in futures]
    assert results == [["out:a"], ["out:b", "out:c"], ["out:d"]]
    assert recorder.calls == [["a", "b", "c", "d"]]
    assert recorder.threads == {"test-batcher"}
    assert batcher.stats.batches == 1 and batcher.stats.rows == 4 and batcher.stats.mean_rows == 4


def test_a_lone_request_runs_after_the_wait(make, recorder):
    batcher = make(max_rows=100, max_wait_s=0.05)
    start = time.perf_counter()
    assert batcher.submit(["a"]).result(WAIT) == ["out:a"]
    assert time.perf_counter() - start >= 0.04
    assert batcher.submit([]).result(WAIT) == []  # nothing to run: answered at once
    assert recorder.calls == [["a"]]


def test_a_full_batch_does_not_wait_for_the_deadline(make, recorder):
    batcher = make(max_rows=2, max_wait_s=5)
    start = time.perf_counter()
    futures = [batcher.submit(["a"]), batcher.submit(["b"])]
    assert [f.result(WAIT) for f in futures] == [["out:a"], ["out:b"]]
    assert time.perf_counter() - start < 2


def test_max_rows_is_respected_and_order_kept(make, recorder):
    batcher = make(max_rows=4, max_wait_s=0.01)
    gate = hold_worker(batcher, recorder)
    futures = [batcher.submit([f"r{i}"]) for i in range(10)]
    futures += [batcher.submit(["p0", "p1", "p2"]), batcher.submit(["q0", "q1"])]
    recorder.gate.set()
    assert gate.result(WAIT) == ["out:gate"]
    assert [f.result(WAIT) for f in futures[:10]] == [[f"out:r{i}"] for i in range(10)]
    assert futures[10].result(WAIT) == ["out:p0", "out:p1", "out:p2"]
    assert futures[11].result(WAIT) == ["out:q0", "out:q1"]
    batches = recorder.calls[1:]
    assert all(len(b) <= 4 for b in batches)
    assert [row for b in batches for row in b] == [f"r{i}" for i in range(10)] + ["p0", "p1", "p2", "q0", "q1"]
    assert batches[:3] == [["r0", "r1", "r2", "r3"], ["r4", "r5", "r6", "r7"], ["r8", "r9"]]  # p0-2 do not fit


def test_a_request_larger_than_max_rows_runs_alone(make, recorder):
    batcher = make(max_rows=4, max_wait_s=0.01)
    gate = hold_worker(batcher, recorder)
    big = [f"b{i}" for i in range(10)]
    futures = [batcher.submit(["a1", "a2"]), batcher.submit(big), batcher.submit(["c"])]
    recorder.gate.set()
    gate.result(WAIT)
    assert [f.result(WAIT) for f in futures] == [["out:a1", "out:a2"], [f"out:{r}" for r in big], ["out:c"]]
    assert recorder.calls[1:] == [["a1", "a2"], big, ["c"]]


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on(make, recorder):
    batcher = make(max_rows=100, max_wait_s=0.01)
    gate = hold_worker(batcher, recorder)
    failing = [batcher.submit(["x"]), batcher.submit(["bad"]), batcher.submit(["y", "z"])]
    recorder.gate.set()
    gate.result(WAIT)
    for future in failing:
        with pytest.raises(ValueError, match="bad row"):
            future.result(WAIT)
    assert batcher.submit(["later"]).result(WAIT) == ["out:later"]
    assert batcher.submit(["again"]).result(WAIT) == ["out:again"]
    assert recorder.calls[1:] == [["x", "bad", "y", "z"], ["later"], ["again"]]
    assert batcher.stats.batches == 3  # the gate and the two later ones; failed batches are not counted


def test_a_wrong_number_of_results_fails_the_batch():
    calls = []

    def short(rows):
        calls.append(rows)
        return rows[:-1] if len(calls) == 1 else rows

    batcher = Batcher(short, max_rows=10, max_wait_s=0.2)
    try:
        futures = [batcher.submit(["a"]), batcher.submit(["b"])]
        for future in futures:
            with pytest.raises(RuntimeError, match="returned 1 results for 2 rows"):
                future.result(WAIT)
        assert batcher.submit(["c"]).result(WAIT) == ["c"]
    finally:
        batcher.close()


def test_a_full_queue_refuses_at_submit(make, recorder):
    batcher = make(max_rows=100, max_wait_s=0.01, max_queue=3)
    gate = hold_worker(batcher, recorder)
    queued = [batcher.submit(["a", "b"]), batcher.submit(["c"])]
    with pytest.raises(OverloadedError, match="busy"):
        batcher.submit(["d"])
    with pytest.raises(OverloadedError):
        batcher.submit(["e", "f"])
    assert batcher.stats.refused == 2
    recorder.gate.set()
    gate.result(WAIT)
    assert [f.result(WAIT) for f in queued] == [["out:a", "out:b"], ["out:c"]]
    assert batcher.submit(["g"]).result(WAIT) == ["out:g"]  # room again once the queue drained


def test_a_request_larger_than_the_queue_is_taken_when_the_queue_is_empty(make, recorder):
    batcher = make(max_rows=2, max_wait_s=0.01, max_queue=3)
    rows = [f"r{i}" for i in range(5)]
    assert batcher.submit(rows).result(WAIT) == [f"out:{r}" for r in rows]


def test_close_fails_queued_requests_and_refuses_new_ones(make, recorder):
    batcher = make(max_rows=100, max_wait_s=0.01)
    gate = hold_worker(batcher, recorder)
    queued = [batcher.submit(["a"]), batcher.submit(["b", "c"])]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    for future in queued:
        with pytest.raises(OverloadedError, match="shut down"):
            future.result(WAIT)
    with pytest.raises(OverloadedError, match="shut down"):
        batcher.submit(["late"])
    recorder.gate.set()  # the running batch finishes normally
    assert gate.result(WAIT) == ["out:gate"]
    closer.join(WAIT)
    assert not closer.is_alive()
    assert recorder.calls == [["gate"]]


def test_close_of_an_idle_batcher_stops_its_thread(recorder):
    batcher = Batcher(recorder, name="idle-batcher")
    batcher.close()
    assert not any(t.name == "idle-batcher" for t in threading.enumerate())
