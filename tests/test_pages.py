"""The rider-facing pages: landing, sign-in through OAuth, /me, disconnect, leaderboard, errors."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import requests
from conftest import connect_rider, make_app
from pages_support import CSRF, HTML, add_ride, connection, held_activities, post, sign_in

import models
from sync.eddington import METRES_PER_KM, METRES_PER_MILE, next_target


def text(response) -> str:
    return response.get_data(as_text=True)


def test_index_names_the_club_and_offers_connect_and_the_leaderboard(database_url, sim):
    client = make_app(database_url, sim, CLUB_NAME="Audax Test Club").test_client()
    page = client.get("/")
    assert page.status_code == 200
    body = text(page)
    assert "<h1>Audax Test Club</h1>" in body
    assert 'href="/strava/connect">Connect with Strava</a>' in body
    assert 'href="/leaderboard"' in body
    assert 'href="/static/style.css"' in body


def test_static_stylesheet_is_served(client):
    with client.get("/static/style.css") as response:
        assert response.status_code == 200
        assert "#fc4c02" in text(response)


def test_connecting_signs_the_rider_in_and_lands_on_their_page(client, svc, sim):
    athlete = sim.add_athlete("Grace", "Hopper")
    start = client.get("/strava/connect")
    sim.login_as(athlete)
    at_strava = requests.get(start.location, allow_redirects=False, timeout=5)
    back = urlsplit(at_strava.headers["Location"])
    callback = client.get(f"{back.path}?{back.query}")
    assert callback.status_code == 302 and callback.location == "/me"
    with client.session_transaction() as session:
        rider_id = session["rider_id"]
    assert connection(svc, rider_id).athlete_id == athlete
    page = client.get("/me")
    assert page.status_code == 200
    assert "Grace Hopper is connected" in text(page)
    assert "Syncing with Strava" in text(page)


def test_me_without_a_session_goes_to_the_start_page(client):
    response = client.get("/me")
    assert response.status_code == 302 and response.location == "/"


def test_me_for_a_rider_that_no_longer_exists_signs_out(client):
    sign_in(client, 999)
    assert client.get("/me").status_code == 302
    with client.session_transaction() as session:
        assert "rider_id" not in session


def test_me_shows_eddington_numbers_next_targets_and_activities(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    for day in range(3):  # three days of 40 km: E=3 in both units
        add_ride(svc, rider, athlete, 500 + day, km=40, day=day, name=f"Loop {day}")
    add_ride(svc, rider, athlete, 600, km=12, day=5, sport_type="Run", name="Jog")
    sign_in(client, rider)
    body = text(client.get("/me"))
    assert "Ada Lovelace" in body
    assert body.count('<span class="number">3</span>') == 2
    # E=4 needs four days of 4 units; the three 40 km days already count.
    assert "1 more ride of 4 miles to reach E=4" in body
    assert "1 more ride of 4 km to reach E=4" in body
    assert 'href="https://www.strava.com/activities/502"' in body
    assert body.count(">View on Strava</a>") == 4
    assert "Powered by Strava" in body
    assert "Last sync: not yet" in body


def test_next_target_counts_the_days_still_needed():
    days = [m * METRES_PER_KM for m in (70, 65, 63, 62, 10)]
    assert next_target(days, METRES_PER_KM) == (6, 1)
    assert next_target([], METRES_PER_MILE) == (1, 1)
    many = [63 * METRES_PER_KM] * 60 + [62 * METRES_PER_KM] * 10
    assert next_target(many, METRES_PER_KM) == (63, 3)  # "3 more rides of 63 km to reach E=63"


def test_me_offers_reconnect_when_the_connection_needs_it(app, client, svc, sim):
    rider, _ = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider, needs_reconnect_since=models.now())
    sign_in(client, rider)
    body = text(client.get("/me"))
    assert "Needs reconnecting" in body
    assert 'href="/strava/connect">Reconnect with Strava</a>' in body


def test_me_after_a_revocation_says_disconnected_and_offers_reconnect(app, client, svc, sim):
    rider, _ = connect_rider(app, sim)
    with svc.engine.begin() as conn:
        models.deauthorize(conn, rider)
    sign_in(client, rider)
    body = text(client.get("/me"))
    assert "Disconnected" in body and "Reconnect with Strava" in body
    assert "Eddington numbers" not in body
    assert client.get("/me/disconnect").status_code == 302


def test_hide_from_leaderboard_needs_the_csrf_token(app, client, svc, sim):
    rider, _ = connect_rider(app, sim)
    sign_in(client, rider)
    refused = post(client, "/me/leaderboard", {"hidden": "1"}, csrf="forged")
    assert refused.status_code == 403 and "<h1>Forbidden</h1>" in text(refused)
    assert post(client, "/me/leaderboard", {"hidden": "1"}, csrf=None).status_code == 403
    assert connection(svc, rider).leaderboard_hidden is False
    assert post(client, "/me/leaderboard", {"hidden": "1"}).status_code == 302
    assert connection(svc, rider).leaderboard_hidden is True
    assert "Show me on the leaderboard" in text(client.get("/me"))
    post(client, "/me/leaderboard", {"hidden": "0"})
    assert connection(svc, rider).leaderboard_hidden is False


def test_hide_from_leaderboard_refuses_a_visitor(client):
    with client.session_transaction() as session:
        session["csrf"] = CSRF
    assert post(client, "/me/leaderboard", {"hidden": "1"}).status_code == 403


def test_disconnect_asks_for_confirmation_first(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    add_ride(svc, rider, athlete, 700, km=30)
    sign_in(client, rider)
    page = client.get("/me/disconnect")
    assert page.status_code == 200
    assert 'action="/me/disconnect"' in text(page) and f'value="{CSRF}"' in text(page)
    assert sim.requests["POST /oauth/deauthorize"] == 0
    assert held_activities(svc, rider) == [700]


def test_disconnect_revokes_at_strava_and_purges_at_once(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    add_ride(svc, rider, athlete, 700, km=30)
    token = svc.cipher.decrypt(connection(svc, rider).access_token)
    sign_in(client, rider)
    response = post(client, "/me/disconnect")
    assert response.status_code == 302 and response.location == "/me"
    assert sim.requests["POST /oauth/deauthorize"] == 1
    assert sim.requests["POST /oauth/revoke"] == 0
    row = connection(svc, rider)
    assert row.deauthorized_at is not None and row.access_token is None
    assert row.refresh_token is None and row.eddington_number_km is None
    assert held_activities(svc, rider) == []
    listed = requests.get(
        f"{sim.api_url}/athlete/activities", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert listed.status_code == 401
    assert "1 activity deleted" in text(client.get("/me"))


def test_disconnect_uses_oauth_revoke_when_configured(database_url, sim):
    app = make_app(database_url, sim, STRAVA_REVOKE_ENDPOINT="revoke")
    svc, client = app.extensions["strava_sync"], app.test_client()
    rider, _ = connect_rider(app, sim)
    sign_in(client, rider)
    assert post(client, "/me/disconnect").status_code == 302
    assert sim.requests["POST /oauth/revoke"] == 1
    assert sim.requests["POST /oauth/deauthorize"] == 0
    assert connection(svc, rider).deauthorized_at is not None


def test_disconnect_after_strava_already_revoked_still_purges(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    add_ride(svc, rider, athlete, 700, km=30)
    sim.revoke(athlete, event=False)
    sign_in(client, rider)
    assert post(client, "/me/disconnect").status_code == 302
    assert sim.requests["POST /oauth/deauthorize"] == 1
    assert held_activities(svc, rider) == []
    assert connection(svc, rider).deauthorized_at is not None


def test_disconnect_when_strava_is_down_is_a_502_page_and_changes_nothing(app, client, svc, sim):
    rider, athlete = connect_rider(app, sim)
    add_ride(svc, rider, athlete, 700, km=30)
    sim.stop()
    sign_in(client, rider)
    response = post(client, "/me/disconnect")
    assert response.status_code == 502
    assert "<h1>Bad Gateway</h1>" in text(response) and "try again" in text(response)
    assert held_activities(svc, rider) == [700]
    assert connection(svc, rider).deauthorized_at is None


def test_disconnect_needs_the_csrf_token(app, client, svc, sim):
    rider, _ = connect_rider(app, sim)
    sign_in(client, rider)
    assert post(client, "/me/disconnect", csrf="nope").status_code == 403
    assert sim.requests["POST /oauth/deauthorize"] == 0
    assert connection(svc, rider).deauthorized_at is None


def test_sign_out_clears_the_session(app, client, sim):
    rider, _ = connect_rider(app, sim)
    sign_in(client, rider)
    assert post(client, "/signout", csrf="wrong").status_code == 403
    assert post(client, "/signout").status_code == 302
    with client.session_transaction() as session:
        assert "rider_id" not in session
    assert client.get("/me").status_code == 302


def riders_with_rides(app, svc, sim, plan: dict[str, list[float]]) -> dict[str, int]:
    """Connect one rider per name and store their rides (km, one a day); name -> rider id."""
    ids, next_id = {}, 1000
    for name, rides in plan.items():
        rider, athlete = connect_rider(app, sim, name=(name, "Rider"))
        for day, km in enumerate(rides):
            next_id += 1
            add_ride(svc, rider, athlete, next_id, km=km, day=day)
        ids[name] = rider
    return ids


def test_leaderboard_orders_by_eddington_and_counts_qualifying_days(app, client, svc, sim):
    riders_with_rides(app, svc, sim, {"Slow": [5, 5], "Fast": [50, 50, 50, 9], "Mid": [10, 10, 10]})
    body = re.sub(r">\s+<", "><", text(client.get("/leaderboard")))
    order = [body.index(f"{n} Rider") for n in ("Fast", "Mid", "Slow")]
    assert order == sorted(order)
    # Fast: 3 days of 50 km and one of 9 km: E=4 in miles and km, 4 qualifying days each.
    cells = '<td class="num strong">4</td><td class="num">4</td>'
    assert f'<th scope="row">Fast Rider</th>{cells}{cells}' in body
    assert "Powered by Strava" in body


def test_leaderboard_leaves_out_hidden_and_disconnected_riders(app, client, svc, sim):
    ids = riders_with_rides(app, svc, sim, {"Shy": [20], "Gone": [30], "Open": [10]})
    with svc.engine.begin() as conn:
        models.set_leaderboard_hidden(conn, ids["Shy"], True)
        models.deauthorize(conn, ids["Gone"])
    body = text(client.get("/leaderboard"))
    assert "Open Rider" in body
    assert "Shy Rider" not in body and "Gone Rider" not in body


def test_leaderboard_rows_from_the_query(app, svc, sim):
    riders_with_rides(app, svc, sim, {"A": [2, 2, 1], "B": []})
    with svc.engine.connect() as conn:
        rows = models.leaderboard(conn, svc.config["EDDINGTON_SPORT_TYPES"])
    assert [(r.name, r.miles, r.km, r.days_miles, r.days_km) for r in rows] == [
        ("A Rider", 1, 2, 2, 2),
        ("B Rider", 0, 0, 0, 0),
    ]


def test_private_leaderboard_needs_a_connected_rider(database_url, sim):
    app = make_app(database_url, sim, LEADERBOARD_PUBLIC=False)
    client = app.test_client()
    refused = client.get("/leaderboard")
    assert refused.status_code == 403
    assert "connect with Strava" in text(refused) and "<!doctype html>" in text(refused)
    rider, _ = connect_rider(app, sim)
    sign_in(client, rider)
    assert client.get("/leaderboard").status_code == 200


@pytest.mark.parametrize(
    ("path", "headers", "kind"),
    [
        ("/nope", HTML, "html"),
        ("/nope", {}, "json"),
        ("/nope", {"Accept": "application/json"}, "json"),
        ("/api/nope", HTML, "json"),
        ("/healthz/nope", HTML, "json"),
    ],
)
def test_errors_are_pages_for_browsers_and_json_for_the_api(client, path, headers, kind):
    response = client.get(path, headers=headers)
    assert response.status_code == 404
    if kind == "html":
        assert response.mimetype == "text/html"
        assert "<h1>Not Found</h1>" in text(response) and "style.css" in text(response)
    else:
        assert response.get_json()["error"]


def test_oauth_errors_are_styled_pages(client):
    response = client.get("/strava/callback?state=forged&code=x")
    assert response.status_code == 400
    assert "<h1>Connection failed</h1>" in text(response) and "style.css" in text(response)


def test_method_not_allowed_on_a_page_is_a_page(client):
    response = client.put("/leaderboard", headers=HTML)
    assert response.status_code == 405 and "<h1>Method Not Allowed</h1>" in text(response)


def test_qualifying_days_are_stored_with_the_numbers_and_counted_when_missing(app, svc, sim):
    ids = riders_with_rides(app, svc, sim, {"A": [2, 2, 1], "C": [5, 5, 5, 5]})
    stored = connection(svc, ids["A"])
    assert (stored.eddington_days_miles, stored.eddington_days_km) == (2, 2)
    with svc.engine.begin() as conn:  # as a row written before revision 0003 holds them
        models.update_connection(conn, ids["A"], eddington_days_miles=None, eddington_days_km=None)
        rows = models.leaderboard(conn, svc.config["EDDINGTON_SPORT_TYPES"])
    assert [(r.name, r.days_miles, r.days_km) for r in rows] == [
        ("C Rider", 4, 4),
        ("A Rider", 2, 2),
    ]


def test_a_revocation_clears_the_qualifying_days(app, svc, sim):
    ids = riders_with_rides(app, svc, sim, {"A": [20, 20]})
    with svc.engine.begin() as conn:
        models.deauthorize(conn, ids["A"])
    row = connection(svc, ids["A"])
    assert (row.eddington_days_miles, row.eddington_days_km) == (None, None)


def test_pages_carry_security_headers_and_the_api_does_not_need_them(client):
    page = client.get("/")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in client.get("/healthz").headers


def test_attack_disconnect_after_a_lost_revocation_with_an_expiring_token_still_purges(
    app, client, svc, sim
):
    rider, athlete = connect_rider(app, sim)
    add_ride(svc, rider, athlete, 700, km=30)
    sim.revoke(athlete, event=False)  # the rider revoked us on Strava; the event was lost
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider, expires_at=int(svc.clock()) + 60)
    sign_in(client, rider)
    assert post(client, "/me/disconnect").status_code == 302
    assert sim.requests["POST /oauth/deauthorize"] == 0  # a refused refresh: nothing to revoke
    assert held_activities(svc, rider) == []
    assert connection(svc, rider).deauthorized_at is not None
    assert "Strava no longer accepted our access" in text(client.get("/me"))


def test_attack_disconnect_of_a_rider_needing_reconnect_purges_without_calling_strava(
    app, client, svc, sim
):
    rider, athlete = connect_rider(app, sim)
    add_ride(svc, rider, athlete, 700, km=30)
    with svc.engine.begin() as conn:
        models.mark_needs_reconnect(conn, rider)
    sign_in(client, rider)
    assert post(client, "/me/disconnect").status_code == 302
    assert sum(sim.requests.values()) == 0
    assert held_activities(svc, rider) == []
    row = connection(svc, rider)
    assert row.deauthorized_at is not None and row.needs_reconnect_since is None


def test_attack_disconnect_with_a_refused_client_secret_names_the_configuration_and_keeps_all(
    database_url, sim
):
    app = make_app(
        database_url, sim, STRAVA_REVOKE_ENDPOINT="revoke", STRAVA_CLIENT_SECRET="wrong-secret"
    )
    svc, client = app.extensions["strava_sync"], app.test_client()
    rider, athlete = connect_rider(app, sim)
    add_ride(svc, rider, athlete, 700, km=30)
    sign_in(client, rider)
    response = post(client, "/me/disconnect")
    assert response.status_code == 503
    assert "credentials" in text(response) and "wrong-secret" not in text(response)
    assert "Disconnected" not in text(client.get("/me"))
    assert held_activities(svc, rider) == [700]
    row = connection(svc, rider)
    assert row.deauthorized_at is None and row.refresh_token is not None
    with svc.engine.connect() as conn:
        assert models.get_setting(conn, "strava_credentials_refused_at") is not None
