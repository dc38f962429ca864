"""A rider's "Disconnect": revoke our access at Strava, then purge their Strava data at once.

The rider asked for their data to go, so proof of revocation is not needed here: a grant Strava
already refuses (a refused token, a refused refresh, a connection already waiting for a reconnect)
is simply not revoked again. A refusal that names our application is a configuration error:
nothing is purged, since the grant may well be live.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import models
from strava_client import NotFound, Unauthorized, tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Disconnected:
    """What Disconnect did: activities purged, and whether Strava still held a grant to revoke."""

    deleted: int
    revoked: bool


def revoke_at_strava(svc, rider_id: int) -> bool:
    """Ask Strava to revoke our grant; False when Strava had already ended it.

    Uses `/oauth/revoke` or `/oauth/deauthorize`, by setting. Raises CredentialsRefused when Strava
    refuses our application; any other failure propagates (StravaError, requests' errors) and the
    caller changes nothing.
    """
    try:
        token = tokens.access_token(svc, rider_id)
        if svc.config.get("STRAVA_REVOKE_ENDPOINT") == "revoke":
            svc.client.revoke(token)
        else:
            svc.client.deauthorize(token)
    except tokens.ReconnectNeeded:
        log.info("rider %s: Strava no longer takes our refresh token; nothing to revoke", rider_id)
        return False
    except (Unauthorized, NotFound) as exc:
        if tokens.names_application(exc):
            raise tokens.application_refused(svc, exc) from None
        log.info("rider %s: Strava already refuses our grant (%s)", rider_id, type(exc).__name__)
        return False
    return True


def disconnect(svc, rider_id: int) -> Disconnected:
    """Revoke and purge a rider's Strava data."""
    with svc.engine.connect() as conn:
        row = models.get_connection(conn, rider_id)
    if row is None or row.deauthorized_at is not None:
        return Disconnected(0, revoked=False)
    revoked = row.refresh_token is not None and revoke_at_strava(svc, rider_id)
    with svc.engine.begin() as conn:
        deleted = models.deauthorize(conn, rider_id)
        models.update_connection(conn, rider_id, needs_reconnect_since=None)
    log.info("rider %s disconnected: %d activities purged", rider_id, deleted)
    return Disconnected(deleted, revoked)
