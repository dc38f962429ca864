"""Sessions end when the rider says so: sign-out and Disconnect end every copy of the cookie."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import connect_rider, make_app
from pages_support import CSRF, post, sign_in

import models


@pytest.fixture
def admin(database_url, sim):
    """(app, the admin's browser, a copy of its cookie in an attacker's browser, rider id)."""
    app = make_app(database_url, sim)
    rider, athlete = connect_rider(app, sim, name=("Oper", "Ator"))
    app.config["ADMIN_ATHLETE_IDS"] = frozenset({athlete})
    browser = app.test_client()
    sign_in(browser, rider)
    assert browser.get("/admin").status_code == 200
    return app, browser, copy_of(app, browser), rider


def copy_of(app, browser):
    """Another client holding a copy of the browser's session cookie, as a thief would."""
    thief = app.test_client()
    cookie = browser.get_cookie(app.config["SESSION_COOKIE_NAME"])
    thief.set_cookie(cookie.key, cookie.value)
    return thief


def test_attack_copied_cookie_opens_nothing_after_sign_out(admin):
    _, browser, thief, _ = admin
    assert thief.get("/admin").status_code == 200  # the copy works while the session lives
    assert post(browser, "/signout").status_code == 302
    assert thief.get("/admin").status_code == 403
    assert thief.get("/me").location == "/"
    assert post(thief, "/admin/invites/new", {"name": "Mallory", "hours": "1"}).status_code == 403


def test_attack_copied_cookie_opens_nothing_after_disconnect(admin):
    app, browser, thief, rider = admin
    assert post(browser, "/me/disconnect").status_code == 302
    assert thief.get("/me").location == "/"
    page = browser.get("/me")  # the rider who pressed Disconnect still sees the outcome
    assert page.status_code == 200 and "Disconnected" in page.get_data(as_text=True)
    with app.extensions["strava_sync"].engine.connect() as conn:
        assert models.get_rider(conn, rider).session_generation == 1


@pytest.mark.parametrize("lost", ["disconnected", "needs reconnect"])
def test_attack_admin_without_a_live_connection_has_no_admin_rights(admin, lost):
    app, browser, _, rider = admin
    with app.extensions["strava_sync"].engine.begin() as conn:
        if lost == "disconnected":
            models.deauthorize(conn, rider)
        else:
            models.mark_needs_reconnect(conn, rider)
    assert browser.get("/admin").status_code == 403
    assert post(browser, "/admin/invites/new", {"name": "Mallory", "hours": "1"}).status_code == 403


def test_session_cookie_is_secure_behind_https_and_lives_14_days(database_url, sim):
    app = make_app(database_url, sim, PUBLIC_URL="https://club.example.org")
    assert app.config["PERMANENT_SESSION_LIFETIME"] == timedelta(days=14)
    client = app.test_client()
    response = client.get("/strava/connect", base_url="https://club.example.org")
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    plain = make_app(database_url, sim, init_db=False)
    assert plain.config["SESSION_COOKIE_SECURE"] is False  # http development still signs in


def test_sign_out_of_a_stale_session_is_harmless(admin):
    _, browser, thief, _ = admin
    post(browser, "/signout")
    with thief.session_transaction() as session:
        session["csrf"] = CSRF
    assert post(thief, "/signout").status_code == 302
