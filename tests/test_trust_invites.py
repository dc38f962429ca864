"""Connect invites and the OAuth callback's faults: nobody connects as a rider without an invite."""

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
import sqlalchemy as sa
from conftest import connect_rider, make_app
from test_oauth import authorize, connections

import models
from sync import invites


def new_rider(svc, name="Club member"):
    with svc.engine.begin() as conn:
        return models.create_rider(conn, name)


def invite_url(runner, rider, *extra):
    result = runner.invoke(args=["strava", "invite", str(rider), *extra])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def path_of(url):
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_attack_stranger_cannot_take_over_a_rider_by_connect_link(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim, name=("Ada", "Lovelace"))
    stranger = sim.add_athlete("Mallory", "Stranger")
    sim.login_as(stranger)
    page = client.get(f"/strava/connect?rider_id={rider}")
    assert page.status_code == 400
    assert "invite" in page.get_data(as_text=True)
    assert authorize(client, sim, stranger).status_code == 200  # no invite: a rider of their own
    by_rider = {c.rider_id: c.athlete_id for c in connections(svc)}
    assert by_rider[rider] == athlete
    assert len(by_rider) == 2 and stranger in by_rider.values()


def test_invite_command_prints_a_link_that_connects_the_rider(app, client, runner, svc, sim):
    app.config["PUBLIC_URL"] = "https://club.example.org"
    rider = new_rider(svc)
    url = invite_url(runner, rider, "--hours", "2")
    assert url.startswith("https://club.example.org/strava/connect?invite=")
    athlete = sim.add_athlete("Grace", "Hopper")
    assert authorize(client, sim, athlete, query="?" + urlsplit(url).query).status_code == 200
    assert [(c.rider_id, c.athlete_id) for c in connections(svc)] == [(rider, athlete)]


def test_invite_link_uses_the_callback_urls_origin_without_public_url(app, runner, svc):
    app.config["STRAVA_CALLBACK_URL"] = "https://sync.example.org/api/strava/webhook"
    url = invite_url(runner, new_rider(svc))
    assert url.startswith("https://sync.example.org/strava/connect?invite=")


def test_attack_used_invite_cannot_connect_a_second_athlete(app, client, svc, sim):
    rider = new_rider(svc)
    token = invites.issue(svc, rider)
    first, second = sim.add_athlete("First"), sim.add_athlete("Second")
    assert authorize(client, sim, first, query=f"?invite={token}").status_code == 200
    page = client.get(f"/strava/connect?invite={token}")
    assert page.status_code == 400
    assert "already been used" in page.get_data(as_text=True)
    assert [c.athlete_id for c in connections(svc)] == [first]
    assert second not in [c.athlete_id for c in connections(svc)]


def test_attack_one_invite_opened_twice_links_only_the_first_to_return(app, svc, sim):
    rider = new_rider(svc)
    token = invites.issue(svc, rider)
    one, two = app.test_client(), app.test_client()
    starts = [c.get(f"/strava/connect?invite={token}") for c in (one, two)]
    assert [s.status_code for s in starts] == [302, 302]  # both started before either returned
    pages = []
    athletes = (sim.add_athlete(), sim.add_athlete())
    for browser, start, athlete in zip((one, two), starts, athletes, strict=True):
        sim.login_as(athlete)
        back = requests.get(start.location, allow_redirects=False, timeout=5)
        pages.append(browser.get(path_of(back.headers["Location"]), follow_redirects=True))
    assert [p.status_code for p in pages] == [200, 400]
    assert [c.rider_id for c in connections(svc)] == [rider]


def test_expired_invite_is_a_400(database_url, sim):
    now = [1_800_000_000.0]
    app = make_app(database_url, sim, CLOCK=lambda: now[0])
    svc = app.extensions["strava_sync"]
    token = invites.issue(svc, new_rider(svc), hours=1)
    assert app.test_client().get(f"/strava/connect?invite={token}").status_code == 302
    now[0] += 3601
    page = app.test_client().get(f"/strava/connect?invite={token}")
    assert page.status_code == 400
    assert "expired" in page.get_data(as_text=True)


def test_attack_forged_or_tampered_invite_is_a_400(database_url, sim):
    app = make_app(database_url, sim)
    svc = app.extensions["strava_sync"]
    rider, other = new_rider(svc), new_rider(svc, "Other")
    token = invites.issue(svc, rider)
    elsewhere = make_app(database_url, sim, init_db=False, SECRET_KEY="another-key")
    foreign = invites.issue(elsewhere.extensions["strava_sync"], other)
    client = app.test_client()
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), foreign, "x", ""):
        page = client.get(f"/strava/connect?invite={bad}")
        assert page.status_code == 400, bad
        assert "not valid" in page.get_data(as_text=True)


def test_invite_for_a_rider_that_is_gone_is_a_400(app, client, svc):
    rider = new_rider(svc)
    token = invites.issue(svc, rider)
    with svc.engine.begin() as conn:
        conn.execute(models.strava_invite.delete())
        conn.execute(models.riders.delete().where(models.riders.c.id == rider))
    page = client.get(f"/strava/connect?invite={token}")
    assert page.status_code == 400
    assert "do not know" in page.get_data(as_text=True)


def test_invite_for_an_unknown_rider_is_refused_by_the_command(app, runner):
    app.config["PUBLIC_URL"] = "https://club.example.org"
    result = runner.invoke(args=["strava", "invite", "999"])
    assert result.exit_code == 1
    assert "no rider 999" in result.output


def test_invites_need_an_explicit_secret_key(database_url, sim, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = make_app(database_url, sim)
    app.config["SECRET_KEY"] = app.config["GENERATED_SECRET_KEY"]  # as when SECRET_KEY is unset
    svc = app.extensions["strava_sync"]
    result = app.test_cli_runner().invoke(args=["strava", "invite", str(new_rider(svc))])
    assert result.exit_code == 1
    assert "SECRET_KEY is not set" in result.output
    assert len(result.output.strip().splitlines()) == 1
    with svc.engine.connect() as conn:
        assert conn.execute(sa.select(models.strava_invite)).all() == []
    assert app.test_client().get("/strava/connect?invite=abc").status_code == 503


def test_connecting_requires_an_invite_when_configured(database_url, sim):
    app = make_app(database_url, sim, CONNECT_REQUIRES_INVITE=True)
    svc = app.extensions["strava_sync"]
    page = app.test_client().get("/strava/connect")
    assert page.status_code == 403
    assert "ask the club" in page.get_data(as_text=True)
    token = invites.issue(svc, new_rider(svc))
    assert app.test_client().get(f"/strava/connect?invite={token}").status_code == 302


# -- OAuth callback faults --------------------------------------------------------------------


def callback_with_state(client):
    start = client.get("/strava/connect")
    state = parse_qs(urlsplit(start.location).query)["state"][0]
    return client.get(f"/strava/callback?state={state}&code=abc&scope=read,activity:read_all")


def test_token_endpoint_down_is_a_502_saying_try_again(app, client, svc):
    svc.client.oauth_url = "http://127.0.0.1:1/oauth"  # nothing listens there
    page = callback_with_state(client)
    assert page.status_code == 502
    assert "could not be reached" in page.get_data(as_text=True)
    assert connections(svc) == []


@pytest.mark.parametrize(
    "answer",
    [
        {"body": "<html>Bad gateway</html>"},
        {"json": {"access_token": "a", "refresh_token": "r", "expires_at": 1}},
        {"json": {"athlete": {"id": "12"}, "access_token": "a", "refresh_token": "r"}},
        {"json": ["not", "an", "object"]},
        {"status": 503, "json": {"message": "down"}},
    ],
    ids=["not-json", "no-athlete", "bad-athlete-id", "not-an-object", "server-error"],
)
def test_bad_token_answer_is_a_502_saying_try_again(app, client, svc, answer):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.post(f"{svc.client.oauth_url}/token", **answer)
        page = callback_with_state(client)
    assert page.status_code == 502
    assert "could not be reached" in page.get_data(as_text=True)
    assert connections(svc) == []


# -- an invite for a connected rider reconnects that athlete only ---------------------------


@pytest.mark.parametrize("state", ["live", "needs reconnect"])
def test_attack_invite_for_a_connected_rider_cannot_hand_them_to_another_athlete(
    app, svc, sim, state
):
    rider, athlete = connect_rider(app, sim, name=("Ada", "Lovelace"))
    if state == "needs reconnect":
        with svc.engine.begin() as conn:
            models.mark_needs_reconnect(conn, rider)
    token = invites.issue(svc, rider)
    mallory = sim.add_athlete("Mallory", "Stranger")
    page = authorize(app.test_client(), sim, mallory, query=f"?invite={token}")
    assert page.status_code == 409
    assert "another Strava account" in page.get_data(as_text=True)
    assert [(c.rider_id, c.athlete_id) for c in connections(svc)] == [(rider, athlete)]
    with svc.engine.connect() as conn:
        assert conn.execute(sa.select(models.strava_invite.c.used_at)).scalar_one() is None
    page = authorize(app.test_client(), sim, athlete, query=f"?invite={token}")  # still usable
    assert page.status_code == 200 and "Ada Lovelace" in page.get_data(as_text=True)
    assert [(c.rider_id, c.athlete_id) for c in connections(svc)] == [(rider, athlete)]


def test_invite_for_a_disconnected_rider_may_link_a_new_athlete(app, svc, sim):
    rider, _ = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.deauthorize(conn, rider)
    newcomer = sim.add_athlete("New", "Account")
    token = invites.issue(svc, rider)
    assert authorize(app.test_client(), sim, newcomer, query=f"?invite={token}").status_code == 200
    assert [(c.rider_id, c.athlete_id) for c in connections(svc)] == [(rider, newcomer)]


# -- invite-only mode has a way in ----------------------------------------------------------


def test_attack_invite_only_fresh_install_lets_the_admin_invite_a_new_rider(database_url, sim):
    app = make_app(database_url, sim, CONNECT_REQUIRES_INVITE=True, PUBLIC_URL="https://c.org")
    svc = app.extensions["strava_sync"]
    result = app.test_cli_runner().invoke(args=["strava", "invite", "--new", "Ada  Admin"])
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    athlete = sim.add_athlete("Ada", "Lovelace")
    page = authorize(app.test_client(), sim, athlete, query="?" + urlsplit(url).query)
    assert page.status_code == 200
    [row] = connections(svc)
    with svc.engine.connect() as conn:
        assert (models.get_rider(conn, row.rider_id).name, row.athlete_id) == ("Ada Admin", athlete)


@pytest.mark.parametrize("args", [[], ["1", "--new", "Two"], ["--new", "  "]])
def test_invite_command_needs_exactly_one_rider(app, runner, args):
    app.config["PUBLIC_URL"] = "https://club.example.org"
    result = runner.invoke(args=["strava", "invite", *args])
    assert result.exit_code == 1 and "Error:" in result.output
    with app.extensions["strava_sync"].engine.connect() as conn:
        assert conn.execute(sa.select(models.riders)).all() == []


def test_attack_invite_only_still_lets_a_signed_in_rider_reconnect_their_own_athlete(
    database_url, sim
):
    from pages_support import sign_in

    app = make_app(database_url, sim, CONNECT_REQUIRES_INVITE=True)
    svc = app.extensions["strava_sync"]
    rider, athlete = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.mark_needs_reconnect(conn, rider)
    own = app.test_client()
    sign_in(own, rider)
    assert authorize(own, sim, athlete).status_code == 200
    [row] = connections(svc)
    assert (row.rider_id, row.needs_reconnect_since) == (rider, None)
    other = app.test_client()
    sign_in(other, rider)
    page = authorize(other, sim, sim.add_athlete("Someone", "Else"))
    assert page.status_code == 403 and "invite" in page.get_data(as_text=True)
    assert [(c.rider_id, c.athlete_id) for c in connections(svc)] == [(rider, athlete)]
