"""RateLimiter: the sliding window per company or location, on a fake clock."""

from __future__ import annotations

import pytest

from bot.crm.ratelimit import Limit, RateLimiter


class FakeClock:
    """A clock that moves only when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def send(limiter: RateLimiter, key: str | None, count: int) -> None:
    for _ in range(count):
        with limiter.slot(key):
            pass


def test_slots_free_within_limit(clock):
    limiter = RateLimiter(3, 10.0, clock=clock, sleep=clock.sleep)

    send(limiter, "company:a", 3)

    assert clock.sleeps == []


def test_full_window_waits_interval(clock):
    limiter = RateLimiter(3, 10.0, clock=clock, sleep=clock.sleep)

    send(limiter, "company:a", 4)

    assert clock.now == pytest.approx(10.0)


def test_keys_have_separate_windows(clock):
    limiter = RateLimiter(2, 10.0, clock=clock, sleep=clock.sleep)

    send(limiter, "company:a", 2)
    send(limiter, "company:b", 2)
    send(limiter, None, 5)

    assert clock.sleeps == []


def test_stamp_taken_when_answer_arrives(clock):
    limiter = RateLimiter(1, 10.0, clock=clock, sleep=clock.sleep)

    with limiter.slot("company:a"):
        clock.now += 4.0
    send(limiter, "company:a", 1)

    assert clock.now == pytest.approx(14.0)


def test_pause_holds_key(clock):
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)

    limiter.pause("company:a", 3.0)
    send(limiter, "company:a", 1)

    assert clock.now == pytest.approx(3.0)


def test_observe_adopts_crm_headers(clock):
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)

    limiter.observe("company:a", {"X-RateLimit-Max": "5", "X-RateLimit-Interval-Milliseconds": "1000"})
    limiter.observe("company:b", {"X-RateLimit-Max": "zero"})

    assert limiter.limit_of("company:a") == Limit(5, 1.0)
    assert limiter.limit_of("company:b") == Limit(100, 10.0)


def test_invalid_limit_rejected():
    with pytest.raises(ValueError, match="at least 1 request"):
        RateLimiter(0, 10.0)
