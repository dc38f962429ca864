"""The sweep versus events: a slow list answer never undoes what an event's fetch just stored."""

import threading

import flask
import pytest
from conftest import connect_rider, event, make_app, run_jobs

import models
import reconcile
import services
from strava_client import parse_activity
from strava_sim import StravaSim


class SlowList:
    """An after_request hook for the sim: the list answer, computed, waits before it is sent."""

    def __init__(self):
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, response):
        if flask.request.endpoint == "_list_view" and not self.reached.is_set():
            self.reached.set()
            self.release.wait(timeout=30)
        return response


@pytest.fixture
def slow_sim():
    slow = SlowList()
    sim = StravaSim(seed=3)
    sim.app.after_request(slow)  # Flask takes hooks only before serving
    with sim:
        yield sim, slow


def names(svc, rider_id):
    with svc.engine.connect() as conn:
        return {r.id: r.name for r in models.rider_activities(conn, rider_id)}


def test_slow_sweep_list_keeps_a_rename_and_a_new_ride_from_events(database_url, slow_sim):
    sim, slow = slow_sim
    app = make_app(database_url, sim)
    svc, client = app.extensions["strava_sync"], app.test_client()
    # The held list answer waits for the events' jobs, however long a loaded machine takes.
    svc.client.timeout = (3.05, 300)
    rider, athlete = connect_rider(app, sim)
    ride = sim.create_activity(athlete, name="Before", event=False)
    with svc.engine.begin() as conn:
        models.upsert_activity(
            conn, rider, parse_activity(sim.activities(athlete)[0]), now=svc.now()
        )

    repairs = []

    def sweep_rider():
        with services.bind(svc):
            repairs.append(reconcile.repair_rider(svc, rider))

    sweeper = threading.Thread(target=sweep_rider)
    sweeper.start()
    try:
        assert slow.reached.wait(timeout=30), "the sweep never listed"
        # Strava answered the list with the old state; before the answer arrives the rider
        # renames the ride and records a new one, and both events are fetched and stored.
        sim.update_activity(ride, name="After", event=False)
        new = sim.create_activity(athlete, name="New", event=False)
        for body in (
            event(athlete, ride, "update", updates={"title": "After"}),
            event(athlete, new, "create"),
        ):
            assert client.post("/api/strava/webhook", json=body).get_json()["status"] == "queued"
        run_jobs(app)
        assert names(svc, rider) == {ride: "After", new: "New"}
    finally:
        slow.release.set()
        sweeper.join(timeout=30)
    (repair,) = repairs
    assert repair.changes.ids() == []  # the late list answer touched nothing the events stored
    assert names(svc, rider) == {ride: "After", new: "New"}
    with svc.engine.connect() as conn:
        assert {e.status for e in models.open_events(conn, "activity", ride)} == set()
