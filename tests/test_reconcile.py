"""The nightly sweep, the backfill and the cron trigger, against the simulator."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from clocks import mid_window_clock, noon_clock
from conftest import (
    CRON_SECRET,
    configure,
    connect_rider,
    event,
    make_app,
    run_jobs,
    scheduled_jobs,
)

import models
from jobs import backfill
from jobs.sweep import queue_sweep
from reconcile import lookback_start, stagger
from strava_client.ratebudget import NoPermit
from strava_sim import SimClock, StravaSim

LIST = "GET /athlete/activities"
AUTH = {"Authorization": f"Bearer {CRON_SECRET}"}


def held(svc, rider_id):
    with svc.engine.connect() as conn:
        return {a.id: a for a in models.rider_activities(conn, rider_id)}


def sweep(app, **options):
    svc = app.extensions["strava_sync"]
    with app.app_context():
        summary = queue_sweep(svc, "test", **options)
    run_jobs(app)
    with svc.engine.connect() as conn:
        return summary, models.get_run(conn, summary["run_id"])


def synced_rider(app, client, sim, count=3):
    """A rider whose activities arrived by events, so we hold what Strava holds."""
    rider, athlete = connect_rider(app, sim)
    ids = [sim.create_activity(athlete, name=f"Ride {i}") for i in range(count)]
    for activity in ids:
        client.post("/api/strava/webhook", json=event(athlete, activity))
    run_jobs(app)
    return rider, athlete, ids


def test_sweep_repairs_changes_no_event_announced(app, client, svc, sim):
    rider, athlete, (kept, renamed, deleted) = synced_rider(app, client, sim)
    sim.update_activity(renamed, name="Renamed quietly", event=False)
    sim.delete_activity(deleted, event=False)
    created = sim.create_activity(athlete, name="Never announced", event=False)
    summary, run = sweep(app)
    assert summary["planned"] == 1 and summary["deferred"] == 0
    ours = held(svc, rider)
    assert set(ours) == {kept, renamed, created}
    assert ours[renamed].name == "Renamed quietly"
    assert ours[created].name == "Never announced"
    assert (run.activities_created, run.activities_updated, run.activities_deleted) == (1, 1, 1)
    assert run.activities_unannounced == 3
    assert run.status == "done" and run.riders_done == 1
    with svc.engine.connect() as conn:
        assert models.get_connection(conn, rider).last_reconciled_at is not None


def test_second_sweep_changes_nothing_and_costs_one_list_per_rider(app, client, svc, sim):
    riders = [synced_rider(app, client, sim, count=2)[0] for _ in range(3)]
    sim.create_activity(sim.add_athlete(), event=False)  # someone not connected to us
    sweep(app)
    before = {r: held(svc, r) for r in riders}
    sim.reset_counters()
    _, run = sweep(app)
    assert sim.requests[LIST] == 3
    assert sum(sim.requests.values()) == 3
    assert (run.activities_created, run.activities_updated, run.activities_deleted) == (0, 0, 0)
    assert {r: held(svc, r) for r in riders} == before


def test_dry_run_reports_the_difference_without_writing(app, client, svc, sim):
    rider, _, ids = synced_rider(app, client, sim)
    sim.delete_activity(ids[0], event=False)
    summary, run = sweep(app, dry_run=True)
    assert summary["dry_run"] is True
    assert run.activities_deleted == 1 and run.dry_run
    assert ids[0] in held(svc, rider)
    with svc.engine.connect() as conn:
        assert models.get_connection(conn, rider).last_reconciled_at is None


def test_private_activity_without_read_all_is_removed_by_the_sweep(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim, scope="read,activity:read")
    public = sim.create_activity(athlete)
    secret = sim.create_activity(athlete)
    for activity in (public, secret):
        client.post("/api/strava/webhook", json=event(athlete, activity))
    run_jobs(app)
    sim.update_activity(secret, private=True, event=False)
    sweep(app)
    assert set(held(svc, rider)) == {public}


def test_sweep_reaches_back_to_the_last_successful_sweep(app, client, svc, sim):
    rider, athlete, _ = synced_rider(app, client, sim, count=1)
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    missed = sim.create_activity(athlete, start_date=ten_days_ago + timedelta(hours=1), event=False)
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider, last_reconciled_at=ten_days_ago)
    sweep(app)
    assert missed in held(svc, rider)


def test_lookback_start_never_later_than_the_last_sweep():
    now = datetime(2026, 11, 28, 3, 17, tzinfo=UTC)
    assert lookback_start(now, None, 7) == now - timedelta(days=7)
    assert lookback_start(now, now - timedelta(days=1), 7) == now - timedelta(days=7)
    assert lookback_start(now, now - timedelta(days=30), 7) == now - timedelta(days=30)


def test_riders_beyond_the_days_bulk_budget_are_deferred_oldest_first(database_url):
    clock = noon_clock()  # a day's reset in mid-test would refill the day's 5 reads
    with StravaSim(read_limits=(100, 5), clock=clock) as sim:
        app = make_app(database_url, sim, STRAVA_READ_RATE_LIMITS=(100, 5), CLOCK=clock.now)
        svc = app.extensions["strava_sync"]
        riders = [connect_rider(app, sim, name=("R", str(i)))[0] for i in range(6)]
        with svc.engine.begin() as conn:
            for i, rider in enumerate(riders):
                stamp = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=i)
                models.update_connection(conn, rider, last_reconciled_at=stamp)
        # Bulk work leaves 20% of the day's 5 requests to real-time fetches: 4 riders fit.
        summary, run = sweep(app)
        assert (summary["planned"], summary["deferred"]) == (4, 2)
        assert run.status == "partial"
        with svc.engine.connect() as conn:
            swept = models.riders_to_reconcile(conn)[-4:]
        assert sorted(swept) == riders[:4]
        assert sim.rate_limited == 0


def test_sweep_spreads_rider_jobs_over_the_windows_the_budget_allows(database_url):
    clock = SimClock(start=datetime(2026, 11, 28, 3, 17, tzinfo=UTC).timestamp())
    with StravaSim(read_limits=(5, 1000), clock=clock) as sim:
        # Limits this low are below what a header may teach us (a tenth of Strava's): configured.
        app = make_app(database_url, sim, CLOCK=clock.now, STRAVA_READ_RATE_LIMITS=(5, 1000))
        svc = app.extensions["strava_sync"]
        riders = [connect_rider(app, sim, name=("R", str(i)))[0] for i in range(8)]
        # Learn Strava's limits from one response, as every worker does.
        with app.app_context():
            backfill.queue_backfill(svc, riders[0], days=1)
        run_jobs(app)
        summary, run = sweep(app)
        assert summary["planned"] == 8
        # Bulk may use 4 of each window's 5 reads; the backfill took one of this window's.
        assert sim.requests[LIST] == 1 + 3
        assert sim.rate_limited == 0
        window_end = datetime(2026, 11, 28, 3, 30, tzinfo=UTC).timestamp()
        starts = sorted(
            svc.redis.zscore(f"rq:scheduled:{job.origin}", job.id) - window_end
            for job in scheduled_jobs(app)
        )
        assert len(starts) == 5
        assert all(0 < s <= 31 for s in starts[:4]) and 900 < starts[4] <= 931
        assert run.status == "running" and run.riders_rescheduled == 0


def test_stagger_fills_this_window_then_one_window_at_a_time():
    assert stagger(5, left_now=2, per_window=2, window_end=1000.0) == [
        None, None, 1000.0, 1000.0, 1900.0,
    ]  # fmt: skip
    assert stagger(2, left_now=0, per_window=0, window_end=0.0) == [0.0, 900.0]


def test_rider_jobs_that_find_no_permit_wait_for_the_next_window(database_url):
    clock = mid_window_clock()  # a window reset in mid-test would give the job its permit
    with StravaSim(clock=clock) as sim:
        app = make_app(database_url, sim, CLOCK=clock.now)
        svc = app.extensions["strava_sync"]
        rider, _ = connect_rider(app, sim)
        with app.app_context():
            run_id = queue_sweep(svc, "test")["run_id"]
        # Real-time fetches spend the window between planning and the job's run.
        with pytest.raises(NoPermit):
            for _ in range(1000):
                svc.budget.take_permit("realtime")
        run_jobs(app)
        [waiting] = scheduled_jobs(app)
        assert waiting.func_name == "jobs.sweep.reconcile_rider" and waiting.args[0] == rider
        with svc.engine.connect() as conn:
            run = models.get_run(conn, run_id)
        assert (run.status, run.riders_rescheduled) == ("running", 1)
        assert sim.requests[LIST] == 0 and sim.rate_limited == 0


def test_backfill_reads_history_in_pages_and_resumes_after_budget_waits(database_url):
    clock = SimClock(start=datetime(2026, 11, 28, 12, 1, tzinfo=UTC).timestamp())
    with StravaSim(read_limits=(3, 1000), clock=clock) as sim:
        app = make_app(database_url, sim, CLOCK=clock.now, STRAVA_READ_RATE_LIMITS=(3, 1000))
        svc = app.extensions["strava_sync"]
        rider, athlete = connect_rider(app, sim)
        start = datetime.fromtimestamp(clock.now(), UTC) - timedelta(days=900)
        ids = {
            sim.create_activity(athlete, start_date=start + timedelta(days=i), event=False)
            for i in range(450)
        }
        with app.app_context():
            run_id = backfill.queue_backfill(svc, rider)
        run_jobs(app)
        # 3 requests a window, bulk may use 2: two pages of 200 now, the rest after the reset.
        assert len(held(svc, rider)) == 400
        assert len(scheduled_jobs(app)) == 1
        clock.advance(900)
        run_jobs(app, due_too=True)
        assert set(held(svc, rider)) == ids
        with svc.engine.connect() as conn:
            run = models.get_run(conn, run_id)
            assert models.get_connection(conn, rider).backfill_before == 0
        assert (run.status, run.activities_created) == ("partial", 450)
        assert sim.rate_limited == 0


def test_backfill_days_limits_how_far_back(app, svc, sim):
    rider, athlete = connect_rider(app, sim)
    now = datetime.now(UTC)
    recent = sim.create_activity(athlete, start_date=now - timedelta(days=3), event=False)
    sim.create_activity(athlete, start_date=now - timedelta(days=40), event=False)
    with app.app_context():
        backfill.queue_backfill(svc, rider, days=30)
    run_jobs(app)
    assert set(held(svc, rider)) == {recent}


def test_eddington_numbers_follow_the_sweep(database_url):
    clock = noon_clock()
    with StravaSim(seed=7, clock=clock) as sim:
        app = make_app(database_url, sim, CLOCK=clock.now)
        assert eddington_after_sweep(app, sim, datetime.fromtimestamp(clock.now(), UTC)) == (1, 1)


def eddington_after_sweep(app, sim, now):
    """(km, miles) Eddington numbers after a sweep finds two rides on one day and a long run."""
    svc = app.extensions["strava_sync"]
    rider, athlete = connect_rider(app, sim)
    day = now - timedelta(days=2)
    for hours in (0, 3):  # two rides on one local day count as one 60 km day
        sim.create_activity(athlete, distance=30_000, start_date=day + timedelta(hours=hours))
    sim.create_activity(
        athlete, sport_type="Run", distance=90_000, start_date=day - timedelta(days=1)
    )
    sweep(app)
    with svc.engine.connect() as conn:
        row = models.get_connection(conn, rider)
    return row.eddington_number_km, row.eddington_number_miles


# -- the cron endpoint --


@pytest.mark.parametrize(
    ("secret", "header"),
    [
        (CRON_SECRET, None),
        (CRON_SECRET, "Bearer wrong"),
        (CRON_SECRET, f"Basic {CRON_SECRET}"),
        (CRON_SECRET, f"bearer{CRON_SECRET}"),
        (CRON_SECRET, "Bearer "),
        (None, "Bearer None"),
        (None, "Bearer "),
        ("", "Bearer "),
    ],
)
def test_cron_refuses_without_the_right_secret(database_url, sim, secret, header):
    app = make_app(database_url, sim, CRON_SECRET=secret)
    headers = {"Authorization": header} if header else {}
    response = app.test_client().post("/api/cron/reconcile", headers=headers)
    assert response.status_code == 401
    assert "error" in response.get_json()
    with app.extensions["strava_sync"].engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(models.sync_run)).scalar() == 0


def test_cron_plans_the_sweep_and_reports_the_budget(app, client, svc, sim):
    connect_rider(app, sim)
    response = client.post("/api/cron/reconcile", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["planned"], body["deferred"]) == (1, 0)
    assert isinstance(body["run_id"], int)
    assert body["budget"]["read"]["limit_day"] == 1000
    assert svc.queue("reconcile").count == 1
    with svc.engine.connect() as conn:
        assert models.get_run(conn, body["run_id"]).trigger == "cron"


def test_cron_accepts_options_and_an_empty_body(app, client, svc, sim):
    for i in range(3):
        connect_rider(app, sim, name=("R", str(i)))
    body = client.post("/api/cron/reconcile", headers=AUTH, json={"max_riders": 2}).get_json()
    assert (body["planned"], body["deferred"]) == (2, 1)
    body = client.post("/api/cron/reconcile", headers=AUTH, json={"dry_run": True}).get_json()
    assert body["dry_run"] is True
    run_jobs(app)  # the first sweep finishes; with no minimum interval the next may start
    configure(svc, reconcile_min_interval_hours=0)
    empty = client.post("/api/cron/reconcile", headers=AUTH, data=b"")
    assert empty.status_code == 200 and empty.get_json()["planned"] == 3


@pytest.mark.parametrize(
    "body",
    [b"[]", b"not json", b'{"dry_run": "yes"}', b'{"max_riders": -1}', b'{"max_riders": true}'],
)
def test_cron_rejects_bad_options(client, body):
    response = client.post(
        "/api/cron/reconcile", headers=AUTH, data=body, content_type="application/json"
    )
    assert response.status_code == 400
    assert "error" in response.get_json()


def test_sweep_closes_events_no_job_finished(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    client.post("/api/strava/webhook", json=event(athlete, 1))  # its job is never run
    client.post("/api/strava/webhook", json=event(athlete, 2))
    with svc.engine.begin() as conn:
        table = models.webhook_event
        yesterday = svc.now() - timedelta(days=3, minutes=1)
        conn.execute(table.update().where(table.c.object_id == 1).values(received_at=yesterday))
    sweep(app)
    with svc.engine.connect() as conn:
        rows = conn.execute(sa.select(models.webhook_event).order_by(models.webhook_event.c.id))
        outcome = [(r.object_id, r.status) for r in rows]
    assert outcome[0] == (1, "failed")
    assert outcome[1][1] != "failed"
