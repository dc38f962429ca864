"""Several waiting fetches of one athlete are served by one list of their recent activities."""

from __future__ import annotations

from conftest import connect_rider, event, run_jobs, scheduled_jobs

import models
from services import QUEUES

DETAIL, LIST = "GET /activities/{id}", "GET /athlete/activities"


def stored(svc, rider_id) -> set[int]:
    with svc.engine.connect() as conn:
        return {a.id for a in models.rider_activities(conn, rider_id)}


def statuses(svc) -> set[str]:
    with svc.engine.connect() as conn:
        return {e.status for e in conn.execute(models.webhook_event.select())}


def test_a_burst_of_one_athletes_uploads_costs_one_list(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    uploads = [sim.create_activity(athlete, event=False) for _ in range(5)]
    for activity in uploads:
        client.post("/api/strava/webhook", json=event(athlete, activity))
    run_jobs(app)
    assert (sim.requests[LIST], sim.requests[DETAIL]) == (1, 0)
    assert stored(svc, rider) == set(uploads) and statuses(svc) == {"done"}
    assert not scheduled_jobs(app) and not any(svc.queue(n).count for n in QUEUES)


def test_an_activity_the_list_does_not_show_keeps_its_own_fetch(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    old = sim.create_activity(athlete, event=False)
    client.post("/api/strava/webhook", json=event(athlete, old))
    run_jobs(app)
    sim.delete_activity(old)
    new = sim.create_activity(athlete, event=False)
    sim.reset_counters()
    client.post("/api/strava/webhook", json=event(athlete, old, "delete"))
    client.post("/api/strava/webhook", json=event(athlete, new))
    run_jobs(app)
    # One list stored the new ride; the deleted one, not listed, was fetched (404) and removed.
    assert (sim.requests[LIST], sim.requests[DETAIL]) == (1, 1)
    assert stored(svc, rider) == {new} and statuses(svc) == {"done"}


def test_made_up_ids_in_bulk_cost_one_list_not_one_each(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    for i in range(5):  # forged creates: ids Strava never made
        client.post("/api/strava/webhook", json=event(athlete, 9_000_000_000 + i))
    run_jobs(app, due_too=True)
    assert sim.requests[LIST] == 1
