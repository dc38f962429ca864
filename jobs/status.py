"""What an operator checks at a glance: workers, queues, failures, budget, sweeps, riders, events.

Used by `flask --app app strava status`, the demo's closing report and the admin page.
`collect_status(svc)` gathers it as JSON-ready data; `format_status(status)` words it for a person,
warnings first.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import redis
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

import models
import reconcile
from models import junk, overview
from services import QUEUES, Services
from services.diagnose import START_WORKER, explain

STALE_AFTER = timedelta(days=2)
QUIET_AFTER = timedelta(hours=24)  # no event for this long while riders are connected: warn
RIDER_STATES = ("current", "stale", "needs reconnect", "deauthorized", "not connected")


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


def _queues(svc: Services) -> dict:
    result = {}
    for name in QUEUES:
        queue = svc.queue(name)
        failed = FailedJobRegistry(queue=queue)
        result[name] = {
            "workers": workers_listening(svc, name),
            "queued": queue.count,
            "started": StartedJobRegistry(queue=queue).count,
            "scheduled": ScheduledJobRegistry(queue=queue).count,
            "failed": failed.count,
            "latest_failures": _latest_failures(svc, failed),
        }
    return result


def _riders(conn, now: datetime) -> dict:
    states = {}
    for row in overview.rider_rows(conn):
        states[row.id] = overview.rider_state(row, now - STALE_AFTER)
    counts = Counter(states.values())
    return {
        "counts": {state: counts.get(state, 0) for state in RIDER_STATES},
        "by_state": {s: sorted(i for i, v in states.items() if v == s) for s in RIDER_STATES},
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


def _today(svc: Services):
    """The UTC day by the services' clock (the webhook counts junk events by it)."""
    return datetime.fromtimestamp(svc.clock(), UTC).date()


def collect_status(svc: Services) -> dict:
    """Everything an operator checks at a glance, as JSON-ready data."""
    now = datetime.now(UTC)
    with svc.engine.connect() as conn:
        nightly = overview.last_run(conn, "reconcile", overview.NIGHTLY_TRIGGERS)
        manual = overview.last_run(conn, "reconcile", ("command",))
        backfill = overview.last_run(conn, "backfill", ("command", "connect"))
        riders = _riders(conn, now)
        last_event = overview.last_event_at(conn)
        status = {
            "application_inactive_at": models.get_setting(conn, "application_inactive_at"),
            "subscription_id": svc.subscription_id(),
            "callback_url": svc.config.get("STRAVA_CALLBACK_URL"),
            "mode": "inline" if svc.inline else "workers",
            "events_24h": models.event_counts_since(conn, now - timedelta(days=1)),
            "last_event_at": last_event.isoformat(timespec="seconds") if last_event else None,
            "last_event_age_seconds": _age(last_event, now),
            "last_nightly_sweep": run_summary(nightly) if nightly else None,
            "last_manual_run": run_summary(manual) if manual else None,
            "last_backfill": run_summary(backfill) if backfill else None,
            "riders": riders["counts"],
            "riders_by_state": riders["by_state"],
            "credentials_refused_at": models.get_setting(conn, "strava_credentials_refused_at"),
            "unconnected_events_today": junk.summary(conn, _today(svc)),
        }
    try:
        status["queues"] = _queues(svc)
        status["budget"] = svc.budget.snapshot()
        status["sweep_capacity"] = _sweep_capacity(svc, status["budget"], status["events_24h"])
    except redis.RedisError as exc:
        status["redis"] = f"down: {explain(exc, svc.config)}"  # for the operator: /admin, CLI
    status["warnings"] = warnings(status)
    _keep_older_keys(status)
    return status


def _keep_older_keys(status: dict) -> None:
    """The keys pages written before this layout read (no longer shown by format_status)."""
    runs = [r for r in (status["last_nightly_sweep"], status["last_manual_run"]) if r]
    latest = max(runs, key=lambda r: r["id"], default=None)
    status["last_sweep"] = latest
    nightly = status["last_nightly_sweep"]
    status["unannounced_recent_sweeps"] = nightly["activities_unannounced"] if nightly else 0
    status["stale_riders"] = status["riders_by_state"]["stale"]
    status["deauthorized_riders"] = status["riders_by_state"]["deauthorized"]


def warnings(status: dict) -> list[str]:
    """What needs the operator now, each a sentence with what to do."""
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
    for name, q in status.get("queues", {}).items():
        if not q["workers"]:
            found.append(f"no worker is listening on queue {name}: start one with {START_WORKER}")
    connected = status["riders"]["current"] + status["riders"]["stale"]
    age = status["last_event_age_seconds"]
    if connected and (age is None or age > QUIET_AFTER.total_seconds()):
        found.append(
            f"no webhook event for 24 h while {connected} riders are connected: the subscription "
            "may be gone; check it with flask --app app strava subscription show"
        )
    return found


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return f"{seconds / 3600:.1f} h ago"


def run_line(label: str, run: dict | None) -> str:
    """One sync_run summary line ("never" when there was none)."""
    if not run:
        return f"{label}: never"
    dry = " (dry run: nothing written)" if run["dry_run"] else ""
    return (
        f"{label}: #{run['id']} {run['status']} at {run['started_at']}{dry}: "
        f"{run['riders_done']}/{run['riders_planned']} riders, "
        f"{run['riders_deferred']} deferred, {run['activities_created']} created, "
        f"{run['activities_updated']} updated, {run['activities_deleted']} deleted, "
        f"{run['activities_unannounced']} never announced by an event"
    )


def _queue_lines(status: dict) -> list[str]:
    lines = []
    for name, q in status.get("queues", {}).items():
        workers = f"{q['workers']} worker{'' if q['workers'] == 1 else 's'}"
        lines.append(
            f"queue {name}: {q['queued']} queued, {q['started']} running, "
            f"{q['scheduled']} scheduled, {q['failed']} failed; {workers} listening"
        )
        lines += [f"  failed {f['func']}: {f['reason'].splitlines()[-1] if f['reason'] else '?'}"
                  for f in q["latest_failures"]]  # fmt: skip
    return lines


def _budget_lines(status: dict) -> list[str]:
    lines = []
    for bucket in ("overall", "read"):
        b = status.get("budget", {}).get(bucket)
        if b:
            lines.append(
                f"budget {bucket}: {b['used_15min']}/{b['limit_15min']} this window "
                f"(resets {b['window_resets_at']}), {b['used_day']}/{b['limit_day']} today"
            )
    return lines


def format_status(status: dict) -> list[str]:
    """The status as lines for a person, warnings first."""
    lines = [f"WARNING: {w}" for w in status.get("warnings", [])]
    lines.append(f"subscription: {status['subscription_id'] or 'none'}")
    lines.append(f"mode: {status.get('mode', 'workers')}")
    events = status["events_24h"]
    lines.append(
        "events (24 h): " + (", ".join(f"{k} {v}" for k, v in sorted(events.items())) or "none")
    )
    lines.append(f"last event received: {_hours(status.get('last_event_age_seconds'))}")
    lines += _queue_lines(status) + _budget_lines(status)
    if "redis" in status:
        lines.append(f"redis: {status['redis']}")
    lines.append(run_line("last nightly sweep", status["last_nightly_sweep"]))
    lines.append(run_line("last manual run", status["last_manual_run"]))
    lines.append(run_line("last backfill", status.get("last_backfill")))
    counts = status["riders"]
    lines.append("riders: " + ", ".join(f"{counts[s]} {s}" for s in RIDER_STATES))
    if "sweep_capacity" in status:
        c = status["sweep_capacity"]
        lines.append(
            f"riders beyond capacity: {c['riders_beyond']} "
            f"(needs a read limit of {c['read_limit_needed']}/day)"
        )
    return lines
