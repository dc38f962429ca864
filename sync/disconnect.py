"""A rider's "Disconnect": revoke our access at Strava, then purge their Strava data at once."""

from __future__ import annotations

import logging

import models
from strava_client import NotFound, Unauthorized, tokens

log = logging.getLogger(__name__)


def revoke_at_strava(svc, rider_id: int) -> None:
    """Ask Strava to revoke our grant (`/oauth/revoke` or `/oauth/deauthorize`, by setting).

    A token Strava already refuses means the grant is gone: nothing left to revoke. Any other
    failure propagates (StravaError, requests' errors) and the caller changes nothing.
    """
    try:
        token = tokens.access_token(svc, rider_id)
        if svc.settings.strava_revoke_endpoint == "revoke":
            svc.client.revoke(token)
        else:
            svc.client.deauthorize(token)
    except (Unauthorized, NotFound) as exc:
        log.info("rider %s: Strava already refuses our grant (%s)", rider_id, type(exc).__name__)


def disconnect(svc, rider_id: int) -> int:
    """Revoke and purge a rider's Strava data; returns how many activities were deleted."""
    with svc.engine.connect() as conn:
        row = models.get_connection(conn, rider_id)
    if row is None or row.deauthorized_at is not None:
        return 0
    if row.refresh_token is not None:
        revoke_at_strava(svc, rider_id)
    with svc.engine.begin() as conn:
        deleted = models.deauthorize(conn, rider_id, now=svc.now())
        models.update_connection(conn, rider_id, needs_reconnect_since=None)
    log.info("rider %s disconnected: %d activities purged", rider_id, deleted)
    return deleted
