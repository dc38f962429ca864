import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import VERIFY_TOKEN, connect_rider, event, make_app, stop_redis_client

import models
from webhook import BadEvent, parse_event

EXAMPLE = {
    "aspect_type": "update",
    "event_time": 1516126040,
    "object_id": 1360128428,
    "object_type": "activity",
    "owner_id": 134815,
    "subscription_id": 120475,
    "updates": {"title": "Messy"},
}


def events_in(svc):
    with svc.engine.connect() as conn:
        return conn.execute(
            sa.select(models.webhook_event).order_by(models.webhook_event.c.id)
        ).all()


def test_parse_event_reads_stravas_documented_example():
    parsed = parse_event(EXAMPLE)
    assert (parsed.object_type, parsed.object_id, parsed.owner_id) == (
        "activity",
        1360128428,
        134815,
    )
    assert parsed.updates == {"title": "Messy"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"object_id": None}, "object_id must be a non-negative integer"),
        ({"object_id": "12"}, "object_id must be a non-negative integer"),
        ({"owner_id": True}, "owner_id must be a non-negative integer"),
        ({"event_time": -1}, "event_time must be a non-negative integer"),
        ({"subscription_id": 1.5}, "subscription_id must be a non-negative integer"),
        ({"aspect_type": ""}, "aspect_type must be a non-empty string"),
        ({"object_type": 3}, "object_type must be a non-empty string"),
        ({"updates": []}, "updates must be an object"),
    ],
)
def test_parse_event_names_the_bad_field(change, message):
    with pytest.raises(BadEvent, match=message):
        parse_event({**EXAMPLE, **change})


@pytest.mark.parametrize("field", ["object_id", "owner_id", "aspect_type", "event_time"])
def test_parse_event_rejects_missing_fields(field):
    body = {k: v for k, v in EXAMPLE.items() if k != field}
    with pytest.raises(BadEvent, match=f"{field} is missing"):
        parse_event(body)


def test_parse_event_rejects_non_objects():
    with pytest.raises(BadEvent):
        parse_event([EXAMPLE])


# -- validation GET --


def test_validation_echoes_the_challenge_for_the_right_token(client):
    query = {
        "hub.mode": "subscribe",
        "hub.challenge": "15f7d1a91c1f40f8",
        "hub.verify_token": VERIFY_TOKEN,
    }
    response = client.get("/api/strava/webhook", query_string=query)
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json() == {"hub.challenge": "15f7d1a91c1f40f8"}


@pytest.mark.parametrize(
    "query",
    [
        {"hub.mode": "subscribe", "hub.challenge": "x", "hub.verify_token": "wrong"},
        {"hub.mode": "unsubscribe", "hub.challenge": "x", "hub.verify_token": VERIFY_TOKEN},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
        {"hub.mode": "subscribe", "hub.challenge": "x"},
        {},
    ],
)
def test_validation_refuses_anything_else(client, query):
    response = client.get("/api/strava/webhook", query_string=query)
    assert response.status_code == 403
    assert "error" in response.get_json()


def test_validation_refused_when_no_verify_token_is_configured(database_url, sim):
    app = make_app(database_url, sim, STRAVA_VERIFY_TOKEN=None)
    query = {"hub.mode": "subscribe", "hub.challenge": "x", "hub.verify_token": ""}
    assert app.test_client().get("/api/strava/webhook", query_string=query).status_code == 403
    query["hub.verify_token"] = "None"
    assert app.test_client().get("/api/strava/webhook", query_string=query).status_code == 403


# -- event POST --


def test_event_for_a_connected_rider_is_stored_and_queued(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    response = client.post("/api/strava/webhook", json=event(athlete, 42))
    assert response.status_code == 200
    assert response.get_json() == {"status": "queued"}
    [row] = events_in(svc)
    assert (row.object_id, row.owner_id, row.status, row.aspect_type) == (
        42,
        athlete,
        "queued",
        "create",
    )
    assert svc.queue("strava").count == 1


def test_exact_repeat_is_a_duplicate_and_stores_nothing(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    body = event(athlete, 42, "update", updates={"title": "Messy"})
    answers = [client.post("/api/strava/webhook", json=body).get_json() for _ in range(3)]
    assert answers == [{"status": "queued"}, {"status": "duplicate"}, {"status": "duplicate"}]
    assert len(events_in(svc)) == 1
    assert svc.queue("strava").count == 1


def test_different_events_for_one_activity_ride_on_the_waiting_fetch(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    bodies = [
        event(athlete, 42, "create"),
        event(athlete, 42, "update", updates={"title": "Messy"}, event_time=1764316900),
        event(athlete, 42, "update", updates={"type": "GravelRide"}, event_time=1764316901),
    ]
    answers = [client.post("/api/strava/webhook", json=b).get_json()["status"] for b in bodies]
    assert answers == ["queued", "queued", "queued"]
    assert len(events_in(svc)) == 3
    assert svc.queue("strava").count == 1


def test_event_for_unknown_owner_is_ignored(client, svc):
    response = client.post("/api/strava/webhook", json=event(999, 42))
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ignored" and "999" in body["reason"]
    [row] = events_in(svc)
    assert row.status == "ignored" and row.processed_at is not None
    assert svc.queue("strava").count == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"object_type": "club"}, "object_type 'club'"),
        ({"aspect_type": "archive"}, "aspect_type 'archive'"),
        ({"object_type": "athlete", "updates": {"name": "x"}}, "athlete events"),
    ],
)
def test_unhandled_kinds_are_stored_as_ignored(app, client, svc, sim, change, reason):
    _, athlete = connect_rider(app, sim)
    response = client.post("/api/strava/webhook", json={**event(athlete, 42), **change})
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    assert reason in response.get_json()["reason"]
    assert [r.status for r in events_in(svc)] == ["ignored"]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"not json", "application/json", "not valid JSON"),
        (b"", "application/json", "not valid JSON"),
        (b"\xff\xfe", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "JSON object"),
        (json.dumps({**EXAMPLE, "object_id": "x"}).encode(), "application/json", "object_id"),
        (json.dumps({**EXAMPLE, "owner_id": None}).encode(), "text/plain", "owner_id"),
    ],
)
def test_malformed_bodies_get_a_400_naming_the_problem(client, svc, body, content_type, message):
    response = client.post("/api/strava/webhook", data=body, content_type=content_type)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert events_in(svc) == []


def test_body_over_16_kib_is_refused_with_413(client, svc):
    body = {**EXAMPLE, "updates": {"title": "x" * 17_000}}
    response = client.post("/api/strava/webhook", json=body)
    assert response.status_code == 413
    assert "error" in response.get_json()
    assert events_in(svc) == []


def test_foreign_subscription_is_refused_once_ours_is_known(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.set_setting(conn, "subscription_id", "120475")
    svc.forget_subscription()
    foreign = client.post("/api/strava/webhook", json=event(athlete, 42, subscription_id=999))
    assert foreign.status_code == 403
    ours = client.post("/api/strava/webhook", json=event(athlete, 42, subscription_id=120475))
    assert ours.status_code == 200
    assert [r.subscription_id for r in events_in(svc)] == [120475]


def test_subscription_id_from_the_environment_is_enforced(database_url, sim):
    app = make_app(database_url, sim, STRAVA_SUBSCRIPTION_ID="555")
    response = app.test_client().post("/api/strava/webhook", json=event(1, 42, subscription_id=1))
    assert response.status_code == 403


def test_database_down_answers_5xx_so_strava_retries(database_url, sim, tmp_path):
    app = make_app(database_url, sim)
    svc = app.extensions["strava_sync"]
    svc.engine.dispose()
    svc.engine = models.make_engine(f"sqlite:///{tmp_path}/missing/dir/db.sqlite")
    response = app.test_client().post("/api/strava/webhook", json=event(1, 42))
    assert response.status_code == 503
    assert "retry" in response.get_json()["error"]


def test_redis_down_keeps_the_event_pending_then_a_worker_queues_it(app, client, svc, sim):
    import worker

    _, athlete = connect_rider(app, sim)
    working = svc.redis
    stop_redis_client(svc)
    response = client.post("/api/strava/webhook", json=event(athlete, 42))
    assert response.status_code == 200
    assert [r.status for r in events_in(svc)] == ["pending"]

    # A minute later Redis is back: the next event is queued, and a worker queues the pending one.
    svc.redis.close()
    svc.redis = working
    with svc.engine.begin() as conn:
        table = models.webhook_event
        conn.execute(table.update().values(received_at=svc.now() - timedelta(minutes=1)))
    response = client.post("/api/strava/webhook", json=event(athlete, 43))
    assert response.get_json() == {"status": "queued"}
    assert [r.status for r in events_in(svc)] == ["pending", "queued"]
    assert svc.queue("strava").count == 1
    assert worker.recover(svc) == 1
    assert [r.status for r in events_in(svc)] == ["queued", "queued"]
    assert svc.queue("strava").count == 2
    assert worker.recover(svc) == 0  # once a minute across workers
