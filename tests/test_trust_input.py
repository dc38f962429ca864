"""Bad input is a 4xx naming the problem, never a 5xx; junk is stored capped."""

import json

import pytest
import requests
import sqlalchemy as sa
from conftest import connect_rider, event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models
from webhook import MAX_BODY, BadEvent, parse_event

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def stored_events(svc):
    with svc.engine.connect() as conn:
        return conn.execute(sa.select(models.webhook_event).order_by("id")).all()


def post_raw(client, body: bytes, **kw):
    return client.post(
        "/api/strava/webhook", data=body, headers={"Content-Type": "application/json"}, **kw
    )


def assert_genuine_event_stored(app, client, svc, sim):
    _, athlete = connect_rider(app, sim, name=("After", "Fuzz"))
    before = len(stored_events(svc))
    answer = client.post("/api/strava/webhook", json=event(athlete, 4242))
    assert answer.status_code == 200
    assert answer.json["status"] == "queued"
    assert len(stored_events(svc)) == before + 1


@pytest.mark.parametrize("field", ["object_id", "owner_id", "subscription_id", "event_time"])
def test_attack_id_beyond_64_bits_is_a_400_not_a_5xx(app, client, svc, sim, field):
    body = {**event(134815, 1360128428), field: 2**63}
    answer = client.post("/api/strava/webhook", json=body)
    assert answer.status_code == 400
    assert "ids must fit a signed 64-bit integer" in answer.json["error"]
    assert stored_events(svc) == []
    assert_genuine_event_stored(app, client, svc, sim)


def test_largest_signed_64_bit_id_is_accepted():
    assert parse_event(event(2**63 - 1, 2**63 - 1)).object_id == 2**63 - 1


@pytest.mark.parametrize(
    "raw",
    [
        b'{"object_type": "activ\\u0000ity"}',
        b'{"object_type": "\\ud800"}',
        b'{"updates": {"title": "a\\u0000b"}}',
        b'{"updates": {"\\udfff": "x"}}',
    ],
    ids=["nul-in-field", "lone-surrogate", "nul-in-updates", "surrogate-key"],
)
def test_attack_unstorable_strings_are_a_400_not_a_5xx(app, client, svc, sim, raw):
    base = json.dumps(event(134815, 99, updates={}))[:-1]  # drop the closing brace
    body = base.encode() + b", " + raw[1:-1] + b"}"
    answer = post_raw(client, body)
    assert answer.status_code == 400
    assert "NUL bytes or lone surrogates" in answer.json["error"]
    assert stored_events(svc) == []
    assert_genuine_event_stored(app, client, svc, sim)


@pytest.mark.parametrize("depth", [20, 5000])
def test_attack_deeply_nested_json_is_a_400_not_a_5xx(app, client, svc, sim, depth):
    nested = "[" * depth + "]" * depth
    body = json.dumps(event(134815, 99))[:-1] + ', "updates": {"x": ' + nested + "}}"
    answer = post_raw(client, body.encode())
    assert answer.status_code == 400
    assert "nested" in answer.json["error"]
    assert_genuine_event_stored(app, client, svc, sim)


def post_chunked(live, body: bytes):
    """POST with Transfer-Encoding: chunked (no Content-Length) to the app served on loopback."""
    pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
    headers = {"Content-Type": "application/json"}
    return requests.post(live.url + "/api/strava/webhook", data=pieces, headers=headers, timeout=10)


def test_attack_chunked_body_over_16_kib_is_a_413(live, svc):
    body = json.dumps(event(134815, 99, updates={"title": "x" * MAX_BODY})).encode()
    answer = post_chunked(live, body)
    assert answer.request.headers.get("Transfer-Encoding") == "chunked"
    assert answer.status_code == 413
    assert stored_events(svc) == []


def test_chunked_body_under_the_limit_is_read_whole(app, live, svc, sim):
    _, athlete = connect_rider(app, sim)
    body = json.dumps(event(athlete, 99, updates={"title": "x" * 10_000})).encode()
    answer = post_chunked(live, body)
    assert answer.status_code == 200
    assert len(stored_events(svc)) == 1


def test_attack_junk_event_is_stored_capped_but_its_identity_stays_exact(client, svc):
    junk = "y" * 5000
    body = event(134815, 99, object_type=junk, updates={"junk": "z" * 9000})
    assert client.post("/api/strava/webhook", json=body).json["status"] == "ignored"
    (row,) = stored_events(svc)
    assert row.updates == "{}"  # an athlete we do not hold: junk keeps no `updates` at all
    assert len(row.error) <= 500
    assert len(row.object_type) <= 100
    other = event(134815, 99, object_type=junk, updates={"junk": "z" * 8999 + "q"})
    assert client.post("/api/strava/webhook", json=other).json["status"] == "ignored"
    assert client.post("/api/strava/webhook", json=body).json["status"] == "duplicate"
    assert len(stored_events(svc)) == 2


def test_unhandled_event_of_a_connected_athlete_keeps_its_updates_capped(app, client, svc, sim):
    _, athlete = connect_rider(app, sim)
    body = event(athlete, 99, object_type="y" * 5000, updates={"junk": "z" * 9000})
    assert client.post("/api/strava/webhook", json=body).json["status"] == "ignored"
    (row,) = stored_events(svc)
    assert len(row.updates) <= 2048 and row.updates.endswith("[truncated]")
    assert len(row.object_type) <= 100


# -- fuzzing -----------------------------------------------------------------------------------

leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
maybe_id = st.integers(min_value=-(2**70), max_value=2**70) | json_values
event_like = st.fixed_dictionaries(
    {},
    optional={
        "object_type": st.sampled_from(["activity", "athlete"]) | st.text(max_size=30),
        "aspect_type": st.sampled_from(["create", "update", "delete"]) | st.text(max_size=30),
        "object_id": maybe_id,
        "owner_id": maybe_id,
        "subscription_id": maybe_id,
        "event_time": maybe_id,
        "updates": st.dictionaries(st.text(max_size=10), json_values, max_size=4) | json_values,
    },
)


@FUZZ
@given(payload=event_like | json_values)
def test_fuzz_parse_event_returns_an_event_or_raises_bad_event(payload):
    try:
        parsed = parse_event(payload)
    except BadEvent:
        return
    assert 0 <= parsed.object_id < 2**63 and 0 <= parsed.owner_id < 2**63


@FUZZ
@given(payload=event_like)
def test_fuzz_endpoint_answers_only_200_400_403_413(app, client, svc, payload):
    body = json.dumps(payload, allow_nan=True).encode()
    answer = post_raw(client, body)
    assert answer.status_code in (200, 400, 403, 413), answer.get_data(as_text=True)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_fuzz_endpoint_with_raw_bytes_answers_only_4xx(app, client, svc, raw):
    assert post_raw(client, raw).status_code in (400, 413)


def test_genuine_event_is_stored_after_the_fuzzing(app, client, svc, sim):
    post_raw(client, b'{"object_id": 99999999999999999999999, "owner_id": "\\ud800"}')
    assert_genuine_event_stored(app, client, svc, sim)
