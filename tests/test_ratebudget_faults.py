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


ABSURD = "9223372036854775807,9223372036854775807"


@pytest.mark.parametrize("usage", [ABSURD, "99999,9999999"])
def test_attack_absurd_usage_header_is_ignored_and_the_next_sane_one_counts(budget, usage):
    absurd = {"X-RateLimit-Limit": "200,2000", "X-RateLimit-Usage": usage}
    absurd |= {"X-ReadRateLimit-Limit": "100,1000", "X-ReadRateLimit-Usage": usage}
    budget.record_response(200, parse_rate_limits(absurd))
    budget.take_permit("realtime")  # a new event's fetch is not pushed to a later window
    assert budget.sweep_allowance() > 0  # and the sweep still plans riders
    sane = {k: v for k, v in absurd.items() if k.endswith("Limit")}
    sane |= {"X-RateLimit-Usage": "7,70", "X-ReadRateLimit-Usage": "5,50"}
    budget.record_response(200, parse_rate_limits(sane))
    snap = budget.snapshot()
    assert (snap["overall"]["used_15min"], snap["overall"]["used_day"]) == (7, 70)
    assert (snap["read"]["used_15min"], snap["read"]["used_day"]) == (5, 50)


def test_usage_just_over_the_limit_still_spends_the_window(budget):
    budget.record_response(200, both(200, 2000, 210, 300))
    with pytest.raises(NoPermit, match="15-minute"):
        budget.take_permit()


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
