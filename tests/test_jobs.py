"""Events become stored activities: the jobs against the simulator, run by a real RQ worker."""

import threading

import sqlalchemy as sa
from conftest import connect_rider, event, promote_scheduled, run_jobs, scheduled_jobs
from rq import SimpleWorker

import models
import services
from jobs import fetch
from services import QUEUES
from strava_client.tokens import access_token

DETAIL = "GET /activities/{id}"


def post(client, body):
    response = client.post("/api/strava/webhook", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["status"]


def activity_row(svc, activity_id):
    with svc.engine.connect() as conn:
        query = sa.select(models.strava_activity).where(models.strava_activity.c.id == activity_id)
        return conn.execute(query).first()


def statuses(svc):
    with svc.engine.connect() as conn:
        table = models.webhook_event
        return [r.status for r in conn.execute(sa.select(table).order_by(table.c.id))]


def connection(svc, rider_id):
    with svc.engine.connect() as conn:
        return models.get_connection(conn, rider_id)


def test_create_event_yields_the_activity_with_stravas_values(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    activity = sim.create_activity(
        athlete, name="Brevet 200", distance=203_500.0, moving_time=29_000
    )
    assert post(client, event(athlete, activity)) == "queued"
    run_jobs(app)
    row = activity_row(svc, activity)
    truth = sim.activities(athlete)[0]
    assert (row.rider_id, row.athlete_id, row.name) == (rider, athlete, "Brevet 200")
    assert row.distance == truth["distance"] == 203_500.0
    assert row.moving_time == truth["moving_time"]
    assert row.sport_type == truth["sport_type"]
    assert row.start_date.isoformat().replace("+00:00", "Z") == truth["start_date"]
    assert statuses(svc) == ["done"]
    assert connection(svc, rider).eddington_number_km == 1
    assert sim.requests[DETAIL] == 1


def test_three_copies_of_one_event_cause_one_fetch(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete)
    assert [post(client, event(athlete, activity)) for _ in range(3)] == [
        "queued", "duplicate", "duplicate",
    ]  # fmt: skip
    run_jobs(app)
    assert sim.requests_by_activity[activity] == 1
    assert activity_row(svc, activity) is not None


def test_several_events_before_the_fetch_runs_share_one_fetch(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, name="Morning Ride")
    sim.update_activity(activity, name="Messy", sport_type="GravelRide")
    post(client, event(athlete, activity, "create"))
    post(client, event(athlete, activity, "update", updates={"title": "Messy"}, event_time=2))
    post(client, event(athlete, activity, "update", updates={"type": "GravelRide"}, event_time=3))
    run_jobs(app)
    assert sim.requests_by_activity[activity] == 1
    row = activity_row(svc, activity)
    assert (row.name, row.sport_type) == ("Messy", "GravelRide")
    assert statuses(svc) == ["done", "done", "done"]


def test_event_during_a_running_fetch_gets_exactly_one_more_fetch(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, name="First")
    post(client, event(athlete, activity))
    # While the first fetch is in flight at Strava, the rider renames the ride twice.
    original = svc.client.get_activity

    def get_activity_then_edit(*args, **kwargs):
        data = original(*args, **kwargs)
        if sim.requests_by_activity[activity] == 1:
            sim.update_activity(activity, name="Second")
            post(
                client,
                event(athlete, activity, "update", updates={"title": "Second"}, event_time=5),
            )
            post(
                client,
                event(athlete, activity, "update", updates={"title": "Second"}, event_time=6),
            )
        return data

    svc.client.get_activity = get_activity_then_edit
    run_jobs(app)
    assert sim.requests_by_activity[activity] == 2
    assert activity_row(svc, activity).name == "Second"
    assert statuses(svc) == ["done", "done", "done"]


def test_a_second_job_for_a_locked_activity_waits_for_the_first(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete)
    # A fetch of this activity runs on another worker. Its lock has no expiry here, so however long
    # this machine takes, it is still held when the job looks (fakeredis expires by the wall clock).
    lock = svc.redis.lock(f"strava-sync:activity-lock:{activity}")
    assert lock.acquire(blocking=False)
    post(client, event(athlete, activity))
    run_jobs(app)
    assert sim.requests_by_activity[activity] == 0
    [waiting] = scheduled_jobs(app)
    assert waiting.func_name == "jobs.fetch.sync_activity"
    lock.release()
    run_jobs(app, due_too=True)
    assert sim.requests_by_activity[activity] == 1
    assert statuses(svc) == ["done"]


def test_a_fetchs_lock_names_its_job_and_only_that_job_frees_it_after_a_death(
    app, client, svc, sim
):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete)
    lock_key = f"strava-sync:activity-lock:{activity}"
    post(client, event(athlete, activity))
    [job] = svc.queue("strava").get_jobs()
    held = []
    original = svc.client.get_activity

    def get_activity_seeing_the_lock(*args, **kwargs):
        held.append(svc.redis.get(lock_key))
        return original(*args, **kwargs)

    svc.client.get_activity = get_activity_seeing_the_lock
    run_jobs(app)
    assert held == [job.id.encode()]  # during the fetch the lock holds the job's id
    assert svc.redis.get(lock_key) is None  # and the job freed it when done

    # A work horse killed mid-fetch leaves the lock as it was; its worker frees it for that job...
    svc.redis.set(lock_key, job.id)
    assert fetch.release_fetch_lock(svc.redis, job)
    assert svc.redis.get(lock_key) is None
    # ...but never another job's fetch of the same activity, nor for a job that is not a fetch.
    svc.redis.set(lock_key, "another-fetch")
    assert not fetch.release_fetch_lock(svc.redis, job)
    revoke = svc.queue("strava").enqueue(fetch.revoke_athlete, athlete, activity)
    svc.redis.set(lock_key, revoke.id)
    assert not fetch.release_fetch_lock(svc.redis, revoke)
    foreign = svc.queue("strava").enqueue("elsewhere.not_ours", athlete, activity)
    assert not fetch.release_fetch_lock(svc.redis, foreign)
    assert svc.redis.get(lock_key) == revoke.id.encode()
    assert sim.requests_by_activity[activity] == 1


def test_forged_delete_changes_nothing(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, name="Still here")
    post(client, event(athlete, activity))
    run_jobs(app)
    before = activity_row(svc, activity)
    post(client, event(athlete, activity, "delete", event_time=99))
    run_jobs(app)
    after = activity_row(svc, activity)
    assert after is not None and after.name == before.name == "Still here"
    assert sim.requests_by_activity[activity] == 2  # the delete was checked with Strava
    assert statuses(svc) == ["done", "done"]


def test_genuine_delete_removes_the_activity_and_updates_eddington(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, distance=5_000.0)
    post(client, event(athlete, activity))
    run_jobs(app)
    assert connection(svc, rider).eddington_number_km == 1
    sim.delete_activity(activity)
    post(client, event(athlete, activity, "delete", event_time=99))
    run_jobs(app)
    assert activity_row(svc, activity) is None
    assert connection(svc, rider).eddington_number_km == 0


def test_update_that_404s_deletes_locally(app, client, svc, sim):
    _, athlete = connect_rider(app, sim, scope="read,activity:read")
    activity = sim.create_activity(athlete)
    post(client, event(athlete, activity))
    run_jobs(app)
    sim.update_activity(activity, private=True)  # hidden from a token without read_all
    post(client, event(athlete, activity, "update", updates={"private": "true"}, event_time=9))
    run_jobs(app)
    assert activity_row(svc, activity) is None


def test_turned_private_with_read_all_keeps_the_row_marked_private(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete)
    post(client, event(athlete, activity))
    run_jobs(app)
    sim.update_activity(activity, private=True)
    post(client, event(athlete, activity, "update", updates={"private": "true"}, event_time=9))
    run_jobs(app)
    assert activity_row(svc, activity).private is True


def test_404_right_after_create_is_retried_then_stored(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    sim.faults.not_found_after_create = 3600
    activity = sim.create_activity(athlete)
    post(client, event(athlete, activity))
    run_jobs(app)
    [retry] = scheduled_jobs(app)
    assert retry.kwargs == {"not_found_retry": 1}
    assert statuses(svc) == ["queued"]
    sim.faults.not_found_after_create = 0  # Strava caught up
    run_jobs(app, due_too=True)
    assert activity_row(svc, activity) is not None
    assert statuses(svc) == ["done"]
    assert sim.requests_by_activity[activity] == 2


def test_404_after_create_fails_the_event_after_three_retries(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    sim.faults.not_found_after_create = 10**9
    activity = sim.create_activity(athlete)
    post(client, event(athlete, activity))
    run_jobs(app)
    while scheduled_jobs(app):
        promote_scheduled(app)
        run_jobs(app)
    assert sim.requests_by_activity[activity] == 4  # the first try and 3 retries
    assert statuses(svc) == ["failed"]
    with svc.engine.connect() as conn:
        error = conn.execute(sa.select(models.webhook_event.c.error)).scalar()
    assert "404" in error
    assert activity_row(svc, activity) is None


def test_retries_are_scheduled_about_1_5_and_15_minutes_later(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    sim.faults.not_found_after_create = 10**9
    activity = sim.create_activity(athlete)
    post(client, event(athlete, activity))
    run_jobs(app)
    waits = []
    for _ in range(3):
        [job] = scheduled_jobs(app)
        registry_score = svc.redis.zscore(f"rq:scheduled:{job.origin}", job.id)
        waits.append(registry_score - job.created_at.timestamp())
        promote_scheduled(app)
        run_jobs(app)
    # RQ keeps whole seconds, so each wait lands within a second of the plan.
    assert all(abs(w - d) <= 1 for w, d in zip(waits, fetch.NOT_FOUND_RETRIES, strict=True))


def test_genuine_revocation_removes_the_riders_strava_data(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    other_rider, other_athlete = connect_rider(app, sim, name=("Bob", "Other"))
    for owner in (athlete, other_athlete):
        post(client, event(owner, sim.create_activity(owner)))
    run_jobs(app)
    sim.revoke(athlete)
    body = event(athlete, athlete, "update", object_type="athlete", updates={"authorized": "false"})
    assert post(client, body) == "queued"
    run_jobs(app)
    gone = connection(svc, rider)
    assert gone.deauthorized_at is not None
    assert (gone.access_token, gone.refresh_token, gone.eddington_number_km) == (None, None, None)
    with svc.engine.connect() as conn:
        assert models.rider_activities(conn, rider) == []
        assert len(models.rider_activities(conn, other_rider)) == 1
    assert connection(svc, other_rider).access_token is not None
    assert statuses(svc)[-1] == "done"


def test_forged_revocation_changes_nothing(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    post(client, event(athlete, sim.create_activity(athlete)))
    run_jobs(app)
    body = event(athlete, athlete, "update", object_type="athlete", updates={"authorized": "false"})
    post(client, body)
    run_jobs(app)
    kept = connection(svc, rider)
    assert kept.deauthorized_at is None and kept.access_token is not None
    with svc.engine.connect() as conn:
        assert len(models.rider_activities(conn, rider)) == 1
    assert statuses(svc)[-1] == "ignored"


def test_events_after_revocation_are_ignored(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.deauthorize(conn, rider, now=svc.now())
    response = client.post("/api/strava/webhook", json=event(athlete, 77))
    assert response.get_json()["status"] == "ignored"


def test_expiring_token_is_refreshed_once_and_the_newest_pair_stored(app, svc, sim):
    rider, _ = connect_rider(app, sim)
    old = connection(svc, rider)
    sim.clock.advance(5.5 * 3600)
    svc.clock = sim.clock.now
    tokens = []
    barrier = threading.Barrier(4)

    def refresh():
        barrier.wait()
        tokens.append(access_token(svc, rider))

    threads = [threading.Thread(target=refresh) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    new = connection(svc, rider)
    assert sim.requests["POST /oauth/token"] == 1
    assert len(set(tokens)) == 1
    assert new.refresh_token != old.refresh_token and new.expires_at > old.expires_at
    assert tokens[0] == svc.cipher.decrypt(new.access_token)


def test_jobs_take_ids_never_tokens(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    post(client, event(athlete, sim.create_activity(athlete)))
    secrets = {svc.cipher.decrypt(connection(svc, rider).access_token), sim.client_secret}
    for name in QUEUES:
        for job in svc.queue(name).get_jobs():
            assert all(str(a) not in secrets for a in (*job.args, *job.kwargs.values()))
            assert all(isinstance(a, int) for a in job.args)


def test_a_job_run_twice_leaves_one_row(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete)
    with services.bind(svc):
        fetch.sync_activity(athlete, activity)
        fetch.sync_activity(athlete, activity)
    with svc.engine.connect() as conn:
        assert [r.id for r in models.rider_activities(conn, rider)] == [activity]


def test_failed_fetch_is_retried_then_marks_the_event_failed(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete)
    sim.faults.error_rate = 1.0
    post(client, event(athlete, activity))
    for _ in range(4):
        run_jobs(app, due_too=True)
    assert statuses(svc) == ["failed"]
    assert sim.requests_by_activity[activity] == 4
    # A failed job does not block later events for the same activity.
    sim.faults.error_rate = 0.0
    assert post(client, event(athlete, activity, "update", updates={"title": "x"})) == "queued"
    run_jobs(app)
    assert activity_row(svc, activity) is not None


def test_worker_runs_all_queued_work(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    for _ in range(5):
        post(client, event(athlete, sim.create_activity(athlete)))
    with services.bind(svc):
        worker = SimpleWorker([svc.queue(n) for n in QUEUES], connection=svc.redis)
        worker.work(burst=True)
    assert statuses(svc) == ["done"] * 5


def test_inline_mode_runs_jobs_in_process_without_a_worker(database_url, sim):
    from conftest import make_app

    app = make_app(database_url, sim, REDIS_URL=None, INLINE_WORKER=True)
    svc = app.extensions["strava_sync"]
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, name="Inline")
    try:
        assert post(app.test_client(), event(athlete, activity)) == "queued"
        assert svc.runner is not None and svc.runner.wait_idle(timeout=30)
    finally:
        svc.runner.stop()
    assert activity_row(svc, activity).name == "Inline"
    assert statuses(svc) == ["done"]
