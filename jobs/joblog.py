"""What workers tell the operator: one log line per job outcome, and a dry run's differences.

Outcome lines name ids and results only ("activity 123 of athlete 4: updated"), never a token:
a failure is logged by its exception type, or a StravaError's own message (which names no token).
"""

from __future__ import annotations

import functools
import json
import logging

from services import Services
from strava_client import StravaError

log = logging.getLogger("jobs")
DIFFERENCES_TTL = 7 * 86400
DIFFERENCES_KEPT = 500  # a dry run lists at most this many differing activities


def _reason(exc: Exception) -> str:
    return str(exc)[:200] if isinstance(exc, StravaError) else type(exc).__name__


def logged(describe):
    """Decorate a job: log `describe(*args)` and its outcome in one line, failures included."""

    def wrap(func):
        @functools.wraps(func)
        def job(*args, **kwargs):
            subject = describe(*args)
            try:
                outcome = func(*args, **kwargs)
            except Exception as exc:
                log.warning("%s: failed (%s)", subject, _reason(exc))
                raise
            log.info("%s: %s", subject, _outcome(outcome))
            return outcome

        return job

    return wrap


def _outcome(outcome) -> str:
    if isinstance(outcome, dict):
        return ", ".join(f"{k.removeprefix('activities_')} {v}" for k, v in outcome.items())
    return str(outcome)


def _key(run_id: int) -> str:
    return f"strava-sync:run:{run_id}:differences"


def note_differences(svc: Services, run_id: int, rider_id: int, changes) -> None:
    """Remember what a dry run found for one rider (activity ids and how they differ)."""
    found = [("created", v["id"]) for v in changes.created]
    found += [("updated", v["id"]) for v in changes.updated]
    found += [("deleted", i) for i in changes.deleted]
    if not found:
        return
    rows = [json.dumps({"rider_id": rider_id, "change": c, "activity_id": i}) for c, i in found]
    pipe = svc.redis.pipeline()
    pipe.rpush(_key(run_id), *rows)
    pipe.ltrim(_key(run_id), 0, DIFFERENCES_KEPT - 1)
    pipe.expire(_key(run_id), DIFFERENCES_TTL)
    pipe.execute()


def differences(svc: Services, run_id: int) -> list[dict]:
    """What a dry run found: {rider_id, change, activity_id} per differing activity."""
    return [json.loads(r) for r in svc.redis.lrange(_key(run_id), 0, -1)]
