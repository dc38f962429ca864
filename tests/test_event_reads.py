"""No event, whatever its fields, costs more than a bounded number of Strava reads (issue 19).

Each event is posted, its jobs run (scheduled ones brought forward), and then the recovery pass
runs again and again, as workers run it every 30 s for days: the reads counted are all it caused.
"""

from datetime import timedelta

import pytest
from conftest import connect_rider, event, run_jobs, scheduled_jobs

import models
from jobs import fetch, recovery
from services import QUEUES

PASSES = 10  # recovery passes after each event, a minute apart (the forged event's cost per pass)
MAX_ROUNDS = 20  # rounds of jobs an event's work may take here (retries, waits), far above need


def post(client, body):
    response = client.post("/api/strava/webhook", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def reads(sim) -> int:
    """Requests to Strava's API that read (the token endpoint is not the API)."""
    return sum(n for label, n in sim.requests.items() if label.startswith("GET "))


def work(app, svc) -> None:
    """Run the queued jobs and bring the scheduled ones forward, until none is left (bounded)."""
    for _ in range(MAX_ROUNDS):
        if not any(svc.queue(n).count for n in QUEUES) and not scheduled_jobs(app):
            return
        run_jobs(app, due_too=True)
    raise AssertionError(f"jobs still queued after {MAX_ROUNDS} rounds")


def settle(app, svc, passes: int = PASSES) -> None:
    """Run the jobs, then `passes` recovery passes a minute apart, each followed by its jobs."""
    work(app, svc)
    for minute in range(1, passes + 1):
        recovery.run_pass(svc, now=svc.now() + timedelta(minutes=minute))
        work(app, svc)


def reads_for(app, client, svc, sim, body) -> tuple[int, dict]:
    """The Strava reads one posted event causes, and the webhook's answer."""
    before = reads(sim)
    answer = post(client, body)
    settle(app, svc)
    return reads(sim) - before, answer


def test_attack_forged_athlete_event_for_another_athlete_reads_strava_never(app, client, svc, sim):
    _, victim = connect_rider(app, sim)
    forged = event(victim, victim + 1, "update", "athlete", {"authorized": "false"})

    spent, answer = reads_for(app, client, svc, sim, forged)

    assert spent == 0  # was one real-time read a recovery pass, about 2,700 a day
    assert answer["status"] == "ignored" and f"owner {victim}" in answer["reason"]


def test_attack_forged_athlete_event_stored_before_the_fix_is_closed_by_its_check(
    app, client, svc, sim
):
    _, victim = connect_rider(app, sim)
    # As an earlier release stored it: queued, its job gone (a Redis that restarted empty).
    forged = event(victim, victim + 1, "update", "athlete", {"authorized": "false"})
    with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        models.store_event(conn, forged, None, "revoke-athlete-gone", now=svc.now())
    before = reads(sim)

    settle(app, svc)

    assert reads(sim) - before == 1  # one check for its owner, which closes it
    with svc.engine.connect() as conn:
        assert models.open_events_by_owner(conn, "athlete", victim) == []


# (event shape, Strava reads it causes here): each at most fetch.MAX_READS_PER_EVENT.
SHAPES = {
    "activity create": 1,
    "activity update": 1,
    "activity delete": 1,
    "athlete deauthorization, genuine": 1,
    "athlete deauthorization, Strava still accepts the token": 1,
    "athlete update with other fields": 0,
    "athlete event about another athlete": 0,
    "activity event for an athlete not connected": 0,
    "athlete event for an athlete not connected": 0,
    "unknown object type": 0,
    "unknown activity aspect": 0,
}


def shape_body(shape: str, sim, athlete: int, leaver: int) -> dict:
    """The event of one shape; the activities exist on Strava as the shape needs."""
    deauth = {"authorized": "false"}
    if shape == "activity create":
        return event(athlete, sim.create_activity(athlete, event=False))
    if shape == "activity update":
        activity = sim.create_activity(athlete, event=False)
        return event(athlete, activity, "update", updates={"title": "Renamed"})
    if shape == "activity delete":
        return event(athlete, 10**12, "delete")
    if shape == "athlete deauthorization, genuine":
        sim.revoke(leaver, event=False)
        return event(leaver, leaver, "update", "athlete", deauth)
    other = {
        "athlete deauthorization, Strava still accepts the token": (athlete, athlete, deauth),
        "athlete update with other fields": (athlete, athlete, {"firstname": "Eve"}),
        "athlete event about another athlete": (athlete, athlete + 7, deauth),
        "athlete event for an athlete not connected": (999_999, 999_999, deauth),
    }
    if shape in other:
        owner, object_id, updates = other[shape]
        return event(owner, object_id, "update", "athlete", updates)
    if shape == "activity event for an athlete not connected":
        return event(999_999, 123)
    if shape == "unknown object type":
        return event(athlete, 5, "create", "club")
    return event(athlete, sim.create_activity(athlete, event=False), "archive")


@pytest.mark.parametrize("shape", SHAPES)
def test_each_event_shape_costs_at_most_the_stated_reads(app, client, svc, sim, shape):
    _, athlete = connect_rider(app, sim)
    _, leaver = connect_rider(app, sim, name=("Lea", "Ving"))
    body = shape_body(shape, sim, athlete, leaver)

    spent, _ = reads_for(app, client, svc, sim, body)

    assert spent == SHAPES[shape] <= fetch.MAX_READS_PER_EVENT
