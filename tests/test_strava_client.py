"""The Strava client at the HTTP boundary (mocked with `responses`)."""

import pytest
import requests
import responses
from cryptography.fernet import Fernet

from strava_client import (
    ApplicationInactive,
    BadRequest,
    BucketUsage,
    NotFound,
    RateLimited,
    StravaClient,
    StravaError,
    Unauthorized,
    parse_activity,
    parse_rate_limits,
)
from strava_client.tokens import TokenCipher

API = "http://127.0.0.1:9/api/v3"
OAUTH = "http://127.0.0.1:9/oauth"


class RecordingBudget:
    def __init__(self):
        self.permits, self.responses = [], []

    def take_permit(self, lane="realtime"):
        self.permits.append(lane)

    def record_response(self, status, rate_limits):
        self.responses.append((status, rate_limits))


@pytest.fixture
def budget():
    return RecordingBudget()


@pytest.fixture
def strava(budget):
    return StravaClient(
        api_url=API, oauth_url=OAUTH, client_id="1", client_secret="shh", budget=budget
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Limit": "200,2000", "X-RateLimit-Usage": "5,50"},
        {"x-ratelimit-limit": "200, 2000", "x-ratelimit-usage": " 5 ,50"},
        {"X-RATELIMIT-LIMIT": "200,2000", "X-RATELIMIT-USAGE": "5,50"},
    ],
)
def test_parse_rate_limits_ignores_case_and_spaces(headers):
    limits = parse_rate_limits(headers)
    assert limits.overall == BucketUsage(200, 2000, 5, 50)
    assert limits.read is None


@pytest.mark.parametrize("value", ["", "200", "200,2000,3", "a,b", "-1,5", "200;2000"])
def test_parse_rate_limits_drops_garbled_buckets(value):
    headers = {"X-ReadRateLimit-Limit": value, "X-ReadRateLimit-Usage": "1,1"}
    assert parse_rate_limits(headers).read is None


@responses.activate
def test_requests_carry_the_token_only_in_the_header_and_take_a_permit(strava, budget):
    responses.get(
        f"{API}/activities/7",
        json={"id": 7},
        headers={"X-ReadRateLimit-Limit": "100,1000", "X-ReadRateLimit-Usage": "3,30"},
    )
    assert strava.get_activity("tok-123", 7) == {"id": 7}
    call = responses.calls[0].request
    assert call.headers["Authorization"] == "Bearer tok-123"
    assert "tok-123" not in call.url
    assert budget.permits == ["realtime"]
    assert budget.responses[0][1].read == BucketUsage(100, 1000, 3, 30)


@responses.activate
def test_every_call_has_a_timeout(strava, monkeypatch):
    seen = []
    original = requests.Session.send

    def send(self, request, **kwargs):
        seen.append(kwargs.get("timeout"))
        return original(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)
    responses.get(f"{API}/athlete/activities", json=[])
    responses.post(f"{OAUTH}/token", json={"access_token": "a"})
    responses.get(f"{API}/push_subscriptions", json=[])
    strava.list_activities("t")
    strava.refresh("r")
    strava.list_subscriptions()
    assert len(seen) == 3 and all(t is not None for t in seen)


def strava_error(message, resource, field, code):
    return {"message": message, "errors": [{"resource": resource, "field": field, "code": code}]}


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, strava_error("Record Not Found", "Activity", "id", "invalid"), NotFound),
        (
            401,
            strava_error("Authorization Error", "Athlete", "access_token", "invalid"),
            Unauthorized,
        ),
        (
            429,
            strava_error("Rate Limit Exceeded", "Application", "rate limit", "exceeded"),
            RateLimited,
        ),
        (403, strava_error("Forbidden", "Application", "Status", "Inactive"), ApplicationInactive),
        (500, {"message": "Internal Server Error"}, StravaError),
        (502, "<html>bad gateway</html>", StravaError),
    ],
)
@responses.activate
def test_strava_errors_map_to_named_exceptions(strava, status, body, error):
    kwargs = {"json": body} if isinstance(body, dict) else {"body": body}
    responses.get(f"{API}/activities/7", status=status, **kwargs)
    with pytest.raises(error) as caught:
        strava.get_activity("secret-token", 7)
    assert caught.value.status == status
    assert "secret-token" not in str(caught.value)


@responses.activate
def test_stale_refresh_token_is_unauthorized_and_the_message_hides_secrets(strava):
    body = {
        "message": "Bad Request",
        "errors": [{"resource": "RefreshToken", "field": "refresh_token", "code": "invalid"}],
    }
    responses.post(f"{OAUTH}/token", status=400, json=body)
    with pytest.raises(Unauthorized) as caught:
        strava.refresh("old-refresh-token")
    assert "old-refresh-token" not in str(caught.value)
    assert "shh" not in str(caught.value)


@responses.activate
def test_subscription_refusal_is_a_bad_request_with_stravas_reason(strava):
    body = {
        "message": "Bad Request",
        "errors": [
            {
                "resource": "PushSubscription",
                "field": "callback url",
                "code": "GET to callback URL does not return 200",
            }
        ],
    }
    responses.post(f"{API}/push_subscriptions", status=400, json=body)
    with pytest.raises(BadRequest, match="does not return 200"):
        strava.create_subscription("https://example.invalid/cb", "verify")


def test_parse_activity_reads_both_dates_and_falls_back_to_type():
    activity = parse_activity(
        {
            "id": 1,
            "athlete": {"id": 2},
            "type": "Ride",
            "start_date": "2026-11-28T06:30:00Z",
            "start_date_local": "2026-11-28T07:30:00Z",
            "distance": 1234.5,
        }
    )
    assert activity["sport_type"] == "Ride"
    assert activity["start_date"].isoformat() == "2026-11-28T06:30:00+00:00"
    assert activity["start_date_local"].isoformat() == "2026-11-28T07:30:00"  # wall clock, no zone
    assert activity["private"] is False


@pytest.mark.parametrize("broken", [{}, {"id": 1}, {"id": 1, "athlete": {"id": 2}}])
def test_parse_activity_refuses_what_it_cannot_read(broken):
    with pytest.raises(StravaError):
        parse_activity(broken)


def test_token_cipher_round_trips_and_survives_key_rotation():
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored = TokenCipher(old_key).encrypt("tok")
    assert stored.startswith("fernet:") and "tok" not in stored
    rotated = TokenCipher(f"{new_key},{old_key}")
    assert rotated.decrypt(stored) == "tok"
    assert TokenCipher(new_key).decrypt(rotated.encrypt("tok")) == "tok"
    with pytest.raises(RuntimeError, match="cannot be decrypted"):
        TokenCipher(new_key).decrypt(stored)
    with pytest.raises(RuntimeError, match="not set"):
        TokenCipher(None).decrypt(stored)


def test_token_cipher_without_a_key_stores_plaintext_and_reads_old_plaintext():
    assert TokenCipher(None).encrypt("tok") == "tok"
    assert TokenCipher(Fernet.generate_key().decode()).decrypt("legacy-plain") == "legacy-plain"
