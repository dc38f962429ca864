"""What an operator checks at a glance: workers, queues, failures, budget, sweeps, riders, events.

Used by `flask --app app strava status`, the demo's closing report and the admin page.
`collect_status(svc)` gathers it as JSON-ready data; `status_warnings(status)` says what needs the
operator now, each with the command that fixes it; `status_sections(status)` words the rest for a
person (the admin page shows the same sections, so both say the same things in the same words).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import redis
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.scheduler import RQScheduler

import models
import reconcile
from models import overview
from services import QUEUES, Services
from services.diagnose import START_WORKER
from sync import sweeplock

STALE_AFTER = timedelta(days=2)
QUIET_AFTER = timedelta(hours=24)  # no event for this long while riders are connected: warn
SWEEP_LATE_AFTER = timedelta(hours=36)  # a nightly sweep missed at least once: warn
OVERDUE_AFTER = 60  # seconds a scheduled job may sit past its time before status says so
RIDER_STATES = ("current", "stale", "needs reconnect", "deauthorized", "not connected")
SUBSCRIPTION_SHOW = "flask --app app strava subscription show"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 rider', '2 riders' (or the irregular plural given)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def duration(seconds: float) -> str:
    """A length of time in the largest unit that fits: '40 seconds', '2 minutes', '3 days'."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size or (unit == "minute" and seconds >= size):
            return plural(int(seconds // size), unit)
    return plural(int(seconds), "second")


def ago(seconds: float | None) -> str:
    """'never', 'just now', '2 minutes ago', '3 days ago'."""
    if seconds is None:
        return "never"
    return "just now" if seconds < 60 else f"{duration(seconds)} ago"


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
        return int(bool(svc.runner) or bool(svc.config.get("INLINE_WORKER", True)))
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
        reserve=svc.config["RECONCILE_RESERVE"],
        min_share=svc.config["RECONCILE_MIN_SHARE"],
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
    now = now or datetime.now(UTC)  # RQ schedules on the wall clock too
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
            "callback_url": svc.config.get("STRAVA_CALLBACK_URL"),
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
        status["queues"] = _queues(svc, now)
        status["budget"] = svc.budget.snapshot()
        status["sweep_capacity"] = _sweep_capacity(svc, status["budget"], status["events_24h"])
    except redis.RedisError as exc:
        status["redis"] = f"down: {type(exc).__name__}"
    status["warnings"] = status_warnings(status)
    return status


# -- what needs the operator now -----------------------------------------------------------------


def status_warnings(status: dict) -> list[str]:
    """What needs the operator now, each a sentence with what to do (the cron status reuses it)."""
    return _strava_warnings(status) + _worker_warnings(status) + _quiet_warnings(status)


def _strava_warnings(status: dict) -> list[str]:
    found = []
    inactive = status["application_inactive_at"]
    if inactive:
        found.append(
            f"Strava answered 'application inactive' at {inactive}; nothing works "
            "until the application's owner renews its Strava subscription"
        )
    refused = status.get("credentials_refused_at")
    if refused:
        found.append(
            f"Strava refused this application's credentials at {refused}; check "
            "STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET (no rider is marked revoked for it)"
        )
    return found


def _worker_warnings(status: dict) -> list[str]:
    found = []
    for name, q in status.get("queues", {}).items():
        late = ""
        if q["overdue"]:
            jobs = plural(q["overdue"], "scheduled job")
            late = f" ({jobs} overdue by up to {duration(q['overdue_seconds'])})"
        if not q["workers"]:
            found.append(f"no worker is listening on queue {name}: start one with {START_WORKER}")
        elif not q["scheduler"]:
            found.append(
                f"no worker on queue {name} runs the scheduler, so retries and jobs waiting for "
                f"the rate limit never start{late}: start the workers with --with-scheduler, "
                f"as in {START_WORKER}"
            )
        elif late:
            found.append(
                f"the scheduler on queue {name} is behind{late}: restart the workers "
                f"({START_WORKER})"
            )
    return found


def _connected(status: dict) -> str:
    n = status["riders"]["current"] + status["riders"]["stale"]
    return f"{n} rider is connected" if n == 1 else f"{n} riders are connected"


def _quiet_warnings(status: dict) -> list[str]:
    """No event for a day, or no full sweep for a day and a half, counted from the first rider."""
    since_first = status["first_connected_age_seconds"]
    if since_first is None:
        return []  # nobody is connected: silence is expected
    found = []
    event_age = status["last_event_age_seconds"]
    quiet = since_first if event_age is None else event_age
    if quiet > QUIET_AFTER.total_seconds():
        found.append(
            f"no webhook event for {duration(quiet)} while {_connected(status)}: the "
            f"subscription may be gone; check it with {SUBSCRIPTION_SHOW}"
        )
    sweep_age = status["last_full_sweep_age_seconds"]
    late = since_first if sweep_age is None else sweep_age
    if late > SWEEP_LATE_AFTER.total_seconds():
        found.append(
            f"no full sweep for {duration(late)}: GitHub disables a scheduled workflow after 60 "
            "days without a commit; enable 'Nightly reconciliation' in the repository's Actions "
            "tab, or run flask --app app strava reconcile"
        )
    return found


# -- the rest, in words ---------------------------------------------------------------------------


def _started_ago(run: dict, status: dict) -> str:
    started = datetime.fromisoformat(run["started_at"])
    return ago(_age(started, datetime.fromisoformat(status["checked_at"])))


def run_line(label: str, run: dict | None, status: dict) -> str:
    """One sync_run as one short line ("never" when there was none)."""
    if not run:
        return f"{label}: never"
    dry = ", dry run: nothing written" if run["dry_run"] else ""
    unannounced = run["activities_unannounced"]
    return (
        f"{label}: #{run['id']} {run['status']}, started {_started_ago(run, status)}{dry}; "
        f"{run['riders_done']}/{plural(run['riders_planned'], 'rider')}"
        + (
            f" ({run['riders_deferred']} deferred to later nights)"
            if run["riders_deferred"]
            else ""
        )
        + ", "
        f"{run['activities_created']} created, {run['activities_updated']} updated, "
        f"{run['activities_deleted']} deleted"
        + (f" ({unannounced} never announced by an event)" if unannounced else "")
    )


def _queue_lines(status: dict) -> list[str]:
    lines = [f"mode: {status.get('mode', 'workers')}"]
    for name, q in status.get("queues", {}).items():
        scheduler = "scheduler running" if q["scheduler"] else "no scheduler"
        lines.append(
            f"queue {name}: {plural(q['workers'], 'worker')} listening, {scheduler}; "
            f"{q['queued']} queued, {q['started']} running, {q['scheduled']} scheduled, "
            f"{q['failed']} failed"
        )
        lines += [f"  failed {f['func']}: {f['reason'].splitlines()[-1] if f['reason'] else '?'}"
                  for f in q["latest_failures"]]  # fmt: skip
    if "redis" in status:
        lines.append(f"redis: {status['redis']}")
    return lines


def _event_lines(status: dict) -> list[str]:
    events = status["events_24h"]
    listed = ", ".join(f"{v} {k}" for k, v in sorted(events.items())) or "none"
    subscription = status["subscription_id"]
    callback = status.get("callback_url")
    return [
        f"subscription: {subscription or 'none'}"
        + (f" (callback {callback})" if subscription and callback else ""),
        f"webhook events in the last 24 hours: {listed}",
        f"last event received: {ago(status.get('last_event_age_seconds'))}",
    ]


def _rider_lines(status: dict) -> list[str]:
    counts = status["riders"]
    lines = ["riders: " + ", ".join(f"{counts[s]} {s}" for s in RIDER_STATES)]
    if "sweep_capacity" in status:
        c = status["sweep_capacity"]
        lines.append(
            f"riders beyond the nightly sweep's reach: {c['riders_beyond']} "
            f"(all fit with a read limit of {c['read_limit_needed']} a day)"
        )
    return lines


def _budget_lines(status: dict) -> list[str]:
    lines = []
    for bucket in ("overall", "read"):
        b = status.get("budget", {}).get(bucket)
        if b:
            resets = b["window_resets_at"][11:16]
            lines.append(
                f"{bucket} requests: {b['used_15min']} of {b['limit_15min']} in this 15-minute "
                f"window (resets {resets} UTC), {b['used_day']} of {b['limit_day']} today"
            )
    return lines


def _sweep_lines(status: dict) -> list[str]:
    lines = [run_line("last full sweep", status["last_full_sweep"], status)]
    if status["nightly_skip"]:
        lines.append(status["nightly_skip"])
    lines.append(run_line("last nightly sweep", status["last_nightly_sweep"], status))
    lines.append(run_line("last manual run", status["last_manual_run"], status))
    lines.append(run_line("last backfill", status.get("last_backfill"), status))
    return lines


def status_sections(status: dict) -> list[tuple[str, list[str]]]:
    """The status for a person, as (heading, lines) in the order the admin page shows them."""
    return [
        ("Workers", _queue_lines(status)),
        ("Events", _event_lines(status)),
        ("Riders", _rider_lines(status)),
        ("Strava requests", _budget_lines(status)),
        ("Sweeps", _sweep_lines(status)),
    ]


def format_status(status: dict) -> list[str]:
    """The status as lines for a person, warnings first."""
    lines = [f"WARNING: {w}" for w in status.get("warnings", [])]
    for _, section in status_sections(status):
        lines += section
    return lines
