"""The catch-up job: one list request serves an athlete's events beyond their allowance.

See `allowance`. The job lists the athlete's most recent activities once (up to 200, one read),
stores what it finds, and closes the activity events that waited for it: an activity Strava listed
is done; a `create` for one it did not list is failed (a made-up id, or one the nightly sweep
will repair); other events for an activity Strava does not list have nothing left to do.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import models
import reconcile
import services
from jobs import pacing
from jobs.queueing import enqueue
from services import Services
from strava_client import Unauthorized
from strava_client.ratebudget import NoPermit
from sync import allowance

log = logging.getLogger(__name__)

NOT_LISTED = (
    "not among the athlete's recent activities on Strava; "
    "the nightly sweep will pick the activity up if it exists"
)


def catch_up_athlete(athlete_id: int) -> str:
    """List the athlete's recent activities once and close the events that waited for it."""
    svc = services.current()
    at = allowance.catch_up_time(svc, athlete_id)
    if at is not None:  # run early (a restarted scheduler): keep to one list an interval
        enqueue(svc, catch_up_athlete, athlete_id, at=at)
        return f"too early: moved to {at.isoformat()}"
    waiting = allowance.start_catch_up(svc, athlete_id)
    try:
        compared = _store_listed(svc, athlete_id)
    except NoPermit as exc:
        if allowance.put_back(svc, athlete_id, waiting):
            at = pacing.release_at(svc, _utc(exc.retry_at))  # its turn, not the reset's herd
            enqueue(svc, catch_up_athlete, athlete_id, at=at)
        return "waiting for rate budget"
    except Unauthorized as exc:
        _close(svc, athlete_id, waiting, "failed", str(exc))
        return "failed: Strava refused the rider's token"
    if compared is None:  # never connected, or disconnected before or while Strava answered
        _close(svc, athlete_id, waiting, "ignored", f"athlete {athlete_id} not connected")
        return "ignored: athlete not connected"
    listed = set(compared.listing.theirs)
    _close_listed(svc, athlete_id, waiting, listed)
    return f"listed {len(listed)}; closed the events of {len(waiting)} waiting activities"


def _store_listed(svc: Services, athlete_id: int) -> reconcile.Comparison | None:
    """List the athlete's recent activities once and store them (None: not connected)."""
    connection = reconcile.live_connection(svc, athlete_id=athlete_id)
    if connection is None:
        return None
    return reconcile.store_recent(svc, connection)


def _utc(when: float) -> datetime:
    return datetime.fromtimestamp(when, UTC)


def _events(conn, athlete_id: int, activity_id: int):
    events = models.open_events(conn, "activity", activity_id)
    return [e for e in events if e.owner_id == athlete_id]


def _close_listed(svc: Services, athlete_id: int, waiting: set[int], listed: set[int]) -> None:
    with svc.engine.begin() as conn:
        for activity_id in sorted(waiting):
            events = _events(conn, athlete_id, activity_id)
            done = activity_id in listed or all(e.aspect_type != "create" for e in events)
            status, error = ("done", None) if done else ("failed", NOT_LISTED)
            models.set_event_status(conn, [e.id for e in events], status, error, now=svc.now())


def _close(svc: Services, athlete_id: int, waiting: set[int], status: str, error: str) -> None:
    with svc.engine.begin() as conn:
        for activity_id in sorted(waiting):
            events = _events(conn, athlete_id, activity_id)
            models.set_event_status(conn, [e.id for e in events], status, error, now=svc.now())
