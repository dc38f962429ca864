"""The connect flow, driven through the simulator's authorize page."""

from urllib.parse import parse_qs, urlsplit

import requests
import sqlalchemy as sa
from conftest import connect_rider, make_app, run_jobs

import models
from sync import invites


def authorize(client, sim, athlete_id, scope=None, deny=False, query=""):
    """Start at /strava/connect, let the simulator answer for the athlete, return the callback."""
    start = client.get(f"/strava/connect{query}")
    assert start.status_code == 302, start.get_data(as_text=True)
    sim.login_as(athlete_id, scope=scope, deny=deny)
    at_strava = requests.get(start.location, allow_redirects=False, timeout=5)
    assert at_strava.status_code == 302
    back = urlsplit(at_strava.headers["Location"])
    # Success signs the rider in and redirects to /me, which names them.
    return client.get(f"{back.path}?{back.query}", follow_redirects=True)


def connections(svc):
    with svc.engine.connect() as conn:
        return conn.execute(sa.select(models.strava_connection)).all()


def test_connect_redirects_to_strava_with_the_documented_parameters(client, sim):
    response = client.get("/strava/connect")
    assert response.status_code == 302
    url = urlsplit(response.location)
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{sim.oauth_url}/authorize"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["client_id"] == sim.client_id
    assert query["redirect_uri"] == "http://localhost/strava/callback"
    assert query["response_type"] == "code"
    assert query["approval_prompt"] == "auto"
    assert query["scope"] == "read,activity:read_all"
    assert len(query["state"]) >= 20


def test_callback_connects_the_athlete_and_backfills_their_history(app, client, svc, sim):
    athlete = sim.add_athlete("Grace", "Hopper")
    old = [sim.create_activity(athlete, name=f"Ride {i}", event=False) for i in range(3)]
    page = authorize(client, sim, athlete)
    assert page.status_code == 200
    assert "Grace Hopper" in page.get_data(as_text=True)
    [row] = connections(svc)
    assert row.athlete_id == athlete and row.scope == "read,activity:read_all"
    assert svc.cipher.decrypt(row.access_token)
    run_jobs(app)
    with svc.engine.connect() as conn:
        held = {a.id for a in models.rider_activities(conn, row.rider_id)}
    assert held == set(old)


def test_tokens_are_encrypted_at_rest_when_a_key_is_set(database_url, sim):
    from cryptography.fernet import Fernet

    app = make_app(database_url, sim, TOKEN_ENCRYPTION_KEY=Fernet.generate_key().decode())
    svc = app.extensions["strava_sync"]
    athlete = sim.add_athlete()
    assert authorize(app.test_client(), sim, athlete).status_code == 200
    [row] = connections(svc)
    assert row.access_token.startswith("fernet:") and row.refresh_token.startswith("fernet:")
    token = svc.cipher.decrypt(row.access_token)
    assert token not in row.access_token
    response = requests.get(
        f"{sim.api_url}/athlete/activities", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert response.status_code == 200


def test_denied_authorization_is_a_400_page(client, svc, sim):
    athlete = sim.add_athlete()
    page = authorize(client, sim, athlete, deny=True)
    assert page.status_code == 400
    assert "not granted" in page.get_data(as_text=True)
    assert connections(svc) == []


def test_read_scope_alone_is_refused(client, svc, sim):
    athlete = sim.add_athlete()
    page = authorize(client, sim, athlete, scope="read")
    assert page.status_code == 400
    assert "activities" in page.get_data(as_text=True)
    assert connections(svc) == []


def test_activity_read_without_read_all_is_accepted(client, svc, sim):
    athlete = sim.add_athlete()
    assert authorize(client, sim, athlete, scope="read,activity:read").status_code == 200
    assert connections(svc)[0].scope == "read,activity:read"


def test_bad_or_missing_state_is_refused(client, svc, sim):
    athlete = sim.add_athlete()
    client.get("/strava/connect")
    sim.login_as(athlete)
    assert (
        client.get("/strava/callback?state=forged&code=x&scope=read,activity:read").status_code
        == 400
    )
    # A browser that never started the flow has no state at all.
    other = client.application.test_client()
    assert other.get("/strava/callback?state=&code=x&scope=activity:read").status_code == 400
    assert connections(svc) == []


def test_rider_id_is_a_400(client):
    assert client.get("/strava/connect?rider_id=999").status_code == 400
    assert client.get("/strava/connect?rider_id=abc").status_code == 400


def test_invite_links_an_existing_rider(app, client, svc, sim):
    with svc.engine.begin() as conn:
        rider = models.create_rider(conn, "Club member", now=svc.now())
    athlete = sim.add_athlete()
    query = f"?invite={invites.issue(svc, rider)}"
    assert authorize(client, sim, athlete, query=query).status_code == 200
    assert connections(svc)[0].rider_id == rider


def test_reconnecting_replaces_the_tokens(app, client, svc, sim):
    athlete = sim.add_athlete()
    authorize(client, sim, athlete)
    first = connections(svc)[0]
    authorize(client, sim, athlete)
    [second] = connections(svc)
    assert second.rider_id == first.rider_id
    assert svc.cipher.decrypt(second.access_token) != svc.cipher.decrypt(first.access_token)


def test_athlete_linked_to_another_rider_is_a_409(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        other = models.create_rider(conn, "Someone else", now=svc.now())
    page = authorize(client, sim, athlete, query=f"?invite={invites.issue(svc, other)}")
    assert page.status_code == 409
    assert [c.rider_id for c in connections(svc)] == [rider]


def test_connect_without_client_id_says_so(database_url):
    app = make_app(database_url, None)
    assert app.test_client().get("/strava/connect").status_code == 503


def test_refused_code_exchange_is_reported(app, client, svc, sim):
    start = client.get("/strava/connect")
    state = parse_qs(urlsplit(start.location).query)["state"][0]
    page = client.get(f"/strava/callback?state={state}&code=never-issued&scope=activity:read")
    assert page.status_code == 502
    assert "did not accept" in page.get_data(as_text=True)
    assert connections(svc) == []


def test_state_works_once(app, client, svc, sim):
    athlete = sim.add_athlete()
    start = client.get("/strava/connect")
    sim.login_as(athlete)
    back = requests.get(start.location, allow_redirects=False, timeout=5).headers["Location"]
    url = urlsplit(back)
    assert client.get(f"{url.path}?{url.query}", follow_redirects=True).status_code == 200
    assert client.get(f"{url.path}?{url.query}").status_code == 400
