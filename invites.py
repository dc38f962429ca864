"""STUB, to be replaced by the #11 engineer's real invites module when the branches merge.

Only the signature is the contract: `issue_invite(svc, rider_id, hours) -> url`. This stand-in
stores a random single-use nonce in `strava_invite` and returns the connect URL carrying it; it
does not sign anything, and `/strava/connect` on this branch does not read `invite=` yet.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import models


def issue_invite(svc, rider_id: int, hours: int) -> str:
    """STUB: store an invite for an existing rider and return its connect URL (path only)."""
    nonce = secrets.token_urlsafe(24)
    created = models.now()
    with svc.engine.begin() as conn:
        conn.execute(
            models.strava_invite.insert().values(
                id=nonce,
                rider_id=rider_id,
                created_at=created,
                expires_at=created + timedelta(hours=hours),
            )
        )
    return f"/strava/connect?invite={nonce}"
