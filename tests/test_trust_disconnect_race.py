"""Disconnect versus a read in flight: nothing Strava answered is written back for a rider who left.

Every write that follows a Strava read re-checks the connection under the row lock that
`models.deauthorize` takes (issue 19, item 3), and the one list-diff-apply path handles a
connection that vanished before the job ran in each of its four callers (issue 18, item 7).
"""

from __future__ import annotations

import threading

import flask
import pytest
import sqlalchemy as sa
from conftest import REAL_DATABASE, connect_rider, event, make_app
from e2e_support import wait_until

import models
import services
from jobs import backfill, catchup, fetch, history, sweep
from strava_client import parse_activity
from strava_sim import StravaSim
from sync import disconnect

LIST = "GET /athlete/activities"
DETAIL = "GET /activities/{id}"


class DisconnectMidRequest:
    """A sim hook: the first answer to `endpoint`, computed but not yet sent, waits for `action`."""

    def __init__(self):
        self.endpoint: str | None = None
        self.action = None
        self.results: list = []

    def __call__(self, response):
        if flask.request.endpoint == self.endpoint and not self.results:
            self.results.append(self.action())
        return response


@pytest.fixture
def held():
    hook = DisconnectMidRequest()
    sim = StravaSim(seed=11)
    sim.app.after_request(hook)  # Flask takes hooks only before serving
    with sim:
        yield sim, hook


def rider_with_rides(database_url, sim):
    """An app and a connected rider with three rides on Strava that we do not hold yet."""
    app = make_app(database_url, sim)
    svc = app.extensions["strava_sync"]
    rider, athlete = connect_rider(app, sim)
    rides = [sim.create_activity(athlete, name=f"Ride {i}", event=False) for i in range(3)]
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider, backfill_before=None)  # a backfill still to do
    return app, svc, rider, athlete, rides


def disconnect_during(hook, endpoint, svc, rider):
    """The rider presses Disconnect while Strava's answer to `endpoint` is on its way."""
    hook.endpoint = endpoint
    hook.action = lambda: disconnect.disconnect(svc, rider)


def assert_nothing_held(svc, rider):
    with svc.engine.connect() as conn:
        assert models.rider_activities(conn, rider) == []
        connection = models.get_connection(conn, rider)
    assert connection.deauthorized_at is not None
    assert connection.refresh_token is None
    assert (connection.eddington_number_km, connection.eddington_number_miles) == (None, None)
    assert connection.last_reconciled_at is None
    assert connection.backfill_before is None  # no cursor left: a reconnect backfills it all


def new_run(svc, kind):
    with svc.engine.begin() as conn:
        return models.create_run(conn, kind, "test", now=svc.now())


def run_error(svc, run_id):
    with svc.engine.connect() as conn:
        return models.get_run(conn, run_id).error


# -- (a) a list request in flight ------------------------------------------------------------------
# Each caller of the one list-diff-apply path runs as a worker runs it and says what it did.


def _sweep(svc, rider, athlete):
    run_id = new_run(svc, "reconcile")
    assert sweep.reconcile_rider(rider, run_id)["activities_created"] == 0
    return run_id


def _backfill(svc, rider, athlete):
    run_id = new_run(svc, "backfill")
    assert backfill.backfill_rider(rider, run_id) == "done"
    return run_id


def _verify(svc, rider, athlete):
    run_id = new_run(svc, "verify")
    assert history.verify_history(rider, run_id) == "verified"
    return run_id


def _catch_up(svc, rider, athlete):
    assert catchup.catch_up_athlete(athlete) == "ignored: athlete not connected"
    return None


LIST_CALLERS = pytest.mark.parametrize(
    "caller",
    [_sweep, _backfill, _verify, _catch_up],
    ids=["sweep repair", "backfill", "history check", "catch-up"],
)


@LIST_CALLERS
def test_disconnect_while_list_is_in_flight_writes_nothing(database_url, held, caller):
    sim, hook = held
    _, svc, rider, athlete, _ = rider_with_rides(database_url, sim)
    disconnect_during(hook, "_list_view", svc, rider)
    with services.bind(svc):
        run_id = caller(svc, rider, athlete)
    # The purge ran mid-request, revoking at Strava, before anything of the rider's was written.
    assert hook.results == [disconnect.Disconnected(deleted=0, revoked=True)]
    assert sim.requests[LIST] == 1
    assert_nothing_held(svc, rider)
    if run_id is not None:
        assert run_error(svc, run_id) is None


def test_connection_handed_to_another_athlete_mid_list_gets_nothing_of_the_first(
    database_url, held
):
    sim, hook = held
    _, svc, rider, _, _ = rider_with_rides(database_url, sim)
    other = sim.add_athlete("Other", "Athlete")
    tokens = sim.grant(other)

    def relink():
        with svc.engine.begin() as conn:
            models.save_connection(
                conn, rider, other, tokens, "read,activity:read_all", now=svc.now()
            )

    hook.endpoint, hook.action = "_list_view", relink
    run_id = new_run(svc, "backfill")
    with services.bind(svc):
        assert backfill.backfill_rider(rider, run_id) == "done"
    with svc.engine.connect() as conn:
        assert models.rider_activities(conn, rider) == []  # the first athlete's rides stay out
        assert models.get_connection(conn, rider).eddington_number_km is None


# -- (b) a single fetch in flight ------------------------------------------------------------------


def test_disconnect_while_single_fetch_is_in_flight_writes_nothing(database_url, held):
    sim, hook = held
    app, svc, rider, athlete, rides = rider_with_rides(database_url, sim)
    client = app.test_client()
    answer = client.post("/api/strava/webhook", json=event(athlete, rides[0], "create"))
    assert answer.get_json()["status"] == "queued"
    disconnect_during(hook, "_detail_view", svc, rider)
    with services.bind(svc):
        assert fetch.sync_activity(athlete, rides[0]) == "ignored: athlete not connected"
    assert hook.results == [disconnect.Disconnected(deleted=0, revoked=True)]
    assert sim.requests[DETAIL] == 1
    assert_nothing_held(svc, rider)
    table = models.webhook_event
    with svc.engine.connect() as conn:
        statuses = conn.execute(sa.select(table.c.status, table.c.error)).all()
    assert statuses == [("ignored", f"athlete {athlete} not connected")]


# -- the lock itself (PostgreSQL; SQLite serialises every writer anyway) ---------------------------


def waiting_for_a_lock(svc) -> bool:
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with svc.engine.connect() as conn:
        return conn.execute(query).scalar() > 0


@pytest.mark.skipif(not REAL_DATABASE, reason="row locks: PostgreSQL only")
def test_purge_waits_for_a_write_in_flight_and_removes_it(database_url, sim):
    app = make_app(database_url, sim)
    svc = app.extensions["strava_sync"]
    rider, athlete = connect_rider(app, sim)
    sim.create_activity(athlete, event=False)
    values = parse_activity(sim.activities(athlete)[0])
    purged = []

    def purge():
        with svc.engine.begin() as conn:
            purged.append(models.deauthorize(conn, rider, now=svc.now()))

    purger = threading.Thread(target=purge)
    with svc.engine.begin() as conn:
        assert models.lock_live_connection(conn, rider, athlete) is not None
        models.upsert_activity(conn, rider, values, now=svc.now())
        purger.start()
        wait_until(lambda: waiting_for_a_lock(svc), timeout=30, what="the purge to wait")
    purger.join(timeout=30)
    assert purged == [1]  # the purge ran after the write and removed what it wrote
    with svc.engine.connect() as conn:
        assert models.rider_activities(conn, rider) == []


def test_token_pair_issued_during_a_disconnect_is_not_stored(database_url, sim):
    app = make_app(database_url, sim)
    svc = app.extensions["strava_sync"]
    rider, _ = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.deauthorize(conn, rider, now=svc.now())
        pair = {"access_token": "late-access", "refresh_token": "late-refresh", "expires_at": 1}
        models.store_tokens(conn, rider, pair)
        connection = models.get_connection(conn, rider)
    assert (connection.access_token, connection.refresh_token) == (None, None)


# -- issue 18 item 7: each caller of the one path, for a connection gone before it ran ------------


def gone(svc, rider, how):
    with svc.engine.begin() as conn:
        if how == "disconnected":
            models.deauthorize(conn, rider, now=svc.now())
        else:  # the row itself is gone
            table = models.strava_connection
            conn.execute(table.delete().where(table.c.rider_id == rider))


@pytest.mark.parametrize("how", ["disconnected", "row deleted"])
@LIST_CALLERS
def test_each_list_caller_reads_nothing_for_a_vanished_connection(database_url, sim, caller, how):
    _, svc, rider, athlete, _ = rider_with_rides(database_url, sim)
    gone(svc, rider, how)
    sim.reset_counters()
    with services.bind(svc):
        run_id = caller(svc, rider, athlete)
    assert sim.requests[LIST] == 0
    if run_id is not None:
        assert run_error(svc, run_id) is None  # nothing wrong: the rider simply left
    with svc.engine.connect() as conn:
        assert models.rider_activities(conn, rider) == []
