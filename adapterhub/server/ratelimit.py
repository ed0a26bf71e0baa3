"""A per-token rate limit for the inference routes (a token bucket per caller).

Inference is the one kind of request whose cost a single client can multiply without bound, so
each caller (its token, or ``anonymous`` together) gets ``rate`` requests per second with bursts
up to ``burst``; past it the answer is 429 with ``Retry-After``. The buckets live in the process:
with ``--workers N`` each worker counts on its own (N times the rate in all), as uvicorn gives no
shared memory; a team that needs one global limit puts it in its proxy.
"""

from __future__ import annotations

import math
import threading
import time

from adapterhub.errors import TooManyRequestsError

__all__ = ["RateLimiter", "RateLimitedError"]

MAX_CALLERS = 100_000  # buckets kept; the idlest are dropped past it


class RateLimitedError(TooManyRequestsError):
    """This caller sent more requests than its rate allows; ``retry_after`` seconds to wait."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"rate limit reached for this token; retry in {self.retry_after} s")


class RateLimiter:
    """``rate`` requests per second per caller, bursts up to ``burst`` (``rate <= 0``: no limit)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, last refill)
        self._lock = threading.Lock()

    def check(self, caller: str) -> None:
        """Take one request from ``caller``'s bucket.

        Raises:
            RateLimitedError: the bucket is empty.
        """
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[caller] = (tokens, now)
                raise RateLimitedError((1 - tokens) / self.rate)
            self._buckets[caller] = (tokens - 1, now)
            if len(self._buckets) > MAX_CALLERS:
                for key, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: MAX_CALLERS // 10]:
                    del self._buckets[key]
