"""The demo's story: connect the riders, subscribe, ride day after day with faults, then sweep."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import timedelta
from html import escape

import requests

import models
from demo.system import Demo, DemoError, plural, say, scheduled_ids, wait_idle
from jobs.sweep import queue_sweep
from strava_sim.scenario import (
    FULL_SCOPE,
    HOUR,
    READ_SCOPE,
    DemoRider,
    change_some,
    record_activity,
    sim_now,
    upload_rides,
)

NOT_FOUND_FOR = 30  # seconds the surprise upload 404s after its create


def connect(demo: Demo, rider: DemoRider) -> None:
    """Connect one athlete through /strava/connect and the simulator's consent page, over HTTP."""
    demo.sim.login_as(rider.athlete_id, scope=rider.scope)
    with requests.Session() as browser:
        page = browser.get(f"{demo.url}/strava/connect", timeout=10)
    if page.status_code != 200 or escape(rider.name) not in page.text:
        raise DemoError(f"connecting {rider.name} answered {page.status_code}: {page.text[:200]}")
    with demo.svc.engine.connect() as conn:
        rider.rider_id = models.get_connection_by_athlete(conn, rider.athlete_id).rider_id


def connect_all(demo: Demo, cast: list[DemoRider]) -> None:
    """Connect every rider, then wait for the backfills their connections queued."""
    for rider in cast:
        connect(demo, rider)
    limited = sum(r.scope == READ_SCOPE for r in cast)
    say(
        f"Connected {len(cast)} riders through /strava/connect ({limited} granted only "
        "activity:read); backfilling their history..."
    )
    wait_idle(demo, timeout=60 + len(cast))
    with demo.svc.engine.connect() as conn:
        runs = models.recent_runs(conn, "backfill", limit=len(cast))
    created = sum(r.activities_created for r in runs)
    used = sum(r.requests_used for r in runs)
    say(f"Backfills done: {created} activities read in {used} requests.")


def subscribe(demo: Demo) -> None:
    """Create the webhook subscription with our own command; Strava validates our live callback."""
    callback = f"{demo.url}/api/strava/webhook"
    args = ["strava", "subscription", "create", "--callback-url", callback]
    with demo.app.app_context():  # under `flask demo` the outer app's context is current
        result = demo.app.test_cli_runner().invoke(args=args)
    if result.exit_code != 0:
        raise DemoError(f"subscription create failed: {result.output.strip()}")
    say(result.output.strip())


def deliver(demo: Demo) -> dict:
    """Let the simulator push its outbox to our webhook, then wait for the work it queued."""
    counts = demo.sim.deliver_events()
    demo.delivery.update(counts)
    wait_idle(demo, timeout=60 + counts["sent"])
    return counts


def ride_a_day(demo: Demo, cast: list[DemoRider], rng: random.Random) -> Counter:
    """A day on Strava: uploads in the evening, changes an hour later, each batch delivered."""
    # The clock only moves while no job runs: a token checked before a jump must stay valid.
    demo.sim.clock.advance(22 * HOUR)
    uploads = upload_rides(demo.sim, cast, rng)
    done = Counter(uploads=len(uploads))
    done.update(deliver(demo))
    demo.sim.clock.advance(HOUR)
    done.update(change_some(demo.sim, rng, uploads))
    done.update(deliver(demo))
    return done


def add_surprises(demo: Demo, cast: list[DemoRider], rng: random.Random) -> None:
    """An upload Strava 404s for a while after its create, and two forged events, all delivered."""
    sim = demo.sim
    rider = next(r for r in cast if r.scope == FULL_SCOPE)
    kept = next(a["id"] for a in sim.activities(rider.athlete_id) if not a["private"])
    sim.faults.not_found_after_create = NOT_FOUND_FOR
    record_activity(sim, rng, rider, sim_now(sim) - timedelta(hours=1))
    forged = {"object_type": "activity", "subscription_id": None, "updates": {}}
    forged["event_time"] = int(sim.clock.now())
    # Events are hints: a delete for an activity that exists, and one for an unknown athlete.
    sim.queue_event(**forged, object_id=kept, aspect_type="delete", owner_id=rider.athlete_id)
    sim.queue_event(**forged, object_id=kept + 1, aspect_type="create", owner_id=4242)
    sim.faults.drop_rate = 0.0  # so the surprises are seen, not lost
    deliver(demo)
    sim.faults.not_found_after_create = 0
    sim.faults.drop_rate = demo.drop_rate
    say(
        f"Surprises: an upload Strava 404s for {NOT_FOUND_FOR} s after its create, a forged "
        "delete of an activity that still exists, an event for an athlete we do not know."
    )


def simulate(demo: Demo, cast: list[DemoRider], rng: random.Random, days: int) -> None:
    """Ride `days` days, delivering each day's events with Strava's faults, then the surprises."""
    faults = demo.sim.faults
    faults.drop_rate, faults.duplicate_rate, faults.shuffle = demo.drop_rate, 0.15, True
    for day in range(days):
        done = ride_a_day(demo, cast, rng)
        events = done["sent"] - done["duplicated"] + done["dropped"]
        say(
            f"Day {day + 1}/{days}: {plural(done['uploads'], 'upload')}, "
            f"{plural(done['edits'], 'edit')}, {plural(done['deletions'], 'deletion')}, "
            f"{plural(done['flips'], 'privacy change')}; {plural(events, 'event')}: "
            f"{done['dropped']} dropped, {done['duplicated']} repeated, "
            "the rest delivered out of order."
        )
    add_surprises(demo, cast, rng)
    waiting = plural(len(scheduled_ids(demo.svc)), "job")
    say(f"Work settled. Scheduled for later (404 retries), not waited for: {waiting}.")


def sweep(demo: Demo, riders: int):
    """Run the nightly sweep and wait for its sync_run to finish; returns the run row."""
    say("Running the nightly sweep...")
    run_id = queue_sweep(demo.svc, "demo")["run_id"]
    deadline = time.monotonic() + 60 + riders
    while time.monotonic() < deadline:
        with demo.svc.engine.connect() as conn:
            run = models.get_run(conn, run_id)
        if run.status != "running":
            return run
        time.sleep(0.05)
    raise DemoError(f"the sweep (run {run_id}) did not finish in time")
