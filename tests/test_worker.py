"""worker.Worker: services built before the fork, the recovery pass between jobs."""

import os
import subprocess
import threading
from datetime import timedelta

import pytest
import rq
import sqlalchemy as sa
from conftest import PYTHONPATH, REAL_REDIS, configure, connect_rider, event, stop_redis_client
from e2e_support import BIN, wait_until

import models
import services
import worker
from jobs import recovery

WEBHOOK = "/api/strava/webhook"


def statuses(svc):
    with svc.engine.connect() as conn:
        return [r.status for r in conn.execute(sa.select(models.webhook_event).order_by("id"))]


def test_maintenance_queues_events_stored_while_redis_was_down(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    working = svc.redis
    stop_redis_client(svc)
    client.post(WEBHOOK, json=event(athlete, 7))
    svc.redis.close()
    svc.redis = working
    configure(svc, inline_ok=svc.inline)  # offline, Redis is the in-process stand-in: say so
    with svc.engine.begin() as conn:
        old = svc.now() - timedelta(minutes=1)
        conn.execute(models.webhook_event.update().values(received_at=old))
    with services.bind(svc):
        rq_worker = worker.Worker([svc.queue("strava")], connection=svc.redis)
    assert rq_worker.services is svc and rq_worker.maintenance_interval == worker.RECOVERY_EVERY
    # Idle, it stops waiting for a job that often too: the pass needs no job to trigger it.
    assert rq_worker.dequeue_timeout == worker.RECOVERY_EVERY == recovery.EVERY

    rq_worker.run_maintenance_tasks()

    assert statuses(svc) == ["queued"]
    assert svc.queue("strava").count == 1


@pytest.mark.skipif(not REAL_REDIS, reason="a forked horse needs a Redis outside this process")
def test_worker_fetches_in_a_forked_horse_with_the_parents_services(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, event=False)
    client.post(WEBHOOK, json=event(athlete, activity))

    with services.bind(svc):
        worker.Worker([svc.queue("strava")], connection=svc.redis).work(burst=True)

    assert sim.requests["GET /activities/{id}"] == 1
    assert statuses(svc) == ["done"]
    with svc.engine.connect() as conn:
        assert [r.id for r in models.rider_activities(conn, 1)] == [activity]
        # The horse dropped, never closed, the parent's pooled connection: it still answers.
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def listening(svc, queue: str) -> int:
    """Workers RQ lists for a queue (what `strava status` counts with a real Redis)."""
    return len(rq.Worker.all(queue=svc.queue(queue)))


def test_attack_redis_restarting_empty_does_not_hide_a_live_worker(app, svc):
    configure(svc, inline_ok=svc.inline)  # offline, Redis is the in-process stand-in: say so
    with services.bind(svc):
        rq_worker = worker.Worker(
            [svc.queue("strava"), svc.queue("reconcile")], connection=svc.redis
        )
    rq_worker.register_birth()
    assert listening(svc, "strava") == 1

    svc.redis.flushdb()  # Redis restarted without its data; the worker lives on
    rq_worker.heartbeat()  # RQ's heartbeat alone brings back only a fragment of the worker's key
    assert listening(svc, "strava") == 0

    rq_worker.run_maintenance_tasks()

    assert [listening(svc, q) for q in ("strava", "reconcile")] == [1, 1]
    rq_worker.run_maintenance_tasks()  # registered already: nothing changes
    assert listening(svc, "strava") == 1
    rq_worker.register_death()


def test_a_worker_stops_at_once_when_its_pubsub_thread_saw_the_unsubscribe_first(app, svc):
    """A stopping worker does not wait out its pubsub thread's 60 s nap (redis-py 8.2 with RQ 2)."""
    configure(svc, inline_ok=svc.inline)  # offline, Redis is the in-process stand-in: say so
    with services.bind(svc):
        rq_worker = worker.Worker([svc.queue("strava")], connection=svc.redis)
    rq_worker.subscribe()
    wait_until(lambda: rq_worker.pubsub.subscribed, timeout=10, what="the subscription")
    # The race RQ's teardown can lose: the pubsub thread reads the unsubscribe answer before the
    # worker stops it, and goes back to waiting up to 60 s for a subscription that never comes.
    rq_worker.pubsub.unsubscribe()
    wait_until(lambda: not rq_worker.pubsub.subscribed, timeout=10, what="the unsubscribe")
    stopped = threading.Event()
    threading.Thread(target=lambda: (rq_worker.unsubscribe(), stopped.set()), daemon=True).start()
    # RQ bounds its wait for the thread to 1 s; a dependency that waits it out would take 60 s.
    assert stopped.wait(timeout=20), "the worker waited out its pubsub thread"


@pytest.mark.skipif(not REAL_REDIS, reason="a forked horse needs a Redis outside this process")
def test_a_worker_prints_one_line_per_job_and_no_traceback_for_strava_refusing(
    app, client, svc, sim, capfd
):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete, event=False)
    client.post(WEBHOOK, json=event(athlete, activity))
    with services.bind(svc):
        worker.Worker([svc.queue("strava")], connection=svc.redis).work(burst=True)
        assert capfd.readouterr().err.endswith(
            f" activity {activity} of athlete {athlete}: created\n"
        )
        sim.inactive = True  # every call now fails: the outside world, not a bug
        client.post(WEBHOOK, json=event(athlete, activity, aspect="update"))
        worker.Worker([svc.queue("strava")], connection=svc.redis).work(burst=True)
    err = capfd.readouterr().err
    assert f"activity {activity} of athlete {athlete}: failed (" in err
    assert "Traceback" not in err


def test_a_worker_with_a_bad_setting_says_it_in_one_sentence(tmp_path):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": PYTHONPATH, "HOME": str(tmp_path)}
    env.update(TOKEN_ENCRYPTION_KEY="not-a-key", DATABASE_URL=f"sqlite:///{tmp_path}/x.sqlite")
    url = REAL_REDIS or "redis://127.0.0.1:6379/6"
    result = subprocess.run(
        [str(BIN / "rq"), "worker", "-w", "worker.Worker", "--burst", "--url", url, "strava"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == worker.CONFIG_ERROR_EXIT
    assert result.stderr.strip().splitlines() == [
        "Error: TOKEN_ENCRYPTION_KEY is not a Fernet key: make one with python -c 'from "
        "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
    ]
