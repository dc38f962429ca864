"""Performance and scale (#15): the one-statement acknowledgement, the create delay, the sweep's
share of the day, its 48-hour reach, and the rotating full-history check."""

from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
import sqlalchemy as sa
from conftest import connect_rider, event, make_app, run_jobs, scheduled_jobs

import models
import reconcile
import services
from jobs import backfill, history, status
from strava_client.ratebudget import NoPermit, RateBudget

NOON = 1_764_331_200  # 2025-11-28 12:00 UTC
WEBHOOK = "/api/strava/webhook"
LIST = "GET /athlete/activities"


def statements(engine, action) -> int:
    """How many SQL statements `action` sends."""
    sent = []
    listener = lambda *args: sent.append(args[2])  # noqa: E731 - the statement text
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        action()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    return len(sent)


def events_in(svc):
    with svc.engine.connect() as conn:
        return conn.execute(sa.select(models.webhook_event).order_by("id")).all()


# -- the acknowledgement ---------------------------------------------------------------------------


def test_receive_event_stores_a_handled_event_with_its_job_in_one_statement(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    client.post(WEBHOOK, json=event(athlete, 1))  # the subscription lookup is cached after this

    answers = []
    count = statements(
        svc.engine, lambda: answers.append(client.post(WEBHOOK, json=event(athlete, 2)))
    )

    assert count == 1
    assert answers[0].get_json() == {"status": "queued"}
    row = events_in(svc)[-1]
    assert (row.status, row.error, row.processed_at) == ("queued", None, None)
    assert svc.queue("strava").count == 2
    assert svc.queue("strava").job_ids[-1] == row.job_id  # the row names the job that carries it


def test_receive_event_for_an_unknown_athlete_costs_a_bounded_number_of_statements(
    app, client, svc
):
    client.post(WEBHOOK, json=event(1, 1))
    answers = []
    counts = [
        statements(
            svc.engine, lambda i=i: answers.append(client.post(WEBHOOK, json=event(4242, i)))
        )
        for i in range(2, 7)
    ]

    # Not connected: count it, and keep it as an example while the athlete's day has room.
    assert counts == [3, 3, 3, 2, 2]
    assert {a.get_json()["status"] for a in answers} == {"ignored"}
    row = events_in(svc)[-1]
    assert row.status == "ignored" and row.error == "athlete 4242 is not connected to us"
    assert row.processed_at is not None
    assert svc.queue("strava").count == 0


def test_receive_event_of_an_unhandled_kind_keeps_its_reason(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    response = client.post(WEBHOOK, json=event(athlete, 3, aspect="archive"))
    assert response.get_json()["status"] == "ignored"
    assert "archive" in events_in(svc)[-1].error


def test_receive_event_repeat_is_a_duplicate_and_queues_nothing_more(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    client.post(WEBHOOK, json=event(athlete, 5))
    assert client.post(WEBHOOK, json=event(athlete, 5)).get_json() == {"status": "duplicate"}
    assert len(events_in(svc)) == 1 and svc.queue("strava").count == 1


# -- the create delay ------------------------------------------------------------------------------


def test_create_fetch_waits_for_the_delay_and_an_early_edit_rides_on_it(database_url, sim):
    app = make_app(database_url, sim, CREATE_FETCH_DELAY_SECONDS=120, CLOCK=lambda: NOON)
    svc = app.extensions["strava_sync"]
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete)
    client = app.test_client()

    client.post(WEBHOOK, json=event(athlete, activity))
    client.post(WEBHOOK, json=event(athlete, activity, aspect="update", updates={"title": "x"}))

    assert svc.queue("strava").count == 0
    waiting = scheduled_jobs(app)
    assert len(waiting) == 1
    registry_key = f"rq:scheduled:{waiting[0].origin}"
    assert svc.redis.zscore(registry_key, waiting[0].id) == NOON + 120
    run_jobs(app, due_too=True)
    assert sim.requests["GET /activities/{id}"] == 1
    assert [r.status for r in events_in(svc)] == ["done", "done"]


def test_update_events_are_fetched_at_once_whatever_the_delay(database_url, sim):
    app = make_app(database_url, sim, CREATE_FETCH_DELAY_SECONDS=120, CLOCK=lambda: NOON)
    svc = app.extensions["strava_sync"]
    _, athlete = connect_rider(app, sim)
    app.test_client().post(WEBHOOK, json=event(athlete, 9, aspect="update"))
    assert svc.queue("strava").count == 1 and scheduled_jobs(app) == []


# -- the sweep's share -----------------------------------------------------------------------------


@pytest.fixture
def budget_for():
    server = fakeredis.FakeServer()

    def make(**kwargs):
        conn = fakeredis.FakeRedis(server=server)
        # The 15-minute windows are wide here, so only the daily counters bind.
        return RateBudget(
            conn, limits=(10_000, 200), read_limits=(10_000, 100), clock=lambda: NOON, **kwargs
        )

    return make


def take_all(budget, lane):
    for granted in range(10_000):
        try:
            budget.take_permit(lane)
        except NoPermit:
            return granted
    return 10_000


def test_realtime_leaves_the_min_share_of_the_day_to_the_sweep(budget_for):
    budget = budget_for(reserve=0.2, min_share=0.25)
    assert take_all(budget, "realtime") == 75
    assert take_all(budget, "bulk") == 5  # the bulk lane stops at 80 % of the day
    assert take_all(budget, "sweep") == 20  # the sweep's lane may use the rest: 25 in all


def test_without_a_min_share_realtime_takes_the_whole_day(budget_for):
    assert take_all(budget_for(reserve=0.2), "realtime") == 100


def test_sweep_allowance_is_never_below_the_min_share(budget_for):
    budget = budget_for(reserve=0.2, min_share=0.25)
    assert budget.sweep_allowance() == 80  # a quiet day: the whole bulk lane
    take_all(budget, "realtime")
    assert budget.sweep_allowance() == 25


def test_rate_budget_refuses_a_min_share_of_one(budget_for):
    with pytest.raises(ValueError, match="min_share"):
        budget_for(min_share=1.0)


@pytest.mark.parametrize(
    ("riders", "realtime", "beyond", "needed"),
    [
        (100, 0, 0, 63),  # 50 sweeps a day fit easily; 63 reads would still do
        (1000, 500, 400, 1250),  # the bulk lane leaves 300 reads: 600 riders in 48 h
        (1000, 900, 500, 1750),
        (10_000, 9000, 9500, 17_500),
    ],
)
def test_sweep_capacity_counts_riders_beyond_48_hours(riders, realtime, beyond, needed):
    got = reconcile.sweep_capacity(riders, 1000, realtime, reserve=0.2, min_share=0.25)
    assert got == (beyond, needed)


def test_status_reports_riders_beyond_capacity(database_url, sim):
    app = make_app(database_url, sim, STRAVA_READ_RATE_LIMITS=(100, 1))
    svc = app.extensions["strava_sync"]
    for i in range(3):
        connect_rider(app, sim, name=("Rider", str(i)))
    data = status.collect_status(svc)
    # One read a day reaches one rider in 48 h; three need 1.5 sweeps a day: a limit of 2.
    assert data["sweep_capacity"] == {"riders_beyond": 2, "read_limit_needed": 2}
    assert "riders beyond capacity: 2 (needs a read limit of 2/day)" in status.format_status(data)


# -- the full-history check ------------------------------------------------------------------------


@pytest.fixture
def history_app(database_url, sim):
    return make_app(database_url, sim, CLOCK=lambda: NOON)


def backfilled(app, sim):
    """A rider whose whole history (five old rides) we hold, read by a backfill."""
    svc = app.extensions["strava_sync"]
    rider_id, athlete = connect_rider(app, sim)
    start = datetime.fromtimestamp(NOON, UTC)
    ids = [
        sim.create_activity(athlete, start_date=start - timedelta(days=100 + 30 * i), event=False)
        for i in range(5)
    ]
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider_id, backfill_before=None)
    run_id = backfill.queue_backfill(svc, rider_id)
    run_jobs(app)
    with svc.engine.connect() as conn:
        assert len(models.rider_activities(conn, rider_id)) == 5
    return rider_id, athlete, ids, run_id


def test_verify_history_deletes_an_old_ride_strava_no_longer_lists(history_app, sim, monkeypatch):
    monkeypatch.setattr(reconcile, "PER_PAGE", 2)  # small pages: several of them
    svc = history_app.extensions["strava_sync"]
    rider_id, _, ids, _ = backfilled(history_app, sim)
    sim.delete_activity(ids[3], event=False)  # 190 days old: far outside the sweep's lookback
    before = sim.requests[LIST]
    with svc.engine.begin() as conn:
        run_id = models.create_run(conn, "verify", "test")

    with services.bind(svc):
        assert history.verify_history(rider_id, run_id) == "verified"

    with svc.engine.connect() as conn:
        held = {r.id for r in models.rider_activities(conn, rider_id)}
        connection = models.get_connection(conn, rider_id)
        run = models.get_run(conn, run_id)
    assert held == set(ids) - {ids[3]}
    assert connection.history_verified_at == datetime.fromtimestamp(NOON, UTC)
    # Pages overlap by one ride (a page may end inside one second), so two a page are 4 requests.
    assert sim.requests[LIST] - before == 4
    assert (run.activities_deleted, run.requests_used) == (1, 4)


def test_verify_history_keeps_everything_strava_still_lists(history_app, sim):
    svc = history_app.extensions["strava_sync"]
    rider_id, _, ids, _ = backfilled(history_app, sim)
    with svc.engine.begin() as conn:
        run_id = models.create_run(conn, "verify", "test")
    with services.bind(svc):
        history.verify_history(rider_id, run_id)
    with svc.engine.connect() as conn:
        assert {r.id for r in models.rider_activities(conn, rider_id)} == set(ids)


def test_queue_checks_waits_for_the_sweep_then_plans_once_a_day(history_app, sim):
    svc = history_app.extensions["strava_sync"]
    rider_id, *_ = backfilled(history_app, sim)
    assert history.queue_checks(svc)["planned"] == 0  # no sweep yet today
    with svc.engine.begin() as conn:
        models.create_run(conn, "reconcile", "cron")
    svc.clock = lambda: datetime.now(UTC).timestamp()  # the run's start is stamped in real time
    assert history.queue_checks(svc)["planned"] == 1
    assert history.queue_checks(svc)["planned"] == 0  # already planned today
    run_jobs(history_app)
    with svc.engine.connect() as conn:
        assert models.get_connection(conn, rider_id).history_verified_at is not None
        assert models.riders_to_verify(conn, models.now() - timedelta(days=30), 10) == []


def test_riders_to_verify_takes_the_least_recently_verified_first(history_app, sim):
    svc = history_app.extensions["strava_sync"]
    first, _ = connect_rider(history_app, sim, name=("A", "A"))
    second, _ = connect_rider(history_app, sim, name=("B", "B"))
    now = models.now()
    with svc.engine.begin() as conn:
        models.update_connection(conn, first, history_verified_at=now - timedelta(days=40))
        due = models.riders_to_verify(conn, now - timedelta(days=30), 10)
        models.update_connection(conn, first, history_verified_at=now)
        later = models.riders_to_verify(conn, now - timedelta(days=30), 10)
    assert due == [(second, 0), (first, 0)]
    assert later == [(second, 0)]


def test_verify_history_of_a_rider_gone_since_planning_reads_nothing(history_app, sim):
    svc = history_app.extensions["strava_sync"]
    rider_id, *_ = backfilled(history_app, sim)
    with svc.engine.begin() as conn:
        models.deauthorize(conn, rider_id)
        run_id = models.create_run(conn, "verify", "test")
    before = sim.requests[LIST]
    with services.bind(svc):
        assert history.verify_history(rider_id, run_id) == "verified"
    assert sim.requests[LIST] == before
