"""RateBudget's per-window history, which the admin page charts."""

from __future__ import annotations

import fakeredis
import pytest
import redis
from conftest import REAL_REDIS

from strava_client.ratebudget import DAY, HISTORY_TTL, WINDOW, NoPermit, RateBudget

MIDNIGHT = 1_780_012_800 - 1_780_012_800 % DAY


@pytest.fixture
def conn():
    if REAL_REDIS:
        client = redis.Redis.from_url(REAL_REDIS)
        client.flushdb()
        yield client
        client.flushdb()
        client.close()
    else:
        yield fakeredis.FakeRedis()


def budget_at(conn, clock, **kw) -> RateBudget:
    return RateBudget(conn, clock=lambda: clock[0], prefix="test-history", **kw)


def test_history_counts_permits_per_window_across_midnight(conn):
    clock = [float(MIDNIGHT - 60)]  # the last window of a day
    budget = budget_at(conn, clock)
    budget.take_permit()
    budget.take_permit()
    clock[0] = MIDNIGHT + 5  # the first window of the next day
    budget.take_permit(lane="bulk")
    history = budget.history(hours=1)
    assert [start for start, _ in history] == [MIDNIGHT - 3 * WINDOW + i * WINDOW for i in range(4)]
    assert [n for _, n in history] == [0, 0, 2, 1]
    assert len(budget.history()) == 96


def test_history_leaves_out_refused_permits(conn):
    clock = [float(MIDNIGHT + 30)]
    budget = budget_at(conn, clock, read_limits=(2, 1000), limits=(2, 1000))
    budget.take_permit()
    budget.take_permit()
    with pytest.raises(NoPermit):
        budget.take_permit()
    assert budget.history(hours=1)[-1] == (MIDNIGHT, 2)


def test_history_keys_expire_after_two_days(conn):
    clock = [float(MIDNIGHT + 30)]
    budget_at(conn, clock).take_permit()
    [key] = conn.keys("test-history:history:*")
    assert 0 < conn.ttl(key) <= HISTORY_TTL
