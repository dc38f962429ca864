"""The rate budget cannot be wedged by odd headers: implausible limits, huge usage, Retry-After."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import fakeredis
import pytest
import redis

from strava_client import BucketUsage, RateLimits, parse_rate_limits
from strava_client.ratebudget import DAY, LIMITS_TTL, NoPermit, RateBudget

REDIS_URL = os.environ.get("TEST_REDIS_URL")
NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["fakeredis"] + (["redis"] if REDIS_URL else []))
def redis_conn(request):
    conn = redis.Redis.from_url(REDIS_URL) if request.param == "redis" else fakeredis.FakeRedis()
    prefix = f"test-budget-faults:{uuid.uuid4().hex}"
    yield conn, prefix
    for key in conn.scan_iter(match=f"{prefix}:*"):
        conn.delete(key)
    conn.close()


@pytest.fixture
def clock():
    return Clock(NOON + 60)


@pytest.fixture
def budget(redis_conn, clock):
    conn, prefix = redis_conn
    return RateBudget(conn, clock=clock, prefix=prefix)


def both(limit15, limit_day, used15=0, used_day=0) -> RateLimits:
    usage = BucketUsage(limit15, limit_day, used15, used_day)
    return RateLimits(overall=usage, read=usage)


@pytest.mark.parametrize(
    ("limits", "kept"),
    [((0, 0), (100, 1000)), ((5, 5000), (100, 5000)), ((600, 50), (600, 1000)),
     ((10**12, 10**12), (100, 1000))],
)  # fmt: skip
def test_implausible_learned_limits_are_ignored(budget, limits, kept):
    budget.record_response(200, both(*limits))
    snap = budget.snapshot()
    assert (snap["read"]["limit_15min"], snap["read"]["limit_day"]) == kept
    budget.take_permit()  # still granted


def test_learned_limits_expire_after_a_day(budget, redis_conn):
    conn, prefix = redis_conn
    budget.record_response(200, both(300, 3000))
    assert 0 < conn.ttl(f"{prefix}:limits") <= LIMITS_TTL == DAY


def test_huge_usage_is_clamped_and_never_overflows(budget, clock):
    budget.record_response(200, both(200, 2000, 2**63 - 1, 2**63 - 1))
    with pytest.raises(NoPermit):
        budget.take_permit()
    clock.now += DAY
    budget.take_permit()  # a new day: the counters start again


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Limit": "²00,2000", "X-RateLimit-Usage": "1,1"},
        {"X-RateLimit-Limit": "200,2000", "X-RateLimit-Usage": "\u0661,1"},
        {"X-ReadRateLimit-Limit": "100,1000", "X-ReadRateLimit-Usage": "-1,1"},
        {"Retry-After": "soon"},
        {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"},
    ],
)
def test_odd_headers_parse_without_raising(budget, headers):
    parsed = parse_rate_limits(headers)
    assert parsed.retry_after is None
    budget.record_response(200, parsed)
    budget.take_permit()


def test_retry_after_on_a_429_blocks_permits_until_then(budget, clock):
    budget.record_response(429, parse_rate_limits({"Retry-After": "120"}))
    with pytest.raises(NoPermit, match="Retry-After") as caught:
        budget.take_permit("realtime")
    assert caught.value.retry_at == int(NOON + 60) + 120
    clock.now += 121
    budget.take_permit("realtime")
