"""Revoking our access: the client's two endpoints, and the simulator's /oauth/revoke."""

from __future__ import annotations

import pytest
import requests
import responses

from strava_client import BadRequest, StravaClient, Unauthorized

OAUTH = "http://127.0.0.1:9/oauth"


@pytest.fixture
def strava():
    return StravaClient(
        api_url="http://127.0.0.1:9/api/v3", oauth_url=OAUTH, client_id="7", client_secret="s3"
    )


@responses.activate
def test_deauthorize_posts_the_token_in_the_header(strava):
    responses.post(f"{OAUTH}/deauthorize", json={"access_token": "tok"})
    strava.deauthorize("tok")
    [call] = responses.calls
    assert call.request.headers["Authorization"] == "Bearer tok"
    assert "tok" not in call.request.url


@responses.activate
def test_revoke_posts_the_token_with_basic_client_credentials(strava):
    responses.post(f"{OAUTH}/revoke", json={})
    strava.revoke("tok")
    [call] = responses.calls
    assert call.request.headers["Authorization"].startswith("Basic ")
    assert call.request.body == "token=tok"


@responses.activate
def test_revoke_refused_token_is_unauthorized(strava):
    body = {"message": "Authorization Error", "errors": [{"resource": "Athlete"}]}
    responses.post(f"{OAUTH}/deauthorize", json=body, status=401)
    with pytest.raises(Unauthorized):
        strava.deauthorize("tok")


def sim_client(sim) -> StravaClient:
    return StravaClient(
        api_url=sim.api_url,
        oauth_url=sim.oauth_url,
        client_id=sim.client_id,
        client_secret=sim.client_secret,
    )


def listing(sim, token):
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(f"{sim.api_url}/athlete/activities", headers=headers, timeout=5)


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
def test_sim_revoke_accepts_either_token_and_ends_the_grant(sim, which):
    athlete = sim.add_athlete()
    tokens = sim.grant(athlete)
    sim_client(sim).revoke(tokens[which])
    assert sim.requests["POST /oauth/revoke"] == 1
    assert listing(sim, tokens["access_token"]).status_code == 401
    assert sim.outbox[-1]["updates"] == {"authorized": "false"}


def test_sim_revoke_refuses_wrong_client_credentials_and_unknown_tokens(sim):
    athlete = sim.add_athlete()
    tokens = sim.grant(athlete)
    wrong = StravaClient(
        api_url=sim.api_url, oauth_url=sim.oauth_url, client_id=sim.client_id, client_secret="x"
    )
    with pytest.raises(Unauthorized):
        wrong.revoke(tokens["access_token"])
    with pytest.raises(BadRequest):
        sim_client(sim).revoke("not-a-token")
    assert listing(sim, tokens["access_token"]).status_code == 200


def test_sim_deauthorize_through_the_client(sim):
    athlete = sim.add_athlete()
    tokens = sim.grant(athlete)
    sim_client(sim).deauthorize(tokens["access_token"])
    assert listing(sim, tokens["access_token"]).status_code == 401
