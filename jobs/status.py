"""What an operator checks at a glance: workers, queues, failures, budget, sweeps, riders, events.

Used by `flask --app app strava status`, the demo's closing report and the admin page.
`collect_status(svc)` gathers it as JSON-ready data, with the warnings of `jobs.status_text` (what
needs the operator now, each with the command that fixes it); `status_text.status_sections` words
the rest for a person (the admin page shows the same sections, in the same words).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import redis
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.scheduler import RQScheduler

import models
import reconcile
from config import Settings
from jobs import burst
from jobs.status_text import RIDER_STATES, status_warnings
from models import junk, overview
from services import QUEUES, Services
from services.diagnose import explain
from sync import sweeplock

STALE_AFTER = timedelta(days=2)
OVERDUE_AFTER = 60  # seconds a scheduled job may sit past its time before status says so
STUCK_AFTER = timedelta(hours=6)  # longer than any wait for budget within a day's windows
WEBHOOK_PATH = "/api/strava/webhook"
# The recovery pass (jobs/recovery.py) stamps this key with its start, by the services' clock.
RECOVERY_RAN_KEY = "strava-sync:recovery-ran"


def run_summary(run) -> dict:
    """A sync_run row as JSON-ready data."""
    data = dict(run._mapping)
    for key in ("started_at", "finished_at", "progress_at"):
        if data.get(key):
            data[key] = data[key].isoformat(timespec="seconds")
    return data


def _latest_failures(svc: Services, failed: FailedJobRegistry) -> list[dict]:
    latest = []
    for job in Worker.job_class.fetch_many(failed.get_job_ids(-5, -1), connection=svc.redis):
        if job is not None:
            result = job.latest_result()
            reason = (result.exc_string if result else "") or ""
            latest.append({"id": job.id, "func": job.func_name, "reason": reason.strip()[-300:]})
    return latest


def workers_listening(svc: Services, name: str) -> int:
    """How many workers take jobs from queue `name` (inline mode's own thread counts as one)."""
    if svc.inline:
        return int(bool(svc.runner) or bool(svc.settings.inline_worker))
    return len(Worker.all(queue=svc.queue(name)))


def _overdue(registry: ScheduledJobRegistry, now: datetime) -> tuple[int, float]:
    """How many scheduled jobs are past their time by over OVERDUE_AFTER, and the worst lateness."""
    late = registry.get_jobs_to_schedule(int(now.timestamp()) - OVERDUE_AFTER)
    if not late:
        return 0, 0.0
    return len(late), (now - registry.get_scheduled_time(late[0])).total_seconds()


def _queues(svc: Services, now: datetime) -> dict:
    result = {}
    for name in QUEUES:
        queue = svc.queue(name)
        failed, scheduled = FailedJobRegistry(queue=queue), ScheduledJobRegistry(queue=queue)
        overdue, late = _overdue(scheduled, now)
        workers = workers_listening(svc, name)
        # A scheduler holds this lock while it runs (one per queue among all the workers); the
        # inline thread schedules for itself.
        lock = RQScheduler.get_locking_key(name)
        result[name] = {
            "workers": workers,
            "scheduler": workers > 0 if svc.inline else bool(svc.redis.exists(lock)),
            "queued": queue.count,
            "started": StartedJobRegistry(queue=queue).count,
            "scheduled": scheduled.count,
            "overdue": overdue,
            "overdue_seconds": late,
            "failed": failed.count,
            "latest_failures": _latest_failures(svc, failed),
        }
    return result


def _riders(conn, now: datetime) -> dict:
    states, names, first = {}, {}, None
    for row in overview.rider_rows(conn):
        states[row.id] = overview.rider_state(row, now - STALE_AFTER)
        names[row.id] = {"id": row.id, "name": row.name, "athlete_id": row.athlete_id}
        if states[row.id] in ("current", "stale") and row.connected_at:
            first = min(first or row.connected_at, row.connected_at)
    counts = Counter(states.values())
    return {
        "counts": {state: counts.get(state, 0) for state in RIDER_STATES},
        "by_state": {s: [names[i] for i in sorted(states) if states[i] == s] for s in RIDER_STATES},
        "first_connected": first,
    }


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else max(0.0, (now - moment).total_seconds())


def _sweep_capacity(svc: Services, budget: dict, events_24h: dict) -> dict:
    """Riders beyond the sweep's 48-hour reach, given the last day's events (each a read)."""
    with svc.engine.connect() as conn:
        riders = models.count_connected(conn, None)
    realtime = sum(n for status, n in events_24h.items() if status != "ignored")
    beyond, needed = reconcile.sweep_capacity(
        riders,
        budget["read"]["limit_day"],
        realtime,
        reserve=svc.settings.reconcile_reserve,
        min_share=svc.settings.reconcile_min_share,
    )
    return {"riders_beyond": beyond, "read_limit_needed": needed}


def _full_sweep(svc: Services, now: datetime) -> dict:
    """The last full sweep (nightly or by hand) and, within the interval, why cron skips."""
    run = sweeplock.last_full_sweep(svc)
    if run is None:
        return {"last_full_sweep": None, "last_full_sweep_age_seconds": None, "nightly_skip": None}
    until = sweeplock.cron_waits_until(svc, run)
    skip = None
    if run.status != "running" and until and until > now:
        skip = sweeplock.waiting_sentence(run.id, run.trigger, until)
    return {
        "last_full_sweep": run_summary(run),
        "last_full_sweep_age_seconds": _age(run.started_at, now),
        "nightly_skip": skip,
    }


def collect_status(svc: Services, now: datetime | None = None) -> dict:
    """Everything an operator checks at a glance, as JSON-ready data."""
    now = now or svc.now()  # the one clock: scheduled jobs are queued by it too
    status = {"checked_at": now.isoformat(timespec="seconds")}
    with svc.engine.connect() as conn:
        nightly = overview.last_run(conn, "reconcile", overview.NIGHTLY_TRIGGERS)
        manual = overview.last_run(conn, "reconcile", ("command",))
        backfill = overview.last_run(conn, "backfill", ("command", "connect"))
        riders = _riders(conn, now)
        last_event = overview.last_event_at(conn)
        status |= {
            "application_inactive_at": models.get_setting(conn, "application_inactive_at"),
            "credentials_refused_at": models.get_setting(conn, "strava_credentials_refused_at"),
            "subscription_id": svc.subscription_id(),
            "callback_url": svc.settings.strava_callback_url,
            "subscribed_callback_url": models.get_setting(conn, "subscription_callback_url"),
            "expected_callback_url": expected_callback(svc.settings),
            "events_stuck": models.count_waiting_events(conn, now - STUCK_AFTER),
            "unconnected_events_today": junk.summary(conn, now.date()),
            "mode": "inline" if svc.inline else "workers",
            "events_24h": models.event_counts_since(conn, now - timedelta(days=1)),
            "last_event_at": last_event.isoformat(timespec="seconds") if last_event else None,
            "last_event_age_seconds": _age(last_event, now),
            "first_connected_age_seconds": _age(riders["first_connected"], now),
            "last_nightly_sweep": run_summary(nightly) if nightly else None,
            "last_manual_run": run_summary(manual) if manual else None,
            "last_backfill": run_summary(backfill) if backfill else None,
            "riders": riders["counts"],
            "riders_by_state": riders["by_state"],
        }
    status.update(_full_sweep(svc, now))
    try:
        status["last_work_run"] = burst.last_run(svc)
        status["last_work_run_age_seconds"] = _work_age(status["last_work_run"], now)
        status["queues"] = _queues(svc, now)
        status["last_recovery_age_seconds"] = _recovery_age(svc, now)
        status["budget"] = svc.budget.snapshot()
        status["sweep_capacity"] = _sweep_capacity(svc, status["budget"], status["events_24h"])
    except redis.RedisError as exc:
        status["redis"] = f"down: {explain(exc, svc.settings)}"  # for the operator: /admin, CLI
    status["warnings"] = status_warnings(status)
    return status


def _recovery_age(svc: Services, now: datetime) -> float | None:
    """Seconds since the last recovery pass began (None: none in the last day, or never)."""
    ran = svc.redis.get(RECOVERY_RAN_KEY)
    return max(now.timestamp() - float(ran), 0.0) if ran else None


def expected_callback(settings: Settings) -> str | None:
    """The callback URL a subscription of this app must have (None when it cannot be told)."""
    if settings.strava_callback_url:
        return settings.strava_callback_url
    return settings.public_url + WEBHOOK_PATH if settings.public_url else None


def _work_age(run: dict | None, now: datetime) -> float | None:
    return _age(datetime.fromisoformat(run["finished_at"]), now) if run else None
