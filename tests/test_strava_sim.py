"""strava_sim over real loopback HTTP: what strava-sync's tests and demo rely on it to do."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import flask
import pytest
import requests

from strava_sim import Faults, SimClock, StravaSim
from strava_sim.serve import LoopbackServer

# Frozen a minute into a 15-minute window, so no test straddles a rate-limit reset by accident.
START = 1_795_000_000 - 1_795_000_000 % 900 + 60
CLIENT = {"client_id": "4242", "client_secret": "sim-client-secret"}
TIMEOUT = 5

UNAUTHORIZED = {
    "message": "Authorization Error",
    "errors": [{"resource": "Athlete", "field": "access_token", "code": "invalid"}],
}
NOT_FOUND = {
    "message": "Record Not Found",
    "errors": [{"resource": "Activity", "field": "id", "code": "invalid"}],
}
BAD_CALLBACK = {
    "message": "Bad Request",
    "errors": [
        {
            "resource": "PushSubscription",
            "field": "callback url",
            "code": "GET to callback URL does not return 200",
        }
    ],
}


class Receiver:
    """A loopback webhook endpoint: answers the validation GET and records the events POSTed."""

    def __init__(self, echo: str = "right", statuses: tuple[int, ...] = (), on_event=None):
        self.echo = echo
        self.statuses = list(statuses)  # answers to the first POSTs; 200 after that
        self.on_event = on_event
        self.events: list[dict] = []
        self.validations: list[dict] = []
        app = flask.Flask("receiver")
        app.add_url_rule("/hook", "validate", self._validate, methods=["GET"])
        app.add_url_rule("/hook", "receive", self._receive, methods=["POST"])
        self._app = app
        self._server: LoopbackServer | None = None
        self.url = ""

    def __enter__(self) -> Receiver:
        self._server = LoopbackServer(self._app, name="receiver")
        self.url = f"{self._server.url}/hook"
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.close()

    def _validate(self):
        args = flask.request.args
        self.validations.append(dict(args))
        if self.echo == "error":
            return "nope", 500
        challenge = args["hub.challenge"] if self.echo == "right" else "something else"
        return flask.jsonify({"hub.challenge": challenge})

    def _receive(self):
        self.events.append(flask.request.get_json())
        if self.on_event:
            self.on_event(self.events[-1])
        return flask.jsonify(ok=True), self.statuses.pop(0) if self.statuses else 200


@pytest.fixture
def clock():
    return SimClock(START)


@pytest.fixture
def sim(clock):
    sim = StravaSim(clock=clock).start()
    yield sim
    sim.stop()


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


def api(sim, path, token, **params):
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(sim.api_url + path, headers=headers, params=params, timeout=TIMEOUT)


def token_call(sim, **form):
    return requests.post(sim.oauth_url + "/token", data={**CLIENT, **form}, timeout=TIMEOUT)


def authorize(sim, scope="read,activity:read_all", **overrides):
    params = {
        "client_id": "4242",
        "redirect_uri": "http://127.0.0.1:1/cb",
        "response_type": "code",
        "approval_prompt": "auto",
        "scope": scope,
        "state": "s1",
        **overrides,
    }
    return requests.get(
        sim.oauth_url + "/authorize", params=params, allow_redirects=False, timeout=TIMEOUT
    )


def subscribe(sim, callback_url, verify_token="vt"):
    form = {**CLIENT, "callback_url": callback_url, "verify_token": verify_token}
    return requests.post(sim.api_url + "/push_subscriptions", data=form, timeout=TIMEOUT)


def forge(sim, object_id, aspect_type="create", **extra):
    sim.queue_event(
        object_type="activity",
        object_id=object_id,
        aspect_type=aspect_type,
        owner_id=9,
        updates={},
        event_time=START,
        **extra,
    )


def rider_with_token(sim, scope="read,activity:read_all"):
    athlete_id = sim.add_athlete("Ada", "Lovelace")
    return athlete_id, sim.grant(athlete_id, scope)["access_token"]


# -- OAuth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ticked", "granted"),
    [
        (None, "read,activity:read_all"),
        ("read,activity:read", "read,activity:read"),
        ("read", "read"),
    ],
)
def test_authorize_redirects_with_code_state_and_granted_scope(sim, ticked, granted):
    sim.login_as(sim.add_athlete(), scope=ticked)
    response = authorize(sim)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    query = parse_qs(location.query)
    assert location.netloc == "127.0.0.1:1" and location.path == "/cb"
    assert query["state"] == ["s1"] and query["scope"] == [granted] and query["code"][0]


def test_authorize_denied_redirects_with_access_denied(sim):
    sim.login_as(sim.add_athlete(), deny=True)
    query = parse_qs(urlsplit(authorize(sim).headers["Location"]).query)
    assert query == {"state": ["s1"], "error": ["access_denied"]}


def test_authorize_rejects_wrong_client_id(sim):
    sim.login_as(sim.add_athlete())
    response = authorize(sim, client_id="999")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "client_id"


def test_token_exchanges_a_code_once(sim):
    athlete_id = sim.add_athlete("Ada", "Lovelace")
    sim.login_as(athlete_id)
    code = parse_qs(urlsplit(authorize(sim).headers["Location"]).query)["code"][0]
    first = token_call(sim, grant_type="authorization_code", code=code)
    assert first.status_code == 200
    body = first.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 6 * 3600
    assert body["expires_at"] == START + 6 * 3600
    assert body["athlete"] == {
        "id": athlete_id,
        "resource_state": 2,
        "firstname": "Ada",
        "lastname": "Lovelace",
    }
    assert api(sim, "/athlete/activities", body["access_token"]).status_code == 200
    again = token_call(sim, grant_type="authorization_code", code=code)
    assert again.status_code == 400
    assert again.json()["errors"] == [
        {"resource": "AuthorizationCode", "field": "code", "code": "invalid"}
    ]


def test_token_rejects_bad_client_credentials(sim):
    response = token_call(sim, client_secret="wrong", grant_type="refresh_token", refresh_token="x")
    assert response.status_code == 401
    assert response.json() == {
        "message": "Bad Request",
        "errors": [{"resource": "Application", "field": "client_id", "code": "invalid"}],
    }


def test_refresh_with_more_than_an_hour_left_returns_the_same_tokens(sim):
    issued = sim.grant(sim.add_athlete())
    refreshed = token_call(
        sim, grant_type="refresh_token", refresh_token=issued["refresh_token"]
    ).json()
    assert refreshed["access_token"] == issued["access_token"]
    assert refreshed["refresh_token"] == issued["refresh_token"]
    assert "athlete" not in refreshed


def test_refresh_near_expiry_rotates_and_kills_the_old_refresh_token(sim, clock):
    issued = sim.grant(sim.add_athlete())
    clock.advance(5.5 * 3600)
    response = token_call(sim, grant_type="refresh_token", refresh_token=issued["refresh_token"])
    fresh = response.json()
    assert response.status_code == 200
    assert fresh["access_token"] != issued["access_token"]
    assert fresh["refresh_token"] != issued["refresh_token"]
    assert fresh["expires_at"] == int(clock.now()) + 6 * 3600
    stale = token_call(sim, grant_type="refresh_token", refresh_token=issued["refresh_token"])
    assert stale.status_code == 400
    assert stale.json() == {
        "message": "Bad Request",
        "errors": [{"resource": "RefreshToken", "field": "refresh_token", "code": "invalid"}],
    }
    assert api(sim, "/athlete/activities", fresh["access_token"]).status_code == 200


def test_access_token_expires_after_six_hours(sim, clock):
    _, token = rider_with_token(sim)
    clock.advance(6 * 3600)
    assert api(sim, "/athlete/activities", token).json() == UNAUTHORIZED


def test_token_calls_do_not_count_against_limits(sim):
    issued = sim.grant(sim.add_athlete())
    response = token_call(sim, grant_type="refresh_token", refresh_token=issued["refresh_token"])
    assert "X-RateLimit-Usage" not in response.headers
    assert sim.requests["POST /oauth/token"] == 1
    assert sim.max_window_usage() == 0


# -- activities ----------------------------------------------------------------------------------


def test_api_accepts_tokens_only_in_the_bearer_header(sim):
    _, token = rider_with_token(sim)
    in_query = requests.get(
        sim.api_url + "/athlete/activities", params={"access_token": token}, timeout=TIMEOUT
    )
    assert in_query.status_code == 401 and in_query.json() == UNAUTHORIZED
    assert api(sim, "/athlete/activities", "not-a-token").json() == UNAUTHORIZED


def test_activity_detail_uses_strava_field_names(sim):
    athlete_id, token = rider_with_token(sim)
    activity_id = sim.create_activity(
        athlete_id,
        name="Brevet",
        sport_type="GravelRide",
        distance=200000,
        moving_time=30000,
        elapsed_time=36000,
        start_date=datetime(2026, 11, 28, 7, 0, tzinfo=UTC),
        utc_offset_hours=1,
    )
    response = api(sim, f"/activities/{activity_id}", token)
    assert response.status_code == 200
    assert activity_id >= 10_000_000_000
    assert response.json() | {"description": None} == {
        "resource_state": 3,
        "athlete": {"id": athlete_id, "resource_state": 1},
        "name": "Brevet",
        "distance": 200000.0,
        "moving_time": 30000,
        "elapsed_time": 36000,
        "total_elevation_gain": 250.0,
        "type": "Ride",
        "sport_type": "GravelRide",
        "id": activity_id,
        "start_date": "2026-11-28T07:00:00Z",
        "start_date_local": "2026-11-28T08:00:00Z",
        "timezone": "(GMT+01:00) Europe/Paris",
        "utc_offset": 3600.0,
        "private": False,
        "visibility": "everyone",
        "manual": False,
        "trainer": False,
        "commute": False,
        "description": None,
    }
    assert sim.activities(athlete_id) == [response.json()]


def test_activity_defaults_start_before_now_in_utc(sim):
    athlete_id, token = rider_with_token(sim)
    activity_id = sim.create_activity(athlete_id, moving_time=600)
    body = api(sim, f"/activities/{activity_id}", token).json()
    assert body["start_date"] == datetime.fromtimestamp(START - 600, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert body["start_date_local"] == body["start_date"]
    assert body["timezone"] == "(GMT+00:00) UTC"


def test_list_pages_newest_first_and_oldest_first_with_after(sim):
    athlete_id, token = rider_with_token(sim)
    starts = [START - day * 86400 for day in range(5, 0, -1)]
    ids = [
        sim.create_activity(athlete_id, start_date=datetime.fromtimestamp(s, UTC)) for s in starts
    ]
    first = api(sim, "/athlete/activities", token, per_page=2, page=1).json()
    second = api(sim, "/athlete/activities", token, per_page=2, page=2).json()
    assert [a["id"] for a in first + second] == ids[::-1][:4]
    assert all(a["resource_state"] == 2 for a in first)
    after = api(sim, "/athlete/activities", token, after=starts[1], before=starts[4]).json()
    assert [a["id"] for a in after] == ids[2:4]
    assert api(sim, "/athlete/activities", token, page=4, per_page=2).json() == []


def test_list_without_read_all_hides_private_after_paging(sim):
    athlete_id, token = rider_with_token(sim, scope="read,activity:read")
    starts = [START - hours * 3600 for hours in (4, 3, 2, 1)]
    ids = [
        sim.create_activity(athlete_id, start_date=datetime.fromtimestamp(s, UTC), private=(i == 2))
        for i, s in enumerate(starts)
    ]
    page1 = api(sim, "/athlete/activities", token, per_page=2, page=1).json()
    page2 = api(sim, "/athlete/activities", token, per_page=2, page=2).json()
    assert [a["id"] for a in page1] == [ids[3]]  # short page, yet not the last
    assert [a["id"] for a in page2] == [ids[1], ids[0]]
    assert api(sim, f"/activities/{ids[2]}", token).json() == NOT_FOUND
    assert sim.activities(athlete_id)[1]["visibility"] == "only_me"


def test_read_scope_alone_cannot_read_activities(sim):
    _, token = rider_with_token(sim, scope="read")
    assert api(sim, "/athlete/activities", token).status_code == 401


def test_detail_404_for_unknown_or_another_athletes_activity(sim):
    _, token = rider_with_token(sim)
    other = sim.create_activity(sim.add_athlete())
    for path in (f"/activities/{other}", "/activities/1", "/activities/abc"):
        response = api(sim, path, token)
        assert response.status_code == 404 and response.json() == NOT_FOUND


def test_detail_404s_briefly_after_create(clock):
    with StravaSim(clock=clock, faults=Faults(not_found_after_create=60)) as sim:
        athlete_id, token = rider_with_token(sim)
        activity_id = sim.create_activity(athlete_id)
        assert api(sim, f"/activities/{activity_id}", token).status_code == 404
        clock.advance(61)
        assert api(sim, f"/activities/{activity_id}", token).status_code == 200
        assert sim.requests_by_activity[activity_id] == 2


# -- rate limits ---------------------------------------------------------------------------------


def test_rate_limit_headers_then_429_then_reset_next_window(clock):
    with StravaSim(clock=clock, read_limits=(5, 50)) as sim:
        _, token = rider_with_token(sim)
        usages = [
            api(sim, "/athlete/activities", token).headers["X-ReadRateLimit-Usage"]
            for _ in range(5)
        ]
        assert usages == ["1,1", "2,2", "3,3", "4,4", "5,5"]
        refused = api(sim, "/athlete/activities", token)
        assert refused.status_code == 429
        assert refused.json() == {
            "message": "Rate Limit Exceeded",
            "errors": [{"resource": "Application", "field": "rate limit", "code": "exceeded"}],
        }
        assert refused.headers["X-RateLimit-Limit"] == "200,2000"
        assert refused.headers["X-ReadRateLimit-Limit"] == "5,50"
        assert refused.headers["X-RateLimit-Usage"] == "6,6"
        assert sim.rate_limited == 1
        clock.advance(15 * 60)
        again = api(sim, "/athlete/activities", token)
        assert again.status_code == 200 and again.headers["X-ReadRateLimit-Usage"] == "1,7"
        assert list(sim.window_usage().values()) == [6, 1]
        assert sim.max_window_usage() == 6


def test_daily_limit_outlasts_the_15_minute_window(clock):
    with StravaSim(clock=clock, limits=(200, 3)) as sim:
        _, token = rider_with_token(sim)
        for _ in range(3):
            api(sim, "/athlete/activities", token)
        clock.advance(15 * 60)
        refused = api(sim, "/athlete/activities", token)
        assert refused.status_code == 429 and refused.headers["X-RateLimit-Usage"] == "1,4"
        clock.advance(24 * 3600)
        assert api(sim, "/athlete/activities", token).status_code == 401  # token expired by now


def test_errors_count_against_limits_and_carry_headers(sim):
    response = api(sim, "/activities/1", "bad-token")
    assert response.status_code == 401
    assert response.headers["X-ReadRateLimit-Usage"] == "1,1"
    assert sim.max_window_usage() == 1


def test_error_rate_answers_500_after_counting(clock):
    with StravaSim(clock=clock, faults=Faults(error_rate=1.0)) as sim:
        _, token = rider_with_token(sim)
        response = api(sim, "/athlete/activities", token)
        assert response.status_code == 500
        assert response.json() == {"message": "Internal Server Error"}
        assert response.headers["X-RateLimit-Usage"] == "1,1"


def test_counters_by_endpoint_and_reset(sim):
    athlete_id, token = rider_with_token(sim)
    activity_id = sim.create_activity(athlete_id)
    api(sim, "/athlete/activities", token)
    api(sim, f"/activities/{activity_id}", token)
    api(sim, f"/activities/{activity_id}", token)
    assert sim.requests == {"GET /athlete/activities": 1, "GET /activities/{id}": 2}
    assert sim.requests_by_activity == {activity_id: 2}
    assert sim.max_window_usage() == 3
    sim.reset_counters()
    assert not sim.requests and not sim.requests_by_activity and sim.max_window_usage() == 0
    # Strava's own usage is not ours to reset.
    assert api(sim, "/athlete/activities", token).headers["X-RateLimit-Usage"] == "4,4"


def test_inactive_application_gets_403_everywhere(sim):
    _, token = rider_with_token(sim)
    sim.inactive = True
    inactive = {
        "message": "Forbidden",
        "errors": [{"resource": "Application", "field": "Status", "code": "Inactive"}],
    }
    responses = [
        api(sim, "/athlete/activities", token),
        token_call(sim, grant_type="x"),
        authorize(sim),
        subscribe(sim, "http://127.0.0.1:1/hook"),
    ]
    assert [r.status_code for r in responses] == [403] * 4
    assert all(r.json() == inactive for r in responses)


# -- push subscriptions --------------------------------------------------------------------------


def test_subscription_create_list_delete(sim, receiver):
    created = subscribe(sim, receiver.url, verify_token="our-secret")
    assert created.status_code == 201
    sub_id = created.json()["id"]
    assert receiver.validations[0]["hub.mode"] == "subscribe"
    assert receiver.validations[0]["hub.verify_token"] == "our-secret"
    again = subscribe(sim, receiver.url)
    assert again.status_code == 400
    assert again.json()["errors"] == [
        {"resource": "PushSubscription", "field": "", "code": "already exists"}
    ]
    listed = requests.get(sim.api_url + "/push_subscriptions", params=CLIENT, timeout=TIMEOUT)
    (sub,) = listed.json()
    assert sub["id"] == sub_id and sub["callback_url"] == receiver.url
    assert sub["resource_state"] == 2 and sub["application_id"] == 4242
    assert sub["created_at"] == sub["updated_at"]
    delete_url = f"{sim.api_url}/push_subscriptions/{sub_id}"
    assert requests.delete(delete_url, params=CLIENT, timeout=TIMEOUT).status_code == 204
    assert requests.delete(delete_url, params=CLIENT, timeout=TIMEOUT).status_code == 404
    assert (
        requests.get(sim.api_url + "/push_subscriptions", params=CLIENT, timeout=TIMEOUT).json()
        == []
    )
    assert sim.requests["DELETE /push_subscriptions/{id}"] == 2
    assert sim.max_window_usage() == 0


@pytest.mark.parametrize("echo", ["wrong", "error"])
def test_subscription_refused_when_callback_does_not_echo(sim, echo):
    with Receiver(echo=echo) as receiver:
        response = subscribe(sim, receiver.url)
    assert response.status_code == 400 and response.json() == BAD_CALLBACK
    assert sim.subscription is None


def test_subscription_refuses_bad_credentials_and_long_urls(sim, receiver):
    bad = requests.post(
        sim.api_url + "/push_subscriptions",
        timeout=TIMEOUT,
        data={**CLIENT, "client_secret": "x", "callback_url": receiver.url, "verify_token": "vt"},
    )
    assert bad.status_code == 401
    long = subscribe(sim, receiver.url + "?" + "x" * 255)
    assert long.status_code == 400
    assert long.json()["errors"][0]["field"] == "callback_url"
    assert receiver.validations == []


# -- webhook events ------------------------------------------------------------------------------


def test_deliver_events_posts_strava_shaped_events(sim, receiver):
    athlete_id, _ = rider_with_token(sim)
    sub_id = subscribe(sim, receiver.url).json()["id"]
    activity_id = sim.create_activity(athlete_id)
    sim.update_activity(activity_id, name="Messy", sport_type="Run", private=True)
    sim.delete_activity(activity_id)
    sim.revoke(athlete_id)
    counts = sim.deliver_events()
    assert counts == {
        "sent": 4,
        "delivered": 4,
        "dropped": 0,
        "duplicated": 0,
        "failed": 0,
        "attempts": 4,
    }
    assert [(e["object_type"], e["aspect_type"], e["updates"]) for e in receiver.events] == [
        ("activity", "create", {}),
        ("activity", "update", {"title": "Messy", "type": "Run", "private": "true"}),
        ("activity", "delete", {}),
        ("athlete", "update", {"authorized": "false"}),
    ]
    assert receiver.events[0] == {
        "aspect_type": "create",
        "event_time": START,
        "object_id": activity_id,
        "object_type": "activity",
        "owner_id": athlete_id,
        "subscription_id": sub_id,
        "updates": {},
    }
    assert sim.outbox == []


def test_turning_private_without_read_all_reads_as_delete_then_create(sim):
    athlete_id, _ = rider_with_token(sim, scope="read,activity:read")
    activity_id = sim.create_activity(athlete_id)
    sim.update_activity(activity_id, private=True)
    sim.update_activity(activity_id, name="Hidden")
    sim.update_activity(activity_id, private=False)
    assert [e["aspect_type"] for e in sim.outbox] == ["create", "delete", "create"]


def test_revoked_tokens_stop_working(sim):
    athlete_id, token = rider_with_token(sim)
    sim.revoke(athlete_id)
    assert api(sim, "/athlete/activities", token).json() == UNAUTHORIZED
    assert sim.outbox[-1]["updates"] == {"authorized": "false"}


def test_deauthorize_endpoint_revokes(sim):
    athlete_id, token = rider_with_token(sim)
    response = requests.post(
        sim.oauth_url + "/deauthorize", data={"access_token": token}, timeout=TIMEOUT
    )
    assert response.status_code == 200
    assert api(sim, "/athlete/activities", token).status_code == 401
    assert sim.outbox[-1]["owner_id"] == athlete_id


def test_deliver_without_subscription_keeps_events(sim):
    forge(sim, 1)
    assert sim.deliver_events()["sent"] == 0
    assert len(sim.outbox) == 1


@pytest.mark.parametrize(
    ("faults", "arrived", "expected"),
    [
        (Faults(drop_rate=1.0), 0, {"dropped": 2, "sent": 0}),
        (Faults(duplicate_rate=1.0), 4, {"duplicated": 2, "sent": 4, "delivered": 4}),
    ],
)
def test_deliver_events_applies_faults(clock, receiver, faults, arrived, expected):
    with StravaSim(clock=clock, faults=faults) as sim:
        subscribe(sim, receiver.url)
        for object_id in (1, 2):
            forge(sim, object_id)
        counts = sim.deliver_events()
    assert len(receiver.events) == arrived
    assert {key: counts[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("statuses", "delivered", "failed"),
    [
        ((500, 500), 1, 0),
        ((500, 503, 500), 0, 1),
    ],
)
def test_deliver_events_retries_three_attempts_in_all(sim, statuses, delivered, failed):
    with Receiver(statuses=statuses) as receiver:
        subscribe(sim, receiver.url)
        forge(sim, 1)
        counts = sim.deliver_events()
    assert counts["attempts"] == 3 and len(receiver.events) == 3
    assert (counts["delivered"], counts["failed"]) == (delivered, failed)


def test_forged_event_keeps_its_subscription_id(sim, receiver):
    subscribe(sim, receiver.url)
    forge(sim, 1, "delete", subscription_id=1)
    sim.deliver_events()
    assert receiver.events[0]["subscription_id"] == 1


def test_same_seed_same_world(clock):
    def build():
        sim = StravaSim(clock=clock, seed=7)
        athlete_id = sim.add_athlete()
        return athlete_id, sim.create_activity(athlete_id), sim.grant(athlete_id)

    assert build() == build()


def test_clock_follows_real_time_with_an_offset():
    clock = SimClock()
    before = clock.now()
    clock.advance(3600)
    assert clock.now() >= before + 3600
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_deliver_events_shuffle_reorders_but_loses_nothing(clock, receiver):
    with StravaSim(clock=clock, faults=Faults(shuffle=True)) as sim:
        subscribe(sim, receiver.url)
        for object_id in range(10):
            forge(sim, object_id)
        sim.deliver_events()
    arrived = [event["object_id"] for event in receiver.events]
    assert sorted(arrived) == list(range(10)) and arrived != list(range(10))


def test_receiver_may_call_the_sim_while_handling_an_event(sim):
    athlete_id, token = rider_with_token(sim)
    statuses = []

    def fetch(event):
        path = f"/activities/{event['object_id']}"
        statuses.append(api(sim, path, token).status_code)

    with Receiver(on_event=fetch) as receiver:
        subscribe(sim, receiver.url)
        sim.create_activity(athlete_id)
        assert sim.deliver_events()["delivered"] == 1
    assert statuses == [200]
