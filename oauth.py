"""The "Connect with Strava" flow: the authorize redirect and the callback."""

from __future__ import annotations

import hmac
import logging
import secrets
from urllib.parse import urlencode

import redis
from flask import Blueprint, redirect, request, session, url_for

import jobs
import models
import pages
from extension import current_services
from strava_client import StravaError

log = logging.getLogger(__name__)
bp = Blueprint("oauth", __name__)

REQUESTED_SCOPE = "read,activity:read_all"
ACTIVITY_SCOPES = {"activity:read", "activity:read_all"}


def _page(title: str, message: str, status: int = 200):
    return pages.message_page(title, message, status)


@bp.get("/strava/connect")
def connect():
    """Send the rider to Strava to authorize us, remembering a state to check on return."""
    svc = current_services()
    if not svc.config.get("STRAVA_CLIENT_ID"):
        return _page("Strava is not configured", "STRAVA_CLIENT_ID is not set.", 503)
    rider_id = request.args.get("rider_id")
    if rider_id is not None:
        if not rider_id.isdigit():
            return _page("Unknown rider", "rider_id must be a number.", 400)
        with svc.engine.connect() as conn:
            if models.get_rider(conn, int(rider_id)) is None:
                return _page("Unknown rider", f"There is no rider {rider_id}.", 400)
    state = secrets.token_urlsafe(24)
    session["strava_state"] = state
    session["strava_rider_id"] = int(rider_id) if rider_id else None
    query = urlencode(
        {
            "client_id": svc.config["STRAVA_CLIENT_ID"],
            "redirect_uri": url_for("oauth.callback", _external=True),
            "response_type": "code",
            "approval_prompt": "auto",
            "scope": REQUESTED_SCOPE,
            "state": state,
        }
    )
    return redirect(f"{svc.config['STRAVA_OAUTH_URL']}/authorize?{query}")


@bp.get("/strava/callback")
def callback():
    """Check what Strava sent back, store the connection and queue the rider's backfill."""
    expected = session.pop("strava_state", None)
    link_rider = session.pop("strava_rider_id", None)
    given = request.args.get("state", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return _page("Connection failed", "This link is stale or was not started here.", 400)
    if request.args.get("error"):
        return _page("Connection cancelled", "Strava access was not granted.", 400)
    scope = request.args.get("scope", "")
    if not ACTIVITY_SCOPES & set(scope.split(",")):
        return _page(
            "Connection refused",
            'Please allow access to your activities ("View data about your activities"); '
            "without it we cannot see your rides.",
            400,
        )
    code = request.args.get("code")
    if not code:
        return _page("Connection failed", "Strava sent no authorization code.", 400)
    svc = current_services()
    try:
        tokens = svc.client.exchange_code(code)
    except StravaError as exc:
        log.warning("code exchange refused: %s", exc)
        return _page("Connection failed", "Strava did not accept the authorization.", 502)
    return _store_connection(svc, tokens, scope, link_rider)


def _store_connection(svc, tokens: dict, scope: str, link_rider: int | None):
    athlete = tokens.get("athlete") or {}
    athlete_id = int(athlete["id"])
    name = " ".join(p for p in (athlete.get("firstname"), athlete.get("lastname")) if p)
    name = name or f"Strava athlete {athlete_id}"
    stored = {
        "access_token": svc.cipher.encrypt(tokens["access_token"]),
        "refresh_token": svc.cipher.encrypt(tokens["refresh_token"]),
        "expires_at": int(tokens["expires_at"]),
    }
    with svc.engine.begin() as conn:
        existing = models.get_connection_by_athlete(conn, athlete_id)
        if existing and link_rider and existing.rider_id != link_rider:
            return _page(
                "Already connected",
                f"{name} is already connected to another rider.",
                409,
            )
        rider_id = link_rider or (existing.rider_id if existing else None)
        rider_id = rider_id or models.create_rider(conn, name)
        models.save_connection(conn, rider_id, athlete_id, stored, scope)
    try:
        jobs.queue_backfill(svc, rider_id)
    except redis.RedisError as exc:
        log.warning("rider %s connected but the backfill was not queued: %s", rider_id, exc)
    return pages.sign_in(rider_id, f"{name} is connected (Strava athlete {athlete_id}).")
