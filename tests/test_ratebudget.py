"""Tests for the shared rate budget, on fakeredis and (with TEST_REDIS_URL) on real Redis."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import uuid
from datetime import UTC, datetime

import fakeredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from strava_client import BucketUsage, RateLimits
from strava_client.ratebudget import NoPermit, RateBudget, window_bounds

REDIS_URL = os.environ.get("TEST_REDIS_URL")
NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 11, 29, tzinfo=UTC).timestamp()
NO_HEADERS = RateLimits(overall=None, read=None)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["fakeredis"] + (["redis"] if REDIS_URL else []))
def redis_conn(request):
    conn = redis.Redis.from_url(REDIS_URL) if request.param == "redis" else fakeredis.FakeRedis()
    yield conn
    conn.close()


@pytest.fixture
def prefix(redis_conn):
    prefix = f"test-ratebudget:{uuid.uuid4().hex}"
    yield prefix
    for key in redis_conn.scan_iter(match=f"{prefix}:*"):
        redis_conn.delete(key)


@pytest.fixture
def clock():
    return Clock(NOON + 60)


@pytest.fixture
def make_budget(redis_conn, prefix, clock):
    def make(**kwargs):
        return RateBudget(redis_conn, clock=clock, prefix=prefix, **kwargs)

    return make


def take_all(budget: RateBudget, lane: str = "realtime", attempts: int = 10_000) -> int:
    """Take permits until refused; return how many were granted."""
    for granted in range(attempts):
        try:
            budget.take_permit(lane)
        except NoPermit:
            return granted
    return attempts


def test_window_bounds_at_quarter_hour_boundary():
    assert window_bounds(NOON + 900) == (NOON + 900, NOON + 1800, MIDNIGHT - 86400, MIDNIGHT)


def test_window_bounds_just_before_boundary():
    assert window_bounds(NOON + 899.9) == (NOON, NOON + 900, MIDNIGHT - 86400, MIDNIGHT)


def test_window_bounds_at_midnight():
    assert window_bounds(MIDNIGHT) == (MIDNIGHT, MIDNIGHT + 900, MIDNIGHT, MIDNIGHT + 86400)
    assert window_bounds(MIDNIGHT - 0.1)[1:] == (MIDNIGHT, MIDNIGHT - 86400, MIDNIGHT)


@settings(database=None)
@given(st.floats(min_value=0, max_value=4e9) | st.integers(min_value=0, max_value=4_000_000_000))
def test_window_bounds_properties(now):
    window_start, window_end, day_start, day_end = window_bounds(now)
    assert window_start <= now < window_end
    assert day_start <= now < day_end
    assert window_end - window_start == 900
    assert day_end - day_start == 86400
    assert window_start % 900 == 0
    assert day_start % 86400 == 0
    assert day_start <= window_start < window_end <= day_end


def test_take_permit_realtime_grants_exactly_the_limit(make_budget):
    budget = make_budget(read_limits=(10, 1000))
    assert take_all(budget) == 10
    with pytest.raises(NoPermit) as caught:
        budget.take_permit()
    assert caught.value.retry_at == NOON + 900
    assert str(caught.value) == (
        "read 15-minute window spent (10/10 for realtime); resets 2026-11-28T12:15:00Z"
    )


def test_take_permit_bulk_leaves_the_reserve_to_realtime(make_budget):
    budget = make_budget(read_limits=(100, 1000), reserve=0.2)
    assert take_all(budget, "bulk") == 80
    with pytest.raises(NoPermit, match=r"read 15-minute window spent \(80/80 for bulk\)"):
        budget.take_permit("bulk")
    assert take_all(budget, "realtime") == 20


def test_take_permit_bulk_cap_is_floored(make_budget):
    budget = make_budget(limits=(9, 2000), read_limits=(100, 1000), reserve=0.25)
    assert take_all(budget, "bulk") == 6  # floor(9 * 0.75)


def test_take_permit_overall_bucket_also_blocks(make_budget):
    budget = make_budget(limits=(5, 2000))
    assert take_all(budget) == 5
    with pytest.raises(NoPermit, match="overall 15-minute window spent"):
        budget.take_permit()


def test_take_permit_daily_limit_blocks_until_day_end(make_budget, clock):
    budget = make_budget(read_limits=(20, 30))
    assert take_all(budget) == 20
    clock.now += 900
    assert take_all(budget) == 10
    with pytest.raises(NoPermit, match="read daily window spent") as caught:
        budget.take_permit()
    assert caught.value.retry_at == MIDNIGHT
    clock.now = MIDNIGHT - 1800
    with pytest.raises(NoPermit):
        budget.take_permit()
    clock.now = MIDNIGHT
    assert take_all(budget) == 20


def test_take_permit_grants_again_after_window_rollover(make_budget, clock):
    budget = make_budget(read_limits=(10, 1000))
    assert take_all(budget) == 10
    clock.now = NOON + 899.999
    with pytest.raises(NoPermit):
        budget.take_permit()
    clock.now = NOON + 900
    assert take_all(budget) == 10
    assert budget.snapshot()["read"]["used_day"] == 20


def test_take_permit_blocked_by_both_reports_the_later_reset(make_budget, clock):
    budget = make_budget(read_limits=(10, 10))
    assert take_all(budget) == 10
    with pytest.raises(NoPermit) as caught:
        budget.take_permit()
    assert caught.value.retry_at == MIDNIGHT


def test_take_permit_rejects_unknown_lane(make_budget):
    budget = make_budget()
    with pytest.raises(ValueError, match="unknown lane"):
        budget.take_permit("urgent")
    with pytest.raises(ValueError, match="unknown lane"):
        budget.available("urgent")


def test_take_permit_never_overshoots_under_threads(make_budget):
    budget = make_budget(read_limits=(100, 1000))
    start = threading.Barrier(8)
    granted = []

    def worker():
        start.wait()
        granted.append(take_all(budget, attempts=50))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 100
    assert budget.snapshot()["read"]["used_15min"] == 100


def _take_in_process(url: str, prefix: str, now: float, attempts: int, start) -> int:
    conn = redis.Redis.from_url(url)
    try:
        budget = RateBudget(conn, read_limits=(100, 1000), clock=lambda: now, prefix=prefix)
        start.wait()  # spawned processes start slowly; line them up so they really contend
        return take_all(budget, attempts=attempts)
    finally:
        conn.close()


@pytest.mark.skipif(not REDIS_URL, reason="needs real Redis (TEST_REDIS_URL)")
def test_take_permit_never_overshoots_across_processes(clock):
    prefix = f"test-ratebudget:{uuid.uuid4().hex}"
    conn = redis.Redis.from_url(REDIS_URL)
    try:
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, context.Pool(4) as pool:
            start = manager.Barrier(4)
            granted = pool.starmap(
                _take_in_process, [(REDIS_URL, prefix, clock.now, 60, start)] * 4
            )
        assert sum(granted) == 100
        budget = RateBudget(conn, read_limits=(100, 1000), clock=clock, prefix=prefix)
        assert budget.snapshot()["read"]["used_15min"] == 100
    finally:
        for key in conn.scan_iter(match=f"{prefix}:*"):
            conn.delete(key)
        conn.close()


def test_counters_expire_after_their_window(make_budget, redis_conn, prefix):
    make_budget().take_permit()
    window_ttl = redis_conn.ttl(f"{prefix}:read:15m:{int(NOON)}")
    day_ttl = redis_conn.ttl(f"{prefix}:read:day:{int(MIDNIGHT - 86400)}")
    assert 0 < window_ttl <= 840 + 60  # 14 minutes left in the window, plus the slack
    assert 900 < day_ttl <= 12 * 3600 - 60 + 60


def test_record_response_raises_usage_and_adopts_higher_limits(make_budget):
    budget = make_budget()
    budget.take_permit()
    budget.record_response(
        200,
        RateLimits(overall=BucketUsage(600, 30000, 50, 500), read=BucketUsage(300, 3000, 40, 400)),
    )
    snap = budget.snapshot()
    assert (snap["overall"]["limit_15min"], snap["overall"]["limit_day"]) == (600, 30000)
    assert (snap["overall"]["used_15min"], snap["overall"]["used_day"]) == (50, 500)
    assert (snap["read"]["limit_15min"], snap["read"]["limit_day"]) == (300, 3000)
    assert (snap["read"]["used_15min"], snap["read"]["used_day"]) == (40, 400)
    assert take_all(budget) == 260


def test_record_response_adopts_lower_limits(make_budget):
    budget = make_budget()
    budget.record_response(
        200, RateLimits(overall=BucketUsage(200, 2000, 0, 0), read=BucketUsage(30, 300, 0, 0))
    )
    assert budget.available("realtime") == {"window": 30, "day": 300}
    assert take_all(budget) == 30


def test_record_response_never_lowers_a_counter(make_budget):
    budget = make_budget()
    for _ in range(5):
        budget.take_permit()
    budget.record_response(
        200, RateLimits(overall=BucketUsage(200, 2000, 1, 2), read=BucketUsage(100, 1000, 1, 2))
    )
    snap = budget.snapshot()
    assert snap["read"]["used_15min"] == snap["read"]["used_day"] == 5
    assert snap["overall"]["used_15min"] == snap["overall"]["used_day"] == 5


def test_record_response_with_one_bucket_leaves_the_other_alone(make_budget):
    budget = make_budget()
    budget.take_permit()
    budget.record_response(200, RateLimits(overall=BucketUsage(600, 6000, 70, 700), read=None))
    snap = budget.snapshot()
    assert (snap["overall"]["limit_15min"], snap["overall"]["used_15min"]) == (600, 70)
    assert (snap["read"]["limit_15min"], snap["read"]["limit_day"]) == (100, 1000)
    assert (snap["read"]["used_15min"], snap["read"]["used_day"]) == (1, 1)


def test_learned_limits_are_shared_between_budgets(make_budget):
    make_budget().record_response(
        200, RateLimits(overall=BucketUsage(600, 6000, 0, 0), read=BucketUsage(300, 3000, 0, 0))
    )
    other = make_budget(limits=(10, 10), read_limits=(10, 10), reserve=0)
    assert other.available("realtime") == {"window": 300, "day": 3000}


def test_record_response_429_blocks_until_the_window_resets(make_budget, clock):
    budget = make_budget()
    budget.take_permit()
    budget.record_response(
        429,
        RateLimits(overall=BucketUsage(200, 2000, 101, 300), read=BucketUsage(100, 1000, 101, 300)),
    )
    with pytest.raises(NoPermit, match="read 15-minute window spent") as caught:
        budget.take_permit()
    assert caught.value.retry_at == NOON + 900
    clock.now = NOON + 900
    assert take_all(budget) == 100


def test_record_response_429_on_the_day_blocks_until_midnight(make_budget, clock):
    budget = make_budget()
    budget.take_permit()
    budget.record_response(
        429,
        RateLimits(overall=BucketUsage(200, 2000, 20, 1000), read=BucketUsage(100, 1000, 20, 1000)),
    )
    clock.now = NOON + 3600
    with pytest.raises(NoPermit, match="read daily window spent") as caught:
        budget.take_permit()
    assert caught.value.retry_at == MIDNIGHT


def test_record_response_429_without_headers_spends_both_15min_windows(make_budget, clock):
    budget = make_budget()
    budget.take_permit()
    budget.record_response(429, NO_HEADERS)
    snap = budget.snapshot()
    assert snap["overall"]["left_15min"] == snap["read"]["left_15min"] == 0
    assert snap["read"]["used_day"] == 1
    with pytest.raises(NoPermit) as caught:
        budget.take_permit()
    assert caught.value.retry_at == NOON + 900
    clock.now = NOON + 900
    budget.take_permit()


def test_record_response_without_headers_changes_nothing(make_budget):
    budget = make_budget()
    budget.take_permit()
    before = budget.snapshot()
    budget.record_response(200, NO_HEADERS)
    assert budget.snapshot() == before


def test_record_response_after_reset_keeps_old_usage_out_of_the_new_window(make_budget, clock):
    budget = make_budget()
    clock.now = NOON + 899.5
    budget.take_permit()
    clock.now = NOON + 900.2  # the response crossed the quarter hour
    budget.record_response(
        200,
        RateLimits(overall=BucketUsage(200, 2000, 95, 500), read=BucketUsage(100, 1000, 95, 500)),
    )
    snap = budget.snapshot()
    assert snap["read"]["used_15min"] == 0
    assert snap["read"]["used_day"] == 500


def test_snapshot_after_some_permits(make_budget, clock):
    budget = make_budget(reserve=0.25)
    for _ in range(3):
        budget.take_permit()
    clock.now += 900
    for _ in range(4):
        budget.take_permit("bulk")
    assert budget.snapshot() == {
        "reserve": 0.25,
        "overall": {
            "limit_15min": 200,
            "used_15min": 4,
            "left_15min": 196,
            "limit_day": 2000,
            "used_day": 7,
            "left_day": 1993,
            "window_resets_at": "2026-11-28T12:30:00Z",
            "day_resets_at": "2026-11-29T00:00:00Z",
        },
        "read": {
            "limit_15min": 100,
            "used_15min": 4,
            "left_15min": 96,
            "limit_day": 1000,
            "used_day": 7,
            "left_day": 993,
            "window_resets_at": "2026-11-28T12:30:00Z",
            "day_resets_at": "2026-11-29T00:00:00Z",
        },
    }


def test_available_bulk_versus_realtime(make_budget):
    budget = make_budget(reserve=0.2)
    for _ in range(10):
        budget.take_permit()
    assert budget.available("bulk") == {"window": 70, "day": 790}
    assert budget.available("realtime") == {"window": 90, "day": 990}
    assert budget.available() == budget.available("bulk")
    take_all(budget, "bulk")
    assert budget.available("bulk") == {"window": 0, "day": 720}
    assert budget.available("realtime") == {"window": 20, "day": 920}


def test_no_permit_pickles_with_its_fields():
    error = pickle.loads(pickle.dumps(NoPermit(NOON + 900, "read 15-minute window spent")))
    assert (error.retry_at, error.reason) == (NOON + 900, "read 15-minute window spent")
    assert str(error) == "read 15-minute window spent; resets 2026-11-28T12:15:00Z"


def test_budget_rejects_a_reserve_out_of_range(redis_conn):
    with pytest.raises(ValueError, match="reserve"):
        RateBudget(redis_conn, reserve=1.0)
