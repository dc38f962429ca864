"""Waiting work is released at the pace the rate budget allows, never all at one reset."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import fakeredis
from clocks import mid_window_clock
from conftest import connect_rider, event, make_app, run_jobs, scheduled_jobs
from rq import Queue
from rq.registry import ScheduledJobRegistry

from services import QUEUES
from strava_client.ratebudget import WINDOW, RateBudget
from strava_sim import StravaSim

NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()


def spent_budget(read_limits: tuple[int, int]) -> RateBudget:
    """A budget at noon whose 15-minute window is spent (100 reads taken)."""
    budget = RateBudget(fakeredis.FakeRedis(), read_limits=read_limits, clock=lambda: NOON + 60)
    for _ in range(100):
        budget.take_permit()
    return budget


def test_book_runs_work_when_due_while_a_permit_is_free():
    budget = RateBudget(fakeredis.FakeRedis(), clock=lambda: NOON + 60)
    assert [budget.book(), budget.book(not_before=NOON + 120)] == [NOON + 60, NOON + 120]


def test_book_fills_each_coming_window_to_its_cap_in_order():
    budget = spent_budget((100, 1000))
    times = [budget.book() for _ in range(250)]
    windows = Counter(t - t % WINDOW for t in times)
    assert windows == {NOON + WINDOW: 100, NOON + 2 * WINDOW: 100, NOON + 3 * WINDOW: 50}
    assert times == sorted(times) and len(set(times)) == 250  # paced: no two at one instant


def test_book_moves_to_the_next_day_when_the_days_reads_are_promised():
    budget = spent_budget((100, 150))
    times = [budget.book() for _ in range(200)]
    tomorrow = NOON - NOON % 86400 + 86400
    windows = Counter(t - t % WINDOW for t in times)
    assert windows == {NOON + WINDOW: 50, tomorrow: 100, tomorrow + WINDOW: 50}


def scores(app) -> list[float]:
    """When each scheduled job is due."""
    svc = app.extensions["strava_sync"]
    return [
        svc.redis.zscore(ScheduledJobRegistry(queue=Queue(n, connection=svc.redis)).key, j.id)
        for n in QUEUES
        for j in scheduled_jobs(app)
        if j.origin == n
    ]


def test_waiting_fetches_wake_a_windows_worth_at_a_time(database_url):
    clock = mid_window_clock()
    # A limit of 2 is below what a header may teach us (a tenth of Strava's default): configured.
    with StravaSim(read_limits=(2, 100), clock=clock) as sim:
        app = make_app(database_url, sim, CLOCK=clock.now, STRAVA_READ_RATE_LIMITS=(2, 100))
        client = app.test_client()
        athletes = [connect_rider(app, sim, name=("Rider", str(i)))[1] for i in range(7)]
        activities = [sim.create_activity(athlete) for athlete in athletes]
        for athlete, a in zip(athletes, activities, strict=True):
            client.post("/api/strava/webhook", json=event(athlete, a))
        run_jobs(app)
        assert sum(sim.requests_by_activity[a] for a in activities) == 2
        due = scores(app)
        window_end = clock.now() - clock.now() % WINDOW + WINDOW
        # The five waiting fetches: two a window over the next three, none at the same instant.
        assert Counter((t - window_end) // WINDOW for t in due) == {0: 2, 1: 2, 2: 1}
        assert len(set(due)) == 5 and min(due) >= window_end


def test_a_fetch_refused_a_permit_waits_for_its_turn_after_the_reset(database_url):
    clock = mid_window_clock()
    with StravaSim(read_limits=(2, 100), clock=clock) as sim:
        app = make_app(database_url, sim, CLOCK=clock.now, STRAVA_READ_RATE_LIMITS=(2, 100))
        svc = app.extensions["strava_sync"]
        _, athlete = connect_rider(app, sim)
        activity = sim.create_activity(athlete)
        app.test_client().post("/api/strava/webhook", json=event(athlete, activity))
        svc.budget.take_permit()
        svc.budget.take_permit()  # another worker's fetches spent the window meanwhile
        run_jobs(app)
        assert sim.requests_by_activity[activity] == 0 and sim.rate_limited == 0
        window_end = clock.now() - clock.now() % WINDOW + WINDOW
        [at] = scores(app)
        assert window_end <= at < window_end + WINDOW
