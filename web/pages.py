"""The server-rendered pages: landing, a rider's own page, the leaderboard, and error pages.

Signing in is the Strava OAuth flow: `oauth.py` calls `sign_in(rider_id)` after a successful
callback, which puts the rider in the Flask session. Every state-changing page action is a POST
carrying the session's CSRF token (`require_csrf`).
"""

from __future__ import annotations

import hmac
import logging
import secrets

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException

import models
from strava_client import StravaError, tokens
from sync import disconnect
from sync.eddington import METRES_PER_KM, METRES_PER_MILE, eddington, next_target
from web.extension import current_services

log = logging.getLogger(__name__)
bp = Blueprint("pages", __name__)

RECENT_ACTIVITIES = 10
STRAVA_ACTIVITY_URL = "https://www.strava.com/activities/{}"
STRAVA_ATHLETE_URL = "https://www.strava.com/athletes/{}"
JSON_PATHS = ("/api/", "/healthz")
PAGE_BLUEPRINTS = ("pages", "admin", "oauth")


# -- the session: who is signed in, and the CSRF token ----------------------------------------


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def require_csrf():
    """Refuse a POST whose form token does not match the session's (403)."""
    if request.method != "POST":
        return None
    expected = session.get("csrf", "")
    given = request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        abort(403, "This form has expired or did not come from this site. Reload and try again.")
    return None


def sign_in(rider_id: int, message: str):
    """Put the rider in a fresh session and send them to their page (the OAuth callback's end)."""
    with current_services().engine.connect() as conn:
        generation = models.get_rider(conn, rider_id).session_generation
    session.clear()  # a new identity gets a new CSRF token too
    session["rider_id"] = int(rider_id)
    session["generation"] = generation
    flash(message)
    return redirect(url_for("pages.me"))


def end_sessions(rider_id: int) -> int:
    """End every session of the rider, copies of this one included; returns the new generation."""
    with current_services().engine.begin() as conn:
        return models.end_sessions(conn, rider_id)


def signed_in_connection():
    """(rider, connection) of the signed-in rider, or (None, None); a stale session is cleared.

    A session is stale when its rider is gone or it was signed in before the rider's sessions
    were last ended (sign-out, Disconnect): a cookie copied earlier opens nothing.
    """
    rider_id = session.get("rider_id")
    if rider_id is None:
        return None, None
    with current_services().engine.connect() as conn:
        rider = models.get_rider(conn, rider_id)
        connection = models.get_connection(conn, rider_id) if rider else None
    if rider is None or session.get("generation", 0) != rider.session_generation:
        session.pop("rider_id", None)
        session.pop("generation", None)
        return None, None
    return rider, connection


def is_admin(connection) -> bool:
    """Whether this connection's athlete is in ADMIN_ATHLETE_IDS and the connection is live.

    Admin rights follow a live grant: an admin who disconnected (or must reconnect) has none.
    """
    admins = current_services().settings.admin_athlete_ids or frozenset()
    live = connection_state(connection) == "syncing"
    return live and connection.athlete_id in admins


@bp.app_context_processor
def page_globals() -> dict:
    """What every template may use: the club's name, the CSRF token, who is signed in."""
    return {
        "club_name": page_club(),
        "csrf_token": csrf_token,
        "signed_in": session.get("rider_id") is not None,
    }


bp.before_request(require_csrf)

# Everything a page needs is served by the app itself: no inline script, no outside origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'none'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.after_app_request
def protect_pages(response):
    """Add the security headers to every HTML page (the JSON API's answers are left alone)."""
    if response.mimetype == "text/html":
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


# -- pages ------------------------------------------------------------------------------------


@bp.get("/")
def index():
    """What this is, the club's name, Connect with Strava, and the leaderboard link."""
    return render_template("index.html")


def connection_state(connection) -> str:
    """'not connected', 'disconnected', 'needs reconnect' or 'syncing'."""
    if connection is None:
        return "not connected"
    if connection.deauthorized_at is not None:
        return "disconnected"
    if connection.needs_reconnect_since is not None or connection.refresh_token is None:
        return "needs reconnect"
    return "syncing"


def eddington_summary(day_distances: list[float]) -> list[dict]:
    """For miles and km: the Eddington number and the next target."""
    summary = []
    for unit, metres in (("miles", METRES_PER_MILE), ("km", METRES_PER_KM)):
        target, more = next_target(day_distances, metres)
        number = eddington(day_distances, metres)
        summary.append({"unit": unit, "number": number, "target": target, "more": more})
    return summary


@bp.get("/me")
def me():
    """The signed-in rider's page: state, last sync, Eddington numbers, recent activities."""
    rider, connection = signed_in_connection()
    if rider is None:
        return redirect(url_for("pages.index"))
    svc = current_services()
    with svc.engine.connect() as conn:
        days = models.daily_distances(conn, rider.id, svc.settings.eddington_sport_types)
        activities = models.recent_activities(conn, rider.id, RECENT_ACTIVITIES)
    return render_template(
        "me.html",
        rider=rider,
        connection=connection,
        state=connection_state(connection),
        eddington=eddington_summary(days),
        activities=activities,
        strava_url=STRAVA_ACTIVITY_URL,
        athlete_url=STRAVA_ATHLETE_URL,
        metres_per_mile=METRES_PER_MILE,
        admin=is_admin(connection),
    )


@bp.post("/me/leaderboard")
def leaderboard_visibility():
    """Hide the signed-in rider from the leaderboard, or show them again."""
    rider, connection = signed_in_connection()
    if connection is None:
        abort(403, "Connect with Strava first.")
    hidden = request.form.get("hidden") == "1"
    with current_services().engine.begin() as conn:
        models.set_leaderboard_hidden(conn, rider.id, hidden)
    flash("You are hidden from the leaderboard." if hidden else "You are on the leaderboard.")
    return redirect(url_for("pages.me"))


@bp.get("/me/disconnect")
def confirm_disconnect():
    """The confirmation step before Disconnect."""
    rider, connection = signed_in_connection()
    if connection is None or connection_state(connection) == "disconnected":
        return redirect(url_for("pages.me" if rider else "pages.index"))
    return render_template("disconnect.html", rider=rider)


@bp.post("/me/disconnect")
def disconnect_rider():
    """Revoke our access at Strava and purge the rider's Strava data at once."""
    rider, connection = signed_in_connection()
    if connection is None:
        abort(403, "Connect with Strava first.")
    try:
        done = disconnect.disconnect(current_services(), rider.id)
    except tokens.CredentialsRefused as exc:
        log.error("rider %s: disconnect refused: %s", rider.id, exc)
        abort(
            503,
            "Strava refused this site's own credentials, so nothing was changed: the "
            "club's operator must fix the site's Strava settings. Please try again later.",
        )
    except StravaError as exc:
        log.warning("rider %s: disconnect failed at Strava: %s", rider.id, exc)
        abort(502, "Strava did not answer, so nothing was changed. Please try again shortly.")
    # Copies of this session end; this browser stays signed in to see what happened.
    session["generation"] = end_sessions(rider.id)
    noun = "activity" if done.deleted == 1 else "activities"
    held = f"{done.deleted} {noun} deleted from {page_club()}"
    if done.revoked:
        flash(f"Disconnected from Strava; {held}.")
    else:
        flash(f"Strava no longer accepted our access, so there was nothing to revoke; {held}.")
    return redirect(url_for("pages.me"))


def page_club() -> str:
    """The club's name as the pages show it."""
    return current_services().settings.club_name or "strava-sync"


@bp.post("/signout")
def sign_out():
    """Forget the signed-in rider, here and in every copy of this session."""
    rider, _ = signed_in_connection()
    if rider is not None:
        end_sessions(rider.id)
    session.clear()
    return redirect(url_for("pages.index"))


@bp.get("/leaderboard")
def leaderboard():
    """Riders by Eddington number; public unless LEADERBOARD_PUBLIC=0."""
    svc = current_services()
    if not svc.settings.leaderboard_public:
        _, connection = signed_in_connection()
        if connection_state(connection) in ("not connected", "disconnected"):
            abort(403, "The leaderboard is for the club's riders: connect with Strava to see it.")
    with svc.engine.connect() as conn:
        rows = models.leaderboard(conn, svc.settings.eddington_sport_types)
    return render_template("leaderboard.html", rows=rows)


# -- messages and errors ----------------------------------------------------------------------


def message_page(title: str, message: str, status: int = 200):
    """A page with one heading and one sentence (the OAuth flow's answers)."""
    return render_template("message.html", title=title, message=message, status=status), status


def wants_page() -> bool:
    """Whether an error should be an HTML page: a page's own error, or a browser asking for HTML."""
    if request.path.startswith(JSON_PATHS):
        return False
    if request.blueprint in PAGE_BLUEPRINTS:
        return True
    accept = request.accept_mimetypes
    return accept.provided and accept.best_match(["application/json", "text/html"]) == "text/html"


def error_page(exc: HTTPException):
    """An HTTP error as a page in the site's style."""
    return message_page(exc.name, exc.description or exc.name, exc.code or 500)
