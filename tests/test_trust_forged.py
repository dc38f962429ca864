"""Forged events: what an outsider posting events for one athlete can and cannot do to others."""

import os
import shutil
import tempfile

import pytest
import sqlalchemy as sa
from conftest import connect_rider, event, make_app, promote_scheduled, run_jobs, scheduled_jobs
from rq.job import Job
from test_jobs import activity_row, connection, post

import models
import services
from jobs import failures
from strava_client import StravaError
from sync import allowance

DETAIL = "GET /activities/{id}"
LIST = "GET /athlete/activities"


@pytest.fixture
def flood_database_url(database_url):
    """The test database; a SQLite one in memory-backed /dev/shm, where commits cost no fsync."""
    if not database_url.startswith("sqlite") or not os.path.isdir("/dev/shm"):
        yield database_url
        return
    folder = tempfile.mkdtemp(dir="/dev/shm")
    yield f"sqlite:///{folder}/flood.sqlite"
    shutil.rmtree(folder, ignore_errors=True)


def events_by_owner(svc, owner):
    with svc.engine.connect() as conn:
        table = models.webhook_event
        query = sa.select(table).where(table.c.owner_id == owner).order_by(table.c.id)
        return conn.execute(query).all()


def two_riders_b_holding_an_activity(app, client, sim):
    """Rider A (the forger's athlete) and rider B, whose activity is stored."""
    rider_a, athlete_a = connect_rider(app, sim, name=("Mallory", "Forger"))
    rider_b, athlete_b = connect_rider(app, sim, name=("Bea", "Victim"))
    activity = sim.create_activity(athlete_b, name="B's long ride", distance=120_000.0)
    post(client, event(athlete_b, activity))
    run_jobs(app)
    return (rider_a, athlete_a), (rider_b, athlete_b), activity


def test_attack_forged_delete_of_another_riders_activity_changes_nothing(app, client, svc, sim):
    (rider_a, athlete_a), (rider_b, _), activity = two_riders_b_holding_an_activity(
        app, client, sim
    )
    before = connection(svc, rider_b)
    post(client, event(athlete_a, activity, "delete", event_time=50))
    run_jobs(app)
    assert activity_row(svc, activity).rider_id == rider_b
    after = connection(svc, rider_b)
    assert after.eddington_number_km == before.eddington_number_km == 1
    assert connection(svc, rider_a).eddington_number_km is None  # no recompute for A either


def test_attack_forged_create_of_another_riders_activity_changes_nothing(app, client, svc, sim):
    (_, athlete_a), (rider_b, _), activity = two_riders_b_holding_an_activity(app, client, sim)
    held = activity_row(svc, activity)
    post(client, event(athlete_a, activity, "create", event_time=50))
    while run_jobs(app) or scheduled_jobs(app):
        promote_scheduled(app)
    after = activity_row(svc, activity)
    assert (after.rider_id, after.athlete_id, after.name) == (rider_b, held.athlete_id, held.name)
    assert [e.status for e in events_by_owner(svc, athlete_a)] == ["failed"]


def test_attack_forged_update_seen_with_the_forgers_token_changes_nothing(app, client, svc, sim):
    (_, athlete_a), (rider_b, _), activity = two_riders_b_holding_an_activity(app, client, sim)
    b_detail = svc.client.get_activity  # Strava may show A another athlete's public activity

    def public_view(token, activity_id, lane="realtime"):
        data = b_detail(svc.cipher.decrypt(connection(svc, rider_b).access_token), activity_id)
        return dict(data, name="Renamed by Mallory")

    svc.client.get_activity = public_view
    post(client, event(athlete_a, activity, "update", event_time=50))
    run_jobs(app)
    assert activity_row(svc, activity).name == "B's long ride"
    [forged] = events_by_owner(svc, athlete_a)
    assert (forged.status, forged.error) == ("failed", "activity belongs to another athlete")


def test_attack_forged_event_does_not_swallow_the_owners_genuine_event(app, client, svc, sim):
    (_, athlete_a), (_, athlete_b), activity = two_riders_b_holding_an_activity(app, client, sim)
    post(client, event(athlete_a, activity, "update", event_time=50))  # forged, arrives first
    sim.update_activity(activity, name="Renamed by Bea", event=False)
    assert post(client, event(athlete_b, activity, "update", event_time=60)) == "queued"
    run_jobs(app)
    assert activity_row(svc, activity).name == "Renamed by Bea"
    assert [e.status for e in events_by_owner(svc, athlete_b)] == ["done", "done"]


def test_attack_forged_fetch_that_fails_for_good_leaves_the_owners_event_open(
    app, client, svc, sim
):
    (_, athlete_a), (_, athlete_b), activity = two_riders_b_holding_an_activity(app, client, sim)
    post(client, event(athlete_a, activity, "update", event_time=50))  # forged
    post(client, event(athlete_b, activity, "update", event_time=60))  # genuine
    [forged_job, genuine_job] = [Job.fetch(i, connection=svc.redis) for i in queued_ids(svc)]
    assert (forged_job.meta["owner"], genuine_job.meta["owner"]) == (athlete_a, athlete_b)
    forged_job.retries_left = 0  # the forged fetch failed for good
    with services.bind(svc):
        failures.mark_failed(forged_job, svc.redis, StravaError, StravaError("boom"), None)
    assert [e.status for e in events_by_owner(svc, athlete_a)] == ["failed"]
    assert [e.status for e in events_by_owner(svc, athlete_b)] == ["done", "queued"]


def queued_ids(svc):
    return svc.queue("strava").job_ids


def test_attack_forged_create_flood_costs_at_most_50_reads_a_day(flood_database_url, sim):
    now = [1_800_000_000.0]
    app = make_app(flood_database_url, sim, CLOCK=lambda: now[0])
    svc, client = app.extensions["strava_sync"], app.test_client()
    _, athlete_a = connect_rider(app, sim, name=("Flooded", "Athlete"))
    rider_b, athlete_b = connect_rider(app, sim, name=("Genuine", "Rider"))
    real_a = sim.create_activity(athlete_a, name="A's real ride", event=False)
    genuine = sim.create_activity(athlete_b, name="B's ride", event=False)
    sim.reset_counters()
    for i in range(1000):
        post(client, event(athlete_a, 9_000_000_000 + i, event_time=i))
        if i == 500:  # a genuine event for another rider, sent during the flood
            post(client, event(athlete_b, genuine, event_time=i))
            run_jobs(app)  # the queue, run once
            assert [e.status for e in events_by_owner(svc, athlete_b)] == ["done"]
            assert activity_row(svc, genuine).rider_id == rider_b
            assert "queued" in {e.status for e in events_by_owner(svc, athlete_a)}  # flood waits
        elif i % 100 == 99:
            run_jobs(app)  # the workers keep up with the flood
    run_jobs(app)
    assert sim.requests[DETAIL] <= svc.settings.unknown_fetch_allowance + 1
    assert allowance.used_today(svc, athlete_a) > svc.settings.unknown_fetch_allowance
    for _ in range(30):  # the rest of the day: retries and catch-ups as their times come
        now[0] += 3600
        promote_scheduled(app)
        run_jobs(app)
    reads = sim.requests[DETAIL] + sim.requests[LIST]
    assert reads <= 50
    statuses = {e.status for e in events_by_owner(svc, athlete_a)}
    assert statuses == {"failed"}  # made-up ids never appear
    assert activity_row(svc, real_a) is not None  # the catch-up stored the athlete's real ride


def test_allowance_is_per_athlete_and_per_day(database_url, sim):
    now = [1_800_000_000.0]
    app = make_app(database_url, sim, CLOCK=lambda: now[0], UNKNOWN_FETCH_ALLOWANCE=2)
    svc = app.extensions["strava_sync"]
    assert [allowance.take(svc, 1) for _ in range(3)] == [True, True, False]
    assert allowance.take(svc, 2)
    now[0] += 86400
    assert allowance.take(svc, 1)


def test_catch_up_lists_once_for_many_waiting_creates(database_url, sim):
    app = make_app(database_url, sim, UNKNOWN_FETCH_ALLOWANCE=1)
    svc, client = app.extensions["strava_sync"], app.test_client()
    rider, athlete = connect_rider(app, sim)
    bulk = [sim.create_activity(athlete, name=f"Old ride {i}", event=False) for i in range(30)]
    sim.reset_counters()
    for i, activity in enumerate(bulk):  # a genuine bulk upload of 30 old rides
        post(client, event(athlete, activity, event_time=i))
    run_jobs(app)
    assert sim.requests[DETAIL] == 0 and sim.requests[LIST] == 1  # the first fetch lists them
    with svc.engine.connect() as conn:
        assert {a.id for a in models.rider_activities(conn, rider)} == set(bulk)
    assert {e.status for e in events_by_owner(svc, athlete)} == {"done"}
