"""What an operator checks at a glance: subscription, queues, failures, budget, sweeps, riders.

Used by `flask --app app strava status`, the demo's closing report and the admin page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

import models
from services import QUEUES, Services


def run_summary(run) -> dict:
    """A sync_run row as JSON-ready data."""
    data = dict(run._mapping)
    for key in ("started_at", "finished_at"):
        data[key] = data[key].isoformat(timespec="seconds") if data[key] else None
    return data


def _queues(svc: Services) -> dict:
    result = {}
    for name in QUEUES:
        queue = svc.queue(name)
        failed = FailedJobRegistry(queue=queue)
        latest = []
        for job in queue.job_class.fetch_many(failed.get_job_ids(-5, -1), connection=svc.redis):
            if job is not None:
                reason = (job.latest_result().exc_string if job.latest_result() else "") or ""
                latest.append(
                    {"id": job.id, "func": job.func_name, "reason": reason.strip()[-300:]}
                )
        result[name] = {
            "queued": queue.count,
            "started": StartedJobRegistry(queue=queue).count,
            "scheduled": ScheduledJobRegistry(queue=queue).count,
            "failed": failed.count,
            "latest_failures": latest,
        }
    return result


def collect_status(svc: Services) -> dict:
    """Everything an operator checks at a glance, as JSON-ready data."""
    now = datetime.now(UTC)
    with svc.engine.connect() as conn:
        runs = models.recent_runs(conn)
        status = {
            "application_inactive_at": models.get_setting(conn, "application_inactive_at"),
            "subscription_id": svc.subscription_id(),
            "callback_url": svc.config.get("STRAVA_CALLBACK_URL"),
            "events_24h": models.event_counts_since(conn, now - timedelta(days=1)),
            "last_sweep": run_summary(runs[0]) if runs else None,
            "unannounced_recent_sweeps": sum(r.activities_unannounced for r in runs),
            "stale_riders": [
                r.rider_id for r in models.stale_riders(conn, now - timedelta(days=2))
            ],
            "deauthorized_riders": [r.rider_id for r in models.deauthorized_riders(conn)],
            "credentials_refused_at": models.get_setting(conn, "strava_credentials_refused_at"),
            "needs_reconnect_riders": [r.rider_id for r in models.needs_reconnect_riders(conn)],
        }
    try:
        status["queues"] = _queues(svc)
        status["budget"] = svc.budget.snapshot()
    except redis.RedisError as exc:
        status["redis"] = f"down: {type(exc).__name__}"
    return status


def format_status(status: dict) -> list[str]:
    """The status as lines for a person."""
    lines = [f"subscription: {status['subscription_id'] or 'none'}"]
    inactive = status["application_inactive_at"]
    if inactive:
        lines.insert(
            0,
            f"WARNING: Strava answered 'application inactive' at {inactive}; nothing works "
            "until the application's owner renews its Strava subscription",
        )
    events = status["events_24h"]
    lines.append(
        "events (24 h): " + (", ".join(f"{k} {v}" for k, v in sorted(events.items())) or "none")
    )
    for name, q in status.get("queues", {}).items():
        lines.append(
            f"queue {name}: {q['queued']} queued, {q['started']} running, "
            f"{q['scheduled']} scheduled, {q['failed']} failed"
        )
        lines += [f"  failed {f['func']}: {f['reason'].splitlines()[-1] if f['reason'] else '?'}"
                  for f in q["latest_failures"]]  # fmt: skip
    for bucket in ("overall", "read"):
        b = status.get("budget", {}).get(bucket)
        if b:
            lines.append(
                f"budget {bucket}: {b['used_15min']}/{b['limit_15min']} this window "
                f"(resets {b['window_resets_at']}), {b['used_day']}/{b['limit_day']} today"
            )
    if "redis" in status:
        lines.append(f"redis: {status['redis']}")
    sweep = status["last_sweep"]
    if sweep:
        lines.append(
            f"last sweep: #{sweep['id']} {sweep['status']} at {sweep['started_at']}: "
            f"{sweep['riders_done']}/{sweep['riders_planned']} riders, "
            f"{sweep['riders_deferred']} deferred, {sweep['activities_created']} created, "
            f"{sweep['activities_updated']} updated, {sweep['activities_deleted']} deleted"
        )
    else:
        lines.append("last sweep: never")
    lines.append(
        f"found by recent sweeps but never announced by an event: "
        f"{status['unannounced_recent_sweeps']}"
    )
    lines.append(f"riders not reconciled for 2 days: {len(status['stale_riders'])}")
    lines.append(f"deauthorized riders: {len(status['deauthorized_riders'])}")
    lines.append(f"riders who must reconnect: {len(status['needs_reconnect_riders'])}")
    if status["credentials_refused_at"]:
        lines.insert(
            0,
            f"WARNING: Strava refused this application's credentials at "
            f"{status['credentials_refused_at']}; check STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET",
        )
    return lines
