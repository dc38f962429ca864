"""The status in words: what needs the operator now, then the rest, for a person.

`status_warnings(status)` turns `jobs.status.collect_status`'s data into sentences, each with what
to do (the CLI, /admin and `GET /api/cron/status` share them); `status_sections(status)` words the
rest, so `strava status` and the admin page say the same things in the same words.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.diagnose import START_WORKER

QUIET_AFTER = timedelta(hours=24)  # no event for this long while riders are connected: warn
SWEEP_LATE_AFTER = timedelta(hours=36)  # a nightly sweep missed at least once: warn
WORK_SEEN_WITHIN = timedelta(days=1)  # a `strava work` run this recent stands in for workers
RECOVERY_LATE_AFTER = timedelta(minutes=10)  # workers run the recovery pass every 30 s
SUBSCRIPTION_SHOW = "flask --app app strava subscription show"
RIDER_STATES = ("current", "stale", "needs reconnect", "deauthorized", "not connected")


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


# -- what needs the operator now -----------------------------------------------------------------


def status_warnings(status: dict) -> list[str]:
    """What needs the operator now, each a sentence with what to do (the cron status reuses it)."""
    found = _strava_warnings(status) + _worker_warnings(status) + _quiet_warnings(status)
    return found + _deployment_warnings(status) + _budget_warnings(status)


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
    """No worker, or no scheduler, on a queue; unless a recent `strava work` run did the work."""
    age = status.get("last_work_run_age_seconds")
    if age is not None and age <= WORK_SEEN_WITHIN.total_seconds():
        return []  # workers that come and go (GitHub Actions): listening now is not expected
    found = _recovery_warnings(status)
    for name, q in status.get("queues", {}).items():
        late = ""
        if q["overdue"]:
            jobs = plural(q["overdue"], "scheduled job")
            late = f" ({jobs} overdue by up to {duration(q['overdue_seconds'])})"
        if not q["workers"]:
            found.append(
                f"no worker is listening on queue {name} and no `strava work` run finished in "
                f"the last 24 h: start one with {START_WORKER}, or enable the Workers workflow "
                "(STRAVA_SYNC_WORKERS=actions, docs/deploy.md)"
            )
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


def _recovery_warnings(status: dict) -> list[str]:
    """Workers listen, but none runs the recovery pass: a stock `rq worker` never does."""
    listening = any(q["workers"] for q in status.get("queues", {}).values())
    age = status.get("last_recovery_age_seconds")
    if status.get("mode") != "workers" or not listening:
        return []
    if age is not None and age <= RECOVERY_LATE_AFTER.total_seconds():
        return []
    since = "in the last day" if age is None else f"for {duration(age)}"
    return [
        f"workers are listening but none has run the recovery pass {since}, so events stored "
        "while Redis was unreachable are never queued: start the workers with -w worker.Worker, "
        f"as in {START_WORKER}"
    ]


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


def _deployment_warnings(status: dict) -> list[str]:
    """The subscription and its callback, stuck events, riders who must reconnect."""
    found = []
    subscribed, expected = (
        status.get("subscribed_callback_url"),
        status.get("expected_callback_url"),
    )
    if not status["subscription_id"]:
        found.append(
            "no push subscription is known: Strava sends no events; create it with "
            "flask --app app strava subscription create"
        )
    elif subscribed and expected and subscribed != expected:
        found.append(
            f"the push subscription's callback is {subscribed}, not this app's {expected}: "
            "delete it and create it again (flask --app app strava subscription delete, create)"
        )
    stuck = status.get("events_stuck")
    if stuck:
        found.append(
            f"{plural(stuck, 'event')} {'has' if stuck == 1 else 'have'} waited over 6 h for a "
            "fetch: check that workers (or the Workers workflow) run; flask --app app strava "
            "status shows the queues"
        )
    reconnect = status["riders"]["needs reconnect"]
    if reconnect:
        found.append(
            f"{plural(reconnect, 'rider')} must reconnect with Strava (their grant was lost): "
            "send each one a link from flask --app app strava invite RIDER"
        )
    return found


def _budget_warnings(status: dict) -> list[str]:
    """A daily budget used up, or riders beyond what the nightly sweep can reach."""
    found = []
    for bucket in ("overall", "read"):
        b = status.get("budget", {}).get(bucket)
        if b and b["used_day"] >= b["limit_day"]:
            found.append(
                f"Strava's daily {bucket} budget is used up ({b['used_day']}/{b['limit_day']}): "
                "fetches wait until 00:00 UTC; if it happens often, ask Strava for a higher limit"
            )
    beyond = status.get("sweep_capacity", {}).get("riders_beyond")
    if beyond:
        needed = status["sweep_capacity"]["read_limit_needed"]
        found.append(
            f"{plural(beyond, 'rider')} {'is' if beyond == 1 else 'are'} beyond what the nightly "
            f"sweep can check in 48 h: ask Strava for a read limit of {needed} a day "
            "(developers.strava.com, My API Application)"
        )
    return found


# -- the rest, in words ---------------------------------------------------------------------------


def _started_ago(run: dict, status: dict) -> str:
    started = datetime.fromisoformat(run["started_at"])
    return ago((datetime.fromisoformat(status["checked_at"]) - started).total_seconds())


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
