"""Proof before purge: only Strava refusing an unexpired access token deletes a rider's data."""

import pytest
import requests
import sqlalchemy as sa
from conftest import connect_rider, event, make_app, run_jobs
from sqlalchemy.exc import OperationalError

import models
from jobs.status import collect_status
from jobs.status_text import format_status
from strava_client import tokens
from strava_client.tokens import CredentialsRefused, ReconnectNeeded, access_token

LIST = "GET /athlete/activities"
DEAUTH = {"authorized": "false"}


def post(client, body):
    response = client.post("/api/strava/webhook", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["status"]


def connection(svc, rider_id):
    with svc.engine.connect() as conn:
        return models.get_connection(conn, rider_id)


def activity_count(svc, rider_id):
    with svc.engine.connect() as conn:
        return len(models.rider_activities(conn, rider_id))


def event_rows(svc):
    with svc.engine.connect() as conn:
        table = models.webhook_event
        return conn.execute(sa.select(table).order_by(table.c.id)).all()


def rider_with_a_ride(app, client, sim):
    rider, athlete = connect_rider(app, sim)
    post(client, event(athlete, sim.create_activity(athlete)))
    run_jobs(app)
    return rider, athlete


def expire_access_token(svc, sim):
    """Let the stored access token reach its last hour, so the next use refreshes it."""
    sim.clock.advance(5.5 * 3600)
    svc.clock = sim.clock.now


def lose_a_rotation(svc, sim, rider):
    """Strava rotates the pair but its answer never reaches us (read timeout)."""
    refresh = svc.cipher.decrypt(connection(svc, rider).refresh_token)
    data = {
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "grant_type": "refresh_token",
        "refresh_token": refresh,
    }
    assert requests.post(sim.oauth_url + "/token", data=data, timeout=5).status_code == 200


def test_lost_rotation_marks_needs_reconnect_and_keeps_the_data(app, client, svc, sim):
    rider, _ = rider_with_a_ride(app, client, sim)
    expire_access_token(svc, sim)
    lose_a_rotation(svc, sim, rider)
    with pytest.raises(ReconnectNeeded):
        access_token(svc, rider)
    row = connection(svc, rider)
    assert row.needs_reconnect_since is not None and row.deauthorized_at is None
    assert row.refresh_token is not None and activity_count(svc, rider) == 1
    assert any("1 needs reconnect" in line for line in format_status(collect_status(svc)))


def test_deauthorization_after_a_lost_rotation_deletes_nothing(app, client, svc, sim):
    rider, athlete = rider_with_a_ride(app, client, sim)
    expire_access_token(svc, sim)
    sim.clock.advance(3600)  # the stored access token has expired: no probe without a refresh
    lose_a_rotation(svc, sim, rider)
    assert post(client, event(athlete, athlete, "update", "athlete", DEAUTH)) == "queued"
    run_jobs(app)
    row = connection(svc, rider)
    assert row.deauthorized_at is None and activity_count(svc, rider) == 1
    assert row.needs_reconnect_since is not None
    last = event_rows(svc)[-1]
    assert last.status == "ignored" and "not confirmed" in last.error


def test_revocation_probe_uses_the_stored_token_without_refreshing(app, client, svc, sim):
    rider, athlete = rider_with_a_ride(app, client, sim)
    sim.revoke(athlete, event=False)
    post(client, event(athlete, athlete, "update", "athlete", DEAUTH))
    run_jobs(app)
    assert sim.requests["POST /oauth/token"] == 0
    assert connection(svc, rider).deauthorized_at is not None
    assert activity_count(svc, rider) == 0


def test_wrong_client_secret_is_a_configuration_error_not_a_revocation(database_url, sim):
    app = make_app(database_url, sim, STRAVA_CLIENT_SECRET="not-the-secret")
    svc, client = app.extensions["strava_sync"], app.test_client()
    riders = [connect_rider(app, sim, name=("R", str(i))) for i in range(3)]
    for _, athlete in riders:
        post(client, event(athlete, sim.create_activity(athlete)))
    run_jobs(app)
    expire_access_token(svc, sim)
    for _, athlete in riders:  # every rider's deauthorization, forged, arrives too
        post(client, event(athlete, athlete, "update", "athlete", DEAUTH))
    client.post("/api/cron/reconcile", headers={"Authorization": "Bearer test-cron-secret"})
    run_jobs(app)
    for rider, _ in riders:
        row = connection(svc, rider)
        assert (row.deauthorized_at, row.needs_reconnect_since) == (None, None)
        assert activity_count(svc, rider) == 1
    with svc.engine.connect() as conn:
        assert models.get_setting(conn, tokens.CREDENTIALS_REFUSED) is not None
    with pytest.raises(CredentialsRefused):
        access_token(svc, riders[0][0])
    assert "refused this application's credentials" in format_status(collect_status(svc))[0]


def test_pair_issued_while_the_database_is_down_is_kept_and_stored_later(
    app, svc, sim, monkeypatch, caplog
):
    rider, _ = connect_rider(app, sim)
    expire_access_token(svc, sim)
    real_store = models.store_tokens

    def database_drops(conn, rider_id, pair):
        raise OperationalError("UPDATE strava_connection", {}, Exception("connection lost"))

    monkeypatch.setattr(models, "store_tokens", database_drops)
    with pytest.raises(OperationalError):
        access_token(svc, rider)
    assert "storing it failed" in caplog.text
    issued = [r.getMessage() for r in caplog.records]
    assert not any(svc.cipher.decrypt(connection(svc, rider).access_token) in m for m in issued)
    monkeypatch.setattr(models, "store_tokens", real_store)
    token = access_token(svc, rider)  # the database is back: the kept pair is stored first
    row = connection(svc, rider)
    assert svc.cipher.decrypt(row.access_token) == token
    assert row.needs_reconnect_since is None
    assert sim.requests["POST /oauth/token"] == 1  # no second refresh was needed
    assert not any(token in r.getMessage() for r in caplog.records)


def test_rider_needing_reconnect_is_not_synced_or_swept(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.mark_needs_reconnect(conn, rider, now=svc.now())
    post(client, event(athlete, sim.create_activity(athlete)))
    run_jobs(app)
    assert event_rows(svc)[-1].status == "ignored"
    assert sim.requests["GET /activities/{id}"] == 0
    body = client.post("/api/cron/reconcile", headers={"Authorization": "Bearer test-cron-secret"})
    assert body.get_json()["planned"] == 0


def test_reconnecting_clears_needs_reconnect(app, svc, sim):
    rider, athlete = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.mark_needs_reconnect(conn, rider, now=svc.now())
        stored = svc.cipher.encrypt_pair(sim.grant(athlete))
        models.save_connection(
            conn, rider, athlete, stored, "read,activity:read_all", now=svc.now()
        )
    assert connection(svc, rider).needs_reconnect_since is None


def test_forged_deauthorizations_in_bulk_cost_one_check(app, client, svc, sim):
    rider, athlete = rider_with_a_ride(app, client, sim)
    for k in range(25):
        body = event(athlete, athlete, "update", "athlete", DEAUTH, event_time=1764316800 + k)
        assert post(client, body) == "queued"
    run_jobs(app)
    assert sim.requests[LIST] == 1
    assert {r.status for r in event_rows(svc)[1:]} == {"ignored"}
    assert connection(svc, rider).deauthorized_at is None
