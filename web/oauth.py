"""The "Connect with Strava" flow: the authorize redirect and the callback."""

from __future__ import annotations

import hmac
import logging
import secrets
from urllib.parse import urlencode

import redis
from flask import Blueprint, redirect, request, session, url_for

import models
from jobs import backfill
from strava_client import StravaError, Unreachable
from sync import invites
from web import pages
from web.extension import current_services

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
    refused = _check_invite(svc)
    if refused is not None:
        return refused
    state = secrets.token_urlsafe(24)
    session["strava_state"] = state
    session["strava_invite"] = request.args.get("invite")
    session["strava_reconnect"] = _own_rider()
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


def _check_invite(svc):
    """The page refusing this connect link, or None when it may go on to Strava."""
    if "rider_id" in request.args:
        return _page(
            "Invite needed",
            "Connect links no longer name a rider; ask the club for an invite link.",
            400,
        )
    token = request.args.get("invite")
    if token is None:
        if svc.config.get("CONNECT_REQUIRES_INVITE") and _own_rider() is None:
            return _page(
                "Invite needed",
                "Connecting is by invitation: ask the club for an invite link.",
                403,
            )
        return None
    try:
        invites.verify(svc, token)
    except invites.NoSecretKey as exc:
        log.error("%s", exc)
        return _page("Invites are not set up", "The club has not finished setting up.", 503)
    except invites.InviteError as exc:
        return _page("Invite not valid", str(exc).capitalize() + ".", 400)
    return None


def _own_rider() -> int | None:
    """The signed-in rider with a connection: they may always reconnect their own athlete."""
    rider, connection = pages.signed_in_connection()
    return rider.id if connection is not None else None


@bp.get("/strava/callback")
def callback():
    """Check what Strava sent back, store the connection and queue the rider's backfill."""
    expected = session.pop("strava_state", None)
    invite_token = session.pop("strava_invite", None)
    reconnect = session.pop("strava_reconnect", None)
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
    invite = None
    if invite_token is not None:
        try:
            invite = invites.verify(svc, invite_token)
        except (invites.InviteError, invites.NoSecretKey) as exc:
            return _page("Invite not valid", str(exc).capitalize() + ".", 400)
    try:
        grant = _grant(svc.client.exchange_code(code))
    except Unreachable as exc:
        log.warning("code exchange failed: %s", exc)
        return _unreachable()
    except StravaError as exc:
        log.warning("code exchange refused: %s", exc)
        if exc.status is None or exc.status >= 500:
            return _unreachable()
        return _page("Connection failed", "Strava did not accept the authorization.", 502)
    return _store_connection(svc, grant, scope, invite, reconnect)


def _unreachable():
    return _page("Connection failed", "Strava could not be reached; please try again.", 502)


def _grant(tokens) -> dict:
    """The token answer checked at the boundary: athlete id and name, tokens, expiry."""
    try:
        athlete = tokens["athlete"]
        athlete_id = athlete["id"]
        if isinstance(athlete_id, bool) or not isinstance(athlete_id, int):
            raise TypeError("athlete id is not an integer")
        names = (athlete.get("firstname"), athlete.get("lastname"))
        grant = {
            "athlete_id": athlete_id,
            "name": " ".join(p for p in names if isinstance(p, str) and p),
            "access_token": str(tokens["access_token"]),
            "refresh_token": str(tokens["refresh_token"]),
            "expires_at": int(tokens["expires_at"]),
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"code exchange: Strava's answer is incomplete ({type(exc).__name__})"
        raise StravaError(what) from None
    return grant


def _refusal(conn, svc, athlete_id: int, invite, reconnect: int | None):
    """The page refusing to link this athlete, or None when the link may be made."""
    existing = models.get_connection_by_athlete(conn, athlete_id)
    if invite is None:
        own = reconnect is not None and existing is not None and existing.rider_id == reconnect
        if svc.config.get("CONNECT_REQUIRES_INVITE") and not own:
            return _page(
                "Invite needed",
                "Without an invite you can reconnect only the Strava account you signed in "
                "with: ask the club for an invite link.",
                403,
            )
        return None
    if existing and existing.rider_id != invite.rider_id:
        return _page(
            "Already connected", "This athlete is already connected to another rider.", 409
        )
    if invites.other_athlete(conn, invite, athlete_id):
        # Kept unused: the invited rider may still open it with their own Strava account.
        return _page(
            "Wrong Strava account",
            "This invite is for a rider who is connected with another Strava account: sign in "
            "to Strava with that account, or ask the club for a new invite.",
            409,
        )
    if not invites.consume(conn, invite, invites.now(svc)):
        return _page("Invite not valid", "This invite has already been used.", 400)
    return None


def _store_connection(svc, grant: dict, scope: str, invite, reconnect: int | None):
    athlete_id = grant["athlete_id"]
    name = grant["name"] or f"Strava athlete {athlete_id}"
    stored = {
        "access_token": svc.cipher.encrypt(grant["access_token"]),
        "refresh_token": svc.cipher.encrypt(grant["refresh_token"]),
        "expires_at": grant["expires_at"],
    }
    with svc.engine.begin() as conn:
        refused = _refusal(conn, svc, athlete_id, invite, reconnect)
        if refused is not None:
            return refused
        existing = models.get_connection_by_athlete(conn, athlete_id)
        rider_id = invite.rider_id if invite else (existing.rider_id if existing else None)
        rider_id = rider_id or models.create_rider(conn, name)
        models.save_connection(conn, rider_id, athlete_id, stored, scope)
    try:
        backfill.queue_backfill(svc, rider_id)
    except redis.RedisError as exc:
        log.warning("rider %s connected but the backfill was not queued: %s", rider_id, exc)
    return pages.sign_in(rider_id, f"{name} is connected (Strava athlete {athlete_id}).")
