"""Per-company and per-location rate limit of the CRM client.

The CRM allows each app 100 requests per 10 s per company or location, and
responds 429 with `Retry-After` beyond that. `RateLimiter` keeps a sliding
window of recent requests per key and makes a caller wait for a free slot
before it sends. A request is stamped when its response arrives, which is never
earlier than when the CRM counted it, so the local window never frees a slot
before the CRM's does.

The window lives in one process. Two processes that call the CRM for one
company share the CRM's quota but not this window, so they can still get a
429. The client then pauses the key for the `Retry-After` time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUESTS = 100
DEFAULT_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class Limit:
    max_requests: int
    interval: float


class RateLimiter:
    """Sliding-window limit of requests per key, such as `company:<id>` or `location:<id>`.

    The limit starts at `max_requests` per `interval` seconds. When the CRM
    sends `X-RateLimit-Max` and `X-RateLimit-Interval-Milliseconds`, `observe`
    adopts them for that key. Safe to share between threads.
    """

    def __init__(
        self,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_requests < 1 or interval <= 0:
            raise ValueError(f"A rate limit needs at least 1 request per positive interval, got {max_requests} per {interval} s")
        self.default = Limit(max_requests, interval)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._limits: dict[str, Limit] = {}
        self._windows: dict[str, list[list[float]]] = {}
        self._paused_until: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"RateLimiter({self.default.max_requests} per {self.default.interval:g} s)"

    def limit_of(self, key: str) -> Limit:
        with self._lock:
            return self._limits.get(key, self.default)

    @contextmanager
    def slot(self, key: str | None) -> Iterator[None]:
        """Wait for a free slot of `key`, hold it while the request runs, and stamp it when the response arrives."""
        if key is None:
            yield
            return

        stamp = self._reserve(key)
        try:
            yield
        finally:
            with self._lock:
                stamp[0] = self._clock()

    def pause(self, key: str | None, seconds: float) -> None:
        """Hold every request of `key` for `seconds`, as a 429's `Retry-After` requests."""
        if key is None:
            return
        with self._lock:
            until = self._clock() + seconds
            self._paused_until[key] = max(until, self._paused_until.get(key, 0.0))
        logger.warning("CRM rate limit reached for %s; pausing its requests for %.1f s", key, seconds)

    def observe(self, key: str | None, headers: Mapping[str, str]) -> None:
        """Adopt the limit that the CRM's `X-RateLimit-*` response headers announce for `key`."""
        if key is None:
            return
        try:
            max_requests = int(headers["X-RateLimit-Max"])
            interval = int(headers["X-RateLimit-Interval-Milliseconds"]) / 1000
        except (KeyError, ValueError):
            return
        if max_requests < 1 or interval <= 0:
            return

        limit = Limit(max_requests, interval)
        with self._lock:
            if self._limits.get(key) != limit:
                self._limits[key] = limit
                logger.info("CRM rate limit for %s is %s requests per %g s", key, max_requests, interval)

    def _reserve(self, key: str) -> list[float]:
        while True:
            with self._lock:
                now = self._clock()
                limit = self._limits.get(key, self.default)
                window = [stamp for stamp in self._windows.get(key, []) if stamp[0] > now - limit.interval]
                self._windows[key] = window

                paused = self._paused_until.get(key, 0.0) - now
                if paused <= 0 and len(window) < limit.max_requests:
                    stamp = [now]
                    window.append(stamp)
                    return stamp

                free_at = min(stamp[0] for stamp in window) + limit.interval if len(window) >= limit.max_requests else now
                wait = max(paused, free_at - now, 0.001)
            self._sleep(wait)
