"""One sweep at a time, and full sweeps from cron no more often than RECONCILE_MIN_INTERVAL_HOURS.

The running sweep is the `sync_run` named by the `sweep_run_id` setting while its status is
`running`; the recovery pass closes a run whose jobs vanished, so that state cannot last for good.
Planning happens under a short Redis lock with an expiry, so two cron calls at once cannot both
find no sweep running and both plan: the second waits for the first to record its run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import models
from models import overview

SETTING = "sweep_run_id"
PLANNING_LOCK = "strava-sync:sweep-planning"
PLANNING_TTL = 120  # seconds: planning takes well under this; a crashed planner's lock lapses


def is_full_sweep(dry_run: bool, max_riders: int | None, rider_id: int | None) -> bool:
    """Whether a sweep request counts as a full sweep (dry runs and one-rider checks never do)."""
    return not dry_run and rider_id is None and max_riders != 0


@contextmanager
def planning(svc) -> Iterator[None]:
    """Hold the planning lock (waiting for another planner to finish, never forever)."""
    lock = svc.redis.lock(PLANNING_LOCK, timeout=PLANNING_TTL, blocking_timeout=PLANNING_TTL)
    if not lock.acquire():
        raise TimeoutError("another sweep is still being planned")
    try:
        yield
    finally:
        lock.release()


def last_full_sweep(svc):
    """The sync_run of the last full sweep, whoever started it (cron or a person), or None."""
    with svc.engine.connect() as conn:
        run_id = models.get_setting(conn, SETTING)
        return models.get_run(conn, int(run_id)) if run_id else None


def cron_waits_until(svc, run) -> datetime | None:
    """Until when the cron's sweep is skipped after a full sweep (None: the interval is off).

    A full sweep started by hand counts like the nightly one: it read every rider's activities
    just as the nightly one would, so a second read within the interval would spend the budget
    for nothing.
    """
    hours = svc.settings.reconcile_min_interval_hours
    return run.started_at + timedelta(hours=hours) if hours else None


def waiting_sentence(run_id: int, trigger: str, until: datetime) -> str:
    """Why the nightly sweep is skipped, in the words both `strava status` and the cron answer."""
    nightly = trigger in overview.NIGHTLY_TRIGGERS
    who = "the last nightly sweep" if nightly else f"a full sweep started by {trigger}"
    return (
        f"the nightly sweep is skipped until {until:%Y-%m-%d %H:%M} UTC: {who} (run #{run_id}) "
        "already read every rider's activities (RECONCILE_MIN_INTERVAL_HOURS)"
    )


def refusal(svc, trigger: str, now: datetime) -> dict | None:
    """Why a full sweep may not start now: {"run_id", "already_running" or "too_soon"}, or None.

    The minimum interval holds for cron only: a person running `strava reconcile` means it.
    """
    run = last_full_sweep(svc)
    if run is None:
        return None
    if run.status == "running":
        return {"run_id": run.id, "already_running": True, "dry_run": False}
    until = cron_waits_until(svc, run)
    if trigger == "cron" and until and until > now:
        return {
            "run_id": run.id,
            "too_soon": True,
            "dry_run": False,
            "trigger": run.trigger,
            "until": until.isoformat(timespec="seconds"),
            "reason": waiting_sentence(run.id, run.trigger, until),
        }
    return None


def record(conn, run_id: int) -> None:
    """Remember a full sweep's run as the one later requests are measured against."""
    models.set_setting(conn, SETTING, str(run_id))
