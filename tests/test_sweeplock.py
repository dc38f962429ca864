"""One sweep at a time, and full sweeps from cron no more often than the minimum interval."""

import threading
from datetime import timedelta

from conftest import CRON_SECRET, connect_rider, run_jobs

import models
from jobs import sweep

AUTH = {"Authorization": f"Bearer {CRON_SECRET}"}
LIST = "GET /athlete/activities"


def cron(client, **body):
    response = client.post("/api/cron/reconcile", headers=AUTH, json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_concurrent_cron_calls_plan_each_rider_once(app, client, svc, sim):
    for i in range(5):
        connect_rider(app, sim, name=("R", str(i)))
    answers, barrier = [], threading.Barrier(2)

    def call():
        barrier.wait()
        answers.append(cron(app.test_client()))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["planned"] for a in answers) == [0, 5]
    refused = next(a for a in answers if a["planned"] == 0)
    planned = next(a for a in answers if a["planned"] == 5)
    assert refused["already_running"] is True and refused["run_id"] == planned["run_id"]
    third = cron(client)
    assert (third["planned"], third["already_running"]) == (0, True)
    run_jobs(app)
    assert sim.requests[LIST] == 5


def test_cron_too_soon_after_the_last_full_sweep(app, client, svc, sim):
    connect_rider(app, sim)
    first = cron(client)
    run_jobs(app)
    again = cron(client)
    assert (again["planned"], again["too_soon"], again["run_id"]) == (0, True, first["run_id"])
    assert svc.queue("reconcile").count == 0
    with svc.engine.begin() as conn:
        earlier = svc.now() - timedelta(hours=13)
        models.update_run(conn, first["run_id"], started_at=earlier)
    assert cron(client)["planned"] == 1


def test_dry_runs_single_riders_and_people_are_not_held_to_the_interval(app, client, svc, sim):
    rider, _ = connect_rider(app, sim)
    cron(client)
    assert cron(client, dry_run=True)["planned"] == 1  # a dry run is never refused
    assert sweep.queue_sweep(svc, "command", rider_id=rider)["planned"] == 1
    assert sweep.queue_sweep(svc, "command")["already_running"] is True
    run_jobs(app)
    assert cron(client)["too_soon"] is True
    assert sweep.queue_sweep(svc, "command")["planned"] == 1  # a person means it


def test_a_stuck_sweep_does_not_block_the_next_for_good(app, client, svc, sim):
    connect_rider(app, sim)
    stuck = cron(client)["run_id"]
    svc.redis.flushdb()  # its jobs vanished
    with svc.engine.begin() as conn:
        models.update_run(conn, stuck, started_at=svc.now() - timedelta(hours=13))
    fresh = cron(client)
    assert fresh["planned"] == 1 and fresh["run_id"] != stuck
    with svc.engine.connect() as conn:
        assert models.get_run(conn, stuck).status == "abandoned"
