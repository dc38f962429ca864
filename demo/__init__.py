"""`flask --app app demo`: the whole of strava-sync against the Strava simulator, in one process.

A newcomer's first run, with no accounts and no services. The demo starts `strava_sim` and its own
app (a temporary SQLite database; the in-process Redis stand-in unless REDIS_URL is set) on
loopback, gives simulated riders a year of history, connects them through the real OAuth flow,
creates the webhook subscription, simulates days of riding while Strava drops, repeats, shuffles
and forges events, lets an in-process worker do the work, runs the nightly sweep, prints what
happened, and ends by checking our database against the simulator's truth.
"""

from __future__ import annotations

import contextlib
import math
import random
import secrets
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from itertools import product

import click
import requests
from cryptography.fernet import Fernet
from flask import Flask
from rq import Worker
from rq.registry import ScheduledJobRegistry
from werkzeug.serving import WSGIRequestHandler, make_server

import jobs
import models
from app import create_app
from cli import collect_status, format_status
from eddington import eddington_numbers
from ratebudget import RateBudget
from services import QUEUES, InlineRunner, Services
from strava_client import parse_activity
from strava_sim import StravaSim

FULL_SCOPE, READ_SCOPE = "read,activity:read_all", "read,activity:read"
FIRST = ("Ada", "Bea", "Cass", "Dev", "Edda", "Fen", "Gus", "Hana", "Ivo", "Jo", "Kit", "Lior")
LAST = ("Alder", "Birch", "Cole", "Drake", "Ellis", "Frost", "Grey", "Hale", "Ives", "Juniper")
ZONES = (0, 1, 1, 2, -5, -8, 10)  # riders' UTC offsets in hours: local days are not UTC days
SPORTS = {  # sport type: (weight, km range, km/h, titles)
    "Ride": (50, (15, 200), 25, ("Morning Ride", "Coffee loop", "Club run", "Brevet", "Hills")),
    "GravelRide": (15, (20, 120), 19, ("Gravel grind", "Forest tracks")),
    "MountainBikeRide": (5, (15, 60), 14, ("Trail centre",)),
    "Run": (18, (5, 21), 11, ("Morning Run", "Parkrun")),
    "Walk": (12, (2, 10), 5, ("Dog walk", "Afternoon Walk")),
}
NEW_TITLES = ("Windy!", "PR on the climb", "Rain, again", "Cafe stop at km 60", "Flat tyre")
NEW_TYPES = ("GravelRide", "EBikeRide", "MountainBikeRide")  # an e-bike ride does not count
HOUR = 3600
NOT_FOUND_FOR = 30  # seconds the surprise upload 404s after its create
DIFFERENCES_SHOWN = LEADERBOARD = 10
RATE_LIMITED = ("GET /athlete/activities", "GET /activities/{id}")  # Strava counts only these


class DemoError(Exception):
    """A step of the demo could not be done."""


@dataclass
class DemoRider:
    """A simulated athlete and, once connected, our rider."""

    name: str
    athlete_id: int
    scope: str = FULL_SCOPE
    utc_offset: float = 0
    rider_id: int | None = None


@dataclass
class Demo:
    """The running pieces: the simulator, our app served on loopback, and the worker thread."""

    sim: StravaSim
    app: Flask
    svc: Services
    url: str
    worker: InlineRunner
    drop_rate: float
    delivery: Counter = field(default_factory=Counter)


def say(message: str) -> None:
    """One progress line, on stderr."""
    click.echo(message, err=True)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# -- the running system ---------------------------------------------------------------------------


class _Handler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass  # one line per webhook would drown the story


@contextlib.contextmanager
def _working(app: Flask, svc: Services):
    runner = svc.start_runner(app)
    try:
        yield runner
    finally:
        runner.stop()


def wait_idle(demo: Demo, timeout: float) -> None:
    """Wait until the worker has nothing queued or running, or raise DemoError."""
    if not demo.worker.wait_idle(timeout):
        raise DemoError(f"the queued work did not finish within {timeout:.0f} s")


def _limit_factor(riders: int) -> int:
    """How many times Strava's standard limits the app needs for the demo never to wait a window."""
    # Each simulated day has its own windows; the busiest, the last, takes about five per rider.
    return max(1, math.ceil((riders * 5 + 10) / 80))


def _settings(sim: StravaSim, folder: str, factor: int, days: int) -> dict:
    return {
        "DATABASE_URL": f"sqlite:///{folder}/demo.sqlite",
        "INLINE_WORKER": False,  # started explicitly, so it also runs with a real Redis
        "SECRET_KEY": secrets.token_hex(32),
        "STRAVA_CLIENT_ID": sim.client_id,
        "STRAVA_CLIENT_SECRET": sim.client_secret,
        "STRAVA_API_URL": sim.api_url,
        "STRAVA_OAUTH_URL": sim.oauth_url,
        "STRAVA_VERIFY_TOKEN": secrets.token_urlsafe(24),
        "STRAVA_CALLBACK_URL": None,
        "STRAVA_SUBSCRIPTION_ID": None,
        "CRON_SECRET": secrets.token_urlsafe(24),
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "STRAVA_RATE_LIMITS": (200 * factor, 2000 * factor),
        "STRAVA_READ_RATE_LIMITS": (100 * factor, 1000 * factor),
        # The sweep must reach back over every simulated day to repair lost events.
        "RECONCILE_LOOKBACK_DAYS": max(7, days + 1),
        # One clock for Strava and us: token expiry and rate windows agree as simulated days pass.
        "CLOCK": sim.clock.now,
    }


@contextlib.contextmanager
def running_system(seed: int, riders: int, days: int, drop_rate: float):
    """Start the simulator, our app, its server and the worker; stop and remove them after."""
    factor = _limit_factor(riders)
    limits = {"limits": (200 * factor, 2000 * factor), "read_limits": (100 * factor, 1000 * factor)}
    with (
        tempfile.TemporaryDirectory(prefix="strava-sync-demo-") as folder,
        StravaSim(seed=seed, **limits) as sim,
    ):
        app = create_app(_settings(sim, folder, factor, days))
        svc = app.extensions["strava_sync"]
        try:
            models.init_db(svc.engine)
            with _own_redis_state(svc), serve_in_thread(app) as url, _working(app, svc) as worker:
                if factor > 1:
                    say(f"(Simulated Strava grants {factor}x the standard rate limits.)")
                yield Demo(sim, app, svc, url, worker, drop_rate)
        finally:
            svc.engine.dispose()
            svc.redis.close()
            svc.client.session.close()


@contextlib.contextmanager
def serve_in_thread(app: Flask):
    """Serve a WSGI app on a free loopback port in a thread, quietly; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Handler)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="strava-sync-demo", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def _own_redis_state(svc: Services):
    """With a real Redis, keep the demo's budget and leftover jobs out of the real app's way."""
    if svc.inline:
        yield
        return
    if any(Worker.all(connection=svc.redis, queue=svc.queue(n)) for n in QUEUES):
        raise DemoError(
            "rq workers already listen on REDIS_URL's queues and would run the demo's jobs "
            "against their own database: stop them, or unset REDIS_URL"
        )
    prefix = f"strava-sync-demo:{secrets.token_hex(4)}:budget"
    # Sim requests must not count against (or read) the real app's Strava budget.
    svc.budget = svc.client.budget = RateBudget(
        svc.redis,
        limits=svc.config["STRAVA_RATE_LIMITS"],
        read_limits=svc.config["STRAVA_READ_RATE_LIMITS"],
        reserve=svc.config["RECONCILE_RESERVE"],
        clock=svc.clock,
        prefix=prefix,
    )
    before = _scheduled_ids(svc)
    try:
        yield
    finally:
        # Retries scheduled for later (404s after create) belong to this run's world only.
        for name in QUEUES:
            registry = ScheduledJobRegistry(queue=svc.queue(name))
            for job_id in set(registry.get_job_ids()) - before:
                registry.remove(job_id, delete_job=True)
        for key in svc.redis.scan_iter(f"{prefix}:*"):
            svc.redis.delete(key)


def _scheduled_ids(svc: Services) -> set[str]:
    registries = [ScheduledJobRegistry(queue=svc.queue(name)) for name in QUEUES]
    return {job_id for registry in registries for job_id in registry.get_job_ids()}


# -- the simulated world --------------------------------------------------------------------------


def make_cast(sim: StravaSim, rng: random.Random, count: int) -> list[DemoRider]:
    """Create the athletes; one or two of them will grant only activity:read."""
    names = [f"{first} {last}" for first, last in product(FIRST, LAST)]
    rng.shuffle(names)
    names += [f"Rider {n}" for n in range(len(names) + 1, count + 1)]
    limited = set(rng.sample(range(count), 2 if count >= 8 else min(1, count - 1)))
    cast = []
    for i, name in enumerate(names[:count]):
        athlete_id = sim.add_athlete(*name.split(" ", 1))
        scope = READ_SCOPE if i in limited else FULL_SCOPE
        cast.append(DemoRider(name, athlete_id, scope, rng.choice(ZONES)))
    return cast


def record_activity(sim, rng, rider: DemoRider, ended: datetime, private=False, event=True) -> int:
    """Upload one activity of a random sport with a plausible distance, duration and climb."""
    sport = rng.choices(list(SPORTS), weights=[s[0] for s in SPORTS.values()])[0]
    _, (low, high), speed, titles = SPORTS[sport]
    km = rng.triangular(low, high, low + (high - low) * 0.15)
    seconds = int(km / speed * 3600)
    return sim.create_activity(
        rider.athlete_id,
        name=rng.choice(titles),
        sport_type=sport,
        distance=round(km * 1000, 1),
        moving_time=seconds,
        elapsed_time=int(seconds * rng.uniform(1.05, 1.4)),
        total_elevation_gain=round(km * rng.uniform(3, 15), 1),
        start_date=ended - timedelta(seconds=seconds),
        utc_offset_hours=rider.utc_offset,
        private=private,
        event=event,
    )


def give_history(sim: StravaSim, rng: random.Random, cast: list[DemoRider]) -> int:
    """Record 20 to 80 activities over the past year for each rider; returns how many in all."""
    now, total = _sim_now(sim), 0
    for rider in cast:
        for _ in range(rng.randint(20, 80)):
            ended = now - timedelta(days=rng.uniform(1, 365))
            record_activity(sim, rng, rider, ended, private=rng.random() < 0.08, event=False)
            total += 1
    return total


def _sim_now(sim: StravaSim) -> datetime:
    return datetime.fromtimestamp(sim.clock.now(), UTC)


def upload_rides(sim: StravaSim, cast: list[DemoRider], rng: random.Random) -> list[tuple]:
    """Most riders upload 0 to 2 activities; returns (activity id, private, rider has read_all)."""
    uploads = []
    for rider in cast:
        for _ in range(rng.choices((0, 1, 2), weights=(30, 45, 25))[0]):
            ended = _sim_now(sim) - timedelta(seconds=rng.uniform(0, 10 * HOUR))
            private = rng.random() < 0.1
            activity_id = record_activity(sim, rng, rider, ended, private)
            uploads.append((activity_id, private, rider.scope == FULL_SCOPE))
    return uploads


def change_some(sim: StravaSim, rng: random.Random, uploads: list[tuple]) -> Counter:
    """Retitle or retype about a third of the uploads, then flip privacy on a few, delete a few."""
    done = Counter()
    for activity_id, _, _ in uploads:
        if rng.random() < 0.35:
            done["edits"] += 1
            if rng.random() < 0.6:
                sim.update_activity(activity_id, name=rng.choice(NEW_TITLES))
            else:
                sim.update_activity(activity_id, sport_type=rng.choice(NEW_TYPES))
    sim.clock.advance(HOUR)  # so event_time orders these events however they are delivered
    uploads = rng.sample(uploads, len(uploads))
    # Riders without read_all first: for them, turning an activity private looks like a delete.
    uploads.sort(key=lambda upload: upload[2])
    few = len(uploads) // 8 + 1 if len(uploads) >= 2 else 0
    for activity_id, private, _ in uploads[:few]:
        sim.update_activity(activity_id, private=not private)
    for activity_id, _, _ in uploads[len(uploads) - few :]:
        sim.delete_activity(activity_id)
    done.update(flips=few, deletions=few)
    return done


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


def deliver(demo: Demo) -> dict:
    """Let the simulator push its outbox to our webhook, then wait for the work it queued."""
    counts = demo.sim.deliver_events()
    demo.delivery.update(counts)
    wait_idle(demo, timeout=60 + counts["sent"])
    return counts


def add_surprises(demo: Demo, cast: list[DemoRider], rng: random.Random) -> None:
    """An upload Strava 404s for a while after its create, and two forged events, all delivered."""
    sim = demo.sim
    rider = next(r for r in cast if r.scope == FULL_SCOPE)
    kept = next(a["id"] for a in sim.activities(rider.athlete_id) if not a["private"])
    sim.faults.not_found_after_create = NOT_FOUND_FOR
    record_activity(sim, rng, rider, _sim_now(sim) - timedelta(hours=1))
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


# -- the steps ------------------------------------------------------------------------------------


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


def simulate(demo: Demo, cast: list[DemoRider], rng: random.Random, days: int) -> None:
    """Ride `days` days, delivering each day's events with Strava's faults, then the surprises."""
    faults = demo.sim.faults
    faults.drop_rate, faults.duplicate_rate, faults.shuffle = demo.drop_rate, 0.15, True
    for day in range(days):
        done = ride_a_day(demo, cast, rng)
        events = done["sent"] - done["duplicated"] + done["dropped"]
        say(
            f"Day {day + 1}/{days}: {_n(done['uploads'], 'upload')}, {_n(done['edits'], 'edit')}, "
            f"{_n(done['deletions'], 'deletion')}, {_n(done['flips'], 'privacy change')}; "
            f"{_n(events, 'event')}: {done['dropped']} dropped, {done['duplicated']} repeated, "
            "the rest delivered out of order."
        )
    add_surprises(demo, cast, rng)
    waiting = len(_scheduled_ids(demo.svc))
    say(f"Work settled. Scheduled for later (404 retries), not waited for: {_n(waiting, 'job')}.")


def sweep(demo: Demo, riders: int):
    """Run the nightly sweep and wait for its sync_run to finish; returns the run row."""
    say("Running the nightly sweep...")
    run_id = jobs.queue_sweep(demo.svc, "demo")["run_id"]
    deadline = time.monotonic() + 60 + riders
    while time.monotonic() < deadline:
        with demo.svc.engine.connect() as conn:
            run = models.get_run(conn, run_id)
        if run.status != "running":
            return run
        time.sleep(0.05)
    raise DemoError(f"the sweep (run {run_id}) did not finish in time")


# -- the consistency check ------------------------------------------------------------------------


def visible_truth(sim: StravaSim, rider: DemoRider) -> dict[int, dict]:
    """The rider's activities on Strava as their granted scope lets us see them, as our columns."""
    read_all = "activity:read_all" in rider.scope.split(",")
    return {
        a["id"]: parse_activity(a)
        for a in sim.activities(rider.athlete_id)
        if read_all or not a["private"]
    }


def _eddington_of(activities, sport_types) -> tuple[int, int]:
    per_day: Counter = Counter()
    for a in activities:
        if a["sport_type"] in sport_types:
            per_day[a["start_date_local"].date()] += a["distance"]
    return eddington_numbers(per_day.values())


def check_consistency(svc: Services, sim: StravaSim, riders: list[DemoRider]) -> list[str]:
    """How our rows differ from Strava's truth (ids, fields, Eddington); empty when they agree."""
    fields = ("name", "sport_type", "distance", "start_date", "private")
    sport_types = svc.config["EDDINGTON_SPORT_TYPES"]
    differences = []
    for rider in riders:
        theirs = visible_truth(sim, rider)
        with svc.engine.connect() as conn:
            ours = {row.id: row._mapping for row in models.rider_activities(conn, rider.rider_id)}
            connection = models.get_connection(conn, rider.rider_id)
        for missing in sorted(theirs.keys() - ours.keys()):
            differences.append(f"{rider.name}: activity {missing} is missing from our database")
        for extra in sorted(ours.keys() - theirs.keys()):
            differences.append(f"{rider.name}: we hold activity {extra}, Strava does not show it")
        for activity_id in sorted(ours.keys() & theirs.keys()):
            for name in fields:
                mine, truth = ours[activity_id][name], theirs[activity_id][name]
                if mine != truth:
                    differences.append(
                        f"{rider.name}: activity {activity_id} {name} is {mine!r}, "
                        f"Strava says {truth!r}"
                    )
        expected = _eddington_of(theirs.values(), sport_types)
        held = (connection.eddington_number_miles, connection.eddington_number_km)
        if held != expected:
            differences.append(f"{rider.name}: Eddington (mi, km) is {held}, expected {expected}")
    return differences


# -- the story ------------------------------------------------------------------------------------


def _event_lines(demo: Demo) -> list[str]:
    with demo.svc.engine.connect() as conn:
        status = Counter(models.event_counts_since(conn, datetime(2000, 1, 1, tzinfo=UTC)))
    stored, d = sum(status.values()), demo.delivery
    return [
        f"  Webhook events   {d['delivered']} received: {stored - status['ignored']} queued "
        f"({status['done']} done, {status['queued'] + status['pending']} waiting for a retry, "
        f"{status['failed']} failed), {d['delivered'] - stored} duplicate, "
        f"{status['ignored']} ignored",
        f"                   never delivered: {d['dropped']} dropped by Strava, {d['failed']} "
        "given up after 3 attempts (the sweep's job)",
    ]


def _listing(counts: dict) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _request_lines(demo: Demo) -> list[str]:
    sim, read = demo.sim, demo.svc.budget.snapshot()["read"]
    counted = {k: n for k, n in sim.requests.items() if k in RATE_LIMITED}
    free = {k: n for k, n in sim.requests.items() if k not in RATE_LIMITED}
    return [
        f"  Strava requests  {sum(counted.values())} API calls: {_listing(counted)}",
        f"                   not rate limited: {_listing(free)}",
        f"  Rate budget      busiest 15-minute window {sim.max_window_usage()} of "
        f"{read['limit_15min']} read requests; budget now {read['used_15min']}/"
        f"{read['limit_15min']} this window, {read['used_day']}/{read['limit_day']} today",
        f"  429 answers      {sim.rate_limited}",
    ]


def _activity_lines(demo: Demo, cast: list[DemoRider], run) -> list[str]:
    with demo.svc.engine.connect() as conn:
        ours = sum(len(models.rider_activities(conn, r.rider_id)) for r in cast)
    truth = sum(len(demo.sim.activities(r.athlete_id)) for r in cast)
    visible = sum(len(visible_truth(demo.sim, r)) for r in cast)
    return [
        f"  Activities       ours {ours}, Strava's {truth}, of which {visible} visible to us "
        "(private ones stay hidden without activity:read_all)",
        f"  Nightly sweep    run {run.id} {run.status}: {run.riders_done} riders in "
        f"{run.requests_used} requests; repaired {run.activities_created} created, "
        f"{run.activities_updated} updated, {run.activities_deleted} deleted "
        f"({run.activities_unannounced} never announced by an event)",
    ]


def _leaderboard_lines(demo: Demo, cast: list[DemoRider]) -> list[str]:
    with demo.svc.engine.connect() as conn:
        rows = [(r.name, models.get_connection(conn, r.rider_id)) for r in cast]
    rows.sort(key=lambda row: (-(row[1].eddington_number_km or 0), row[0]))
    lines = ["  Eddington leaderboard (E days of at least E km / E miles):"]
    for place, (name, c) in enumerate(rows[:LEADERBOARD], start=1):
        lines.append(
            f"    {place:>3}. {name:<16} {c.eddington_number_km or 0:>4} km "
            f"{c.eddington_number_miles or 0:>4} mi"
        )
    if len(rows) > LEADERBOARD:
        lines.append(f"         ...and {_n(len(rows) - LEADERBOARD, 'more rider')}")
    return lines


def print_summary(demo: Demo, cast: list[DemoRider], run) -> None:
    """What happened, for a person to read."""
    click.echo("\nSummary")
    for line in (
        _event_lines(demo)
        + _request_lines(demo)
        + _activity_lines(demo, cast, run)
        + _leaderboard_lines(demo, cast)
    ):
        click.echo(line)
    click.echo("\nThe operator's view (flask --app app strava status)")
    with demo.app.app_context():
        status = collect_status(demo.svc)
    for line in format_status(status):
        click.echo(f"  {line}")


def print_verdict(differences: list[str], cast: list[DemoRider]) -> None:
    """PASS, or FAIL with the first few differences."""
    if not differences:
        click.echo(
            f"\nConsistency check: PASS. All {len(cast)} riders' activities and Eddington "
            "numbers equal Strava's truth as each rider's scope shows it."
        )
        return
    click.echo(f"\nConsistency check: FAIL. {len(differences)} differences, the first ones:")
    for line in differences[:DIFFERENCES_SHOWN]:
        click.echo(f"  - {line}")


def run_demo(*, riders: int, days: int, seed: int, drop_rate: float) -> bool:
    """Run the whole system against the simulator; True when it ends consistent with Strava."""
    began, rng = time.monotonic(), random.Random(seed)
    say(f"strava-sync demo: {riders} riders, {days} day(s), seed {seed}, {drop_rate:.0%} dropped")
    try:
        with running_system(seed, riders, days, drop_rate) as demo:
            redis = "an in-process Redis stand-in" if demo.svc.inline else "Redis at REDIS_URL"
            say(f"Strava simulator at {demo.sim.base_url}; strava-sync at {demo.url} ({redis}).")
            cast = make_cast(demo.sim, rng, riders)
            history = give_history(demo.sim, rng, cast)
            say(f"Gave {riders} riders {history} activities over the past year.")
            connect_all(demo, cast)
            subscribe(demo)
            simulate(demo, cast, rng, days)
            run = sweep(demo, riders)
            print_summary(demo, cast, run)
            differences = check_consistency(demo.svc, demo.sim, cast)
            print_verdict(differences, cast)
    except DemoError as exc:
        click.echo(f"\nThe demo stopped: {exc}\nConsistency check: FAIL")
        return False
    click.echo(f"Finished in {time.monotonic() - began:.1f} s.")
    return not differences
