"""A simulated day of a whole team on Strava: what strava-sync costs in requests, and what it keeps.

Measures, with Strava's default limits (read: 100 per 15 minutes, 1,000 a day): Strava read
requests per new activity and per rider in the nightly sweep, 429 answers, events lost (checked
against the simulator's truth), freshness from a change on Strava to our stored row, the riders the
sweep reached and deferred, and the largest team the limits keep current, side by side with the
original design (every rider polled every 6 hours, 2-3 requests a poll) on the same simulated day.

How: `strava_sim` plays Strava on loopback with a driven clock that our app shares (`clock`). Each
rider uploads 0-2 activities during their local day; some are edited, a few turn private or public
or are deleted. Strava drops about 2 % of events and repeats some, out of order. The clock jumps
from one happening to the next (a change, a job's scheduled time, the 03:17 UTC sweep); at each stop
the events are delivered over HTTP to our webhook and the queued jobs run in-process with a burst
worker, scheduled jobs being promoted once the driven clock passes their time. The run ends at the
end of the sweep's day (48 simulated hours). Freshness is in simulated time: work done at a stop is
counted as done at that stop, so it excludes processing latency (see bench/ingest.py for that).

Redis is the in-process stand-in and the database a temporary SQLite file unless --redis-url (its
keys are wiped) or --database-url (its tables are dropped) name real ones.

Run: .venv/bin/python bench/day.py [--riders 1000] [--seed 1] [--drop-rate 0.02]    (~30 s)
     .venv/bin/python bench/day.py --riders 10000 --redis-url redis://127.0.0.1:6379/11  (~10 min)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import resource
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from _common import (
    counting_round_trips,
    exit_on_sigterm,
    heading,
    machine,
    percentile,
    reserved_redis,
)
from _pool import WorkerPool
from cryptography.fernet import Fernet
from rq import SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry

import config
import models
import reconcile
import services
from app import create_app
from jobs.sweep import queue_sweep
from services import QUEUES
from strava_sim import Faults, StravaSim
from strava_sim.scenario import (
    NEW_TITLES,
    NEW_TYPES,
    DemoRider,
    make_cast,
    record_activity,
    visible_truth,
)
from strava_sim.serve import serve_in_thread

HOUR, DAY, MINUTE, WINDOW = 3600, 86400, 60, 900
SWEEP_AT = DAY + 3 * HOUR + 17 * MINUTE  # 03:17 UTC next day, as in .github/workflows/reconcile.yml
LAST_CHANGE = DAY + 3 * HOUR  # the day's late edits are over before the sweep starts
HORIZON = 2 * DAY  # the run ends with the sweep's day
ACTIVITIES_A_DAY = ((0, 1, 2), (30, 45, 25))  # per rider: most ride once, some twice, some rest
BULK_UPLOAD = 8  # activities a rider uploads at once on a day of bulk uploads (--bulk)
FOLLOW_UPS = (  # (kind, share of uploads, delay range in seconds after the upload)
    # Most title edits come 1-10 minutes after the upload (the rider is still at the screen).
    ("edit", 0.28, (1 * MINUTE, 10 * MINUTE)),
    ("edit", 0.07, (10 * MINUTE, 2 * HOUR)),
    ("flip", 0.04, (30 * MINUTE, 12 * HOUR)),
    ("delete", 0.03, (10 * MINUTE, 12 * HOUR)),
)
SEED_POLLS = (6 * HOUR, 12 * HOUR, 18 * HOUR, DAY)  # the seed design's polls that cover the day
SEED_COST = (2, 3)  # its requests per rider poll: nothing new since the last poll, something new
DAILY_READS, WINDOW_READS, RESERVE = 1000, 100, 0.2  # Strava's defaults, our default reserve
MIN_SHARE = 0.25  # our default RECONCILE_MIN_SHARE
COMPARED = ("name", "sport_type", "distance", "start_date", "private")


class BurstWorker(SimpleWorker):
    """A SimpleWorker without the pubsub thread for rq's admin commands (a second a pass), that
    counts the jobs it runs by function."""

    def __init__(self, *args, counts: Counter | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ran = Counter()
        self.counts = Counter() if counts is None else counts  # the live SQL and Redis counts
        self.costs = Counter()  # (job function, "sql" / "redis" / "redis_commands" / "cpu")

    def subscribe(self) -> None:
        pass

    def execute_job(self, job, queue):
        self.ran[job.func_name.rpartition(".")[2]] += 1
        if job.kwargs.get("not_found_retry"):
            self.ran["404 retries"] += 1  # a fetch again after Strava answered 404 to a create
        with charged(self.counts, self.costs, job.func_name.removeprefix("jobs.")):
            return super().execute_job(job, queue)


@contextlib.contextmanager
def charged(counts: Counter, costs: Counter, unit: str):
    """Add what the block costs (SQL statements, Redis commands and round trips, CPU) to `unit`."""
    before, cpu = counts.copy(), time.process_time()
    try:
        yield
    finally:
        for kind in ("sql", "redis_commands", "redis"):
            costs[unit, kind] += counts[kind] - before[kind]
        costs[unit, "cpu"] += time.process_time() - cpu


@dataclass(order=True)
class Change:
    """Something a rider does on Strava at a simulated time (epoch seconds, whole minutes)."""

    at: int
    seq: int
    kind: str = field(compare=False)  # upload, edit, flip, delete
    rider: DemoRider = field(compare=False)
    upload: int = field(compare=False, default=-1)  # seq of the upload a follow-up changes


@dataclass
class Tally:
    """What the run observed."""

    done: Counter = field(default_factory=Counter)  # changes made, by kind
    change_times: dict = field(default_factory=dict)  # athlete id -> times of their changes
    delivery: Counter = field(default_factory=Counter)  # the simulator's delivery counts
    dropped: list = field(default_factory=list)  # event payloads that never reached our table
    freshness: list = field(default_factory=list)  # seconds from event to its stored row
    reconciled_at: dict = field(default_factory=dict)  # rider id -> sim time of their sweep job
    sweep: dict | None = None  # what queue_sweep answered
    stops: int = 0
    reported: int = 0  # the simulated hour of the last progress line
    stopped_early: str | None = None
    workers_peak: float = 0.0  # the worker processes' largest peak RSS, MiB
    webhook: Counter = field(default_factory=Counter)  # what delivering the events cost us
    host: str = field(default_factory=machine)  # taken when the run starts


@dataclass
class World:
    """The running parts and the simulated state they share."""

    sim: StravaSim
    app: object
    svc: object
    worker: BurstWorker
    start: int
    rng: random.Random
    ids: dict = field(default_factory=dict)  # upload seq -> activity id
    private: dict = field(default_factory=dict)  # activity id -> private now
    deleted: set = field(default_factory=set)
    pool: WorkerPool | None = None  # worker processes (--workers); None: the in-process worker


def minute(at: float) -> int:
    """Round a time up to a whole simulated minute."""
    return int(-(-at // MINUTE) * MINUTE)


def day_start() -> int:
    """The next UTC midnight: the driven clock then stays ahead of real time, which RQ uses."""
    now = time.time()
    return int(now - now % DAY + DAY)


# -- the world ------------------------------------------------------------------------------------


def plan_day(cast: list[DemoRider], rng: random.Random, start: int, bulk=0.0) -> list[Change]:
    """Uploads at riders' local 07:00-21:00, and the edits, flips and deletions that follow.

    A `bulk` share of riders upload BULK_UPLOAD activities at one minute instead (a trip's rides).
    """
    seq, changes = itertools.count(), []
    for rider in cast:
        count, local = rng.choices(*ACTIVITIES_A_DAY)[0], None
        at_once = bool(bulk) and rng.random() < bulk  # no draw without --bulk: the usual day
        for _ in range(BULK_UPLOAD if at_once else count):
            if local is None or not at_once:
                local = rng.uniform(7, 21) * HOUR - rider.utc_offset * HOUR
            upload = Change(minute(start + local % DAY), next(seq), "upload", rider)
            changes.append(upload)
            for kind, share, (low, high) in FOLLOW_UPS:
                if rng.random() < share:
                    at = min(minute(upload.at + rng.uniform(low, high)), start + LAST_CHANGE)
                    changes.append(Change(at, next(seq), kind, rider, upload.seq))
    return sorted(changes)


def apply(world: World, change: Change, tally: Tally) -> None:
    """Make one change on the simulator (its event lands in the outbox)."""
    sim, rng = world.sim, world.rng
    if change.kind == "upload":
        private = rng.random() < 0.1
        ended = datetime.fromtimestamp(change.at, UTC)
        activity_id = record_activity(sim, rng, change.rider, ended, private)
        world.ids[change.seq], world.private[activity_id] = activity_id, private
    else:
        activity_id = world.ids[change.upload]
        if activity_id in world.deleted:
            return  # deleted before this follow-up came round
        if change.kind == "edit" and rng.random() < 0.6:
            sim.update_activity(activity_id, name=rng.choice(NEW_TITLES))
        elif change.kind == "edit":
            sim.update_activity(activity_id, sport_type=rng.choice(NEW_TYPES))
        elif change.kind == "flip":
            world.private[activity_id] = not world.private[activity_id]
            sim.update_activity(activity_id, private=world.private[activity_id])
        else:
            sim.delete_activity(activity_id)
            world.deleted.add(activity_id)
    tally.done[change.kind] += 1
    tally.change_times.setdefault(change.rider.athlete_id, []).append(change.at)


def seed_riders(world: World, cast: list[DemoRider]) -> int:
    """Connect every rider and give them 0-5 activities this past week, already in our table."""
    sim, svc, rng, start = world.sim, world.svc, world.rng, world.start
    for rider in cast:
        for _ in range(rng.randint(0, 5)):
            ended = datetime.fromtimestamp(start - rng.uniform(0.5, 6.5) * DAY, UTC)
            record_activity(sim, rng, rider, ended, private=rng.random() < 0.08, event=False)
    # The app stamps sweeps with the wall clock (models.now), not the driven one: so do we.
    last_sweep = svc.now() - timedelta(days=1)
    riders, connections, activities = [], [], []
    for rider_id, rider in enumerate(cast, start=1):
        rider.rider_id = rider_id
        tokens = sim.grant(rider.athlete_id, rider.scope)
        riders.append({"id": rider_id, "name": rider.name, "created_at": last_sweep})
        connections.append(
            {
                "rider_id": rider_id,
                "athlete_id": rider.athlete_id,
                "access_token": svc.cipher.encrypt(tokens["access_token"]),
                "refresh_token": svc.cipher.encrypt(tokens["refresh_token"]),
                "expires_at": tokens["expires_at"],
                "scope": rider.scope,
                "connected_at": last_sweep,
                "last_reconciled_at": last_sweep,
                "backfill_before": 0,  # history read long ago
            }
        )
        for values in visible_truth(sim, rider).values():
            activities.append(dict(values, rider_id=rider_id, fetched_at=last_sweep))
    with svc.engine.begin() as conn:
        conn.execute(models.riders.insert(), riders)
        conn.execute(models.strava_connection.insert(), connections)
        if activities:
            conn.execute(models.strava_activity.insert(), activities)
    return len(activities)


def subscribe(world: World, url: str) -> None:
    """Create the push subscription (Strava validates our callback) and remember its id."""
    svc = world.svc
    created = svc.client.create_subscription(
        url + "/api/strava/webhook", svc.settings.strava_verify_token
    )
    with svc.engine.begin() as conn:
        models.set_setting(conn, "subscription_id", str(created["id"]))
    svc.forget_subscription()


# -- one stop of the driven clock -----------------------------------------------------------------


def deliver(world: World, tally: Tally) -> None:
    """Push the outbox to our webhook; note the events that never reached our table."""
    outbox = {models.event_identity(e): e for e in world.sim.outbox}
    if not outbox:
        return
    with charged(world.worker.counts, tally.webhook, "webhook"):
        tally.delivery.update(world.sim.deliver_events())
    table = models.webhook_event
    with world.svc.engine.connect() as conn:
        query = sa.select(table.c.identity).where(table.c.identity.in_(list(outbox)))
        stored = set(conn.execute(query).scalars())
    tally.dropped += [e for identity, e in outbox.items() if identity not in stored]


def promote_due(svc, now: float) -> int:
    """Move scheduled jobs whose time the driven clock has passed to their queues."""
    moved = 0
    for name in QUEUES:
        queue = svc.queue(name)
        registry = ScheduledJobRegistry(queue=queue)
        for job_id in registry.get_jobs_to_schedule(int(now), chunk_size=100_000):
            job = Job.fetch(job_id, connection=svc.redis)
            registry.remove(job)
            queue.enqueue_job(job)
            moved += 1
    return moved


def next_scheduled(svc) -> float | None:
    """The earliest time a scheduled job waits for, or None."""
    times = []
    for name in QUEUES:
        key = ScheduledJobRegistry(queue=svc.queue(name)).key
        times += [score for _, score in svc.redis.zrange(key, 0, 0, withscores=True)]
    return min(times, default=None)


def run_jobs(world: World, now: float) -> None:
    """Run every queued and due job, as often as jobs queue more (bounded)."""
    svc = world.svc
    for _ in range(100):
        promote_due(svc, now)
        if not any(svc.queue(name).count for name in QUEUES):
            return
        if world.pool is not None:
            world.pool.run_pass()
            continue
        with services.bind(svc):
            world.worker.work(burst=True, logging_level="WARNING")


def observe(world: World, tally: Tally, since: datetime, now: float) -> None:
    """Note the events finished and the riders swept since `since` (wall clock) at sim time now."""
    events, connections = models.webhook_event, models.strava_connection
    with world.svc.engine.connect() as conn:
        done = sa.select(events.c.event_time).where(
            events.c.processed_at >= since, events.c.status == "done"
        )
        tally.freshness += [now - t for t in conn.execute(done).scalars()]
        swept = sa.select(connections.c.rider_id).where(connections.c.last_reconciled_at >= since)
        for rider_id in conn.execute(swept).scalars():
            tally.reconciled_at.setdefault(rider_id, now)


def simulate(world: World, changes: list[Change], tally: Tally, max_seconds: float) -> None:
    """Drive the clock from happening to happening until the horizon (or the time bound)."""
    clock, svc, start = world.sim.clock, world.svc, world.start
    began, upcoming = time.monotonic(), iter(changes)
    change = next(upcoming, None)
    while True:
        moments = [start + HORIZON, next_scheduled(svc)]
        moments += [change.at if change else None, None if tally.sweep else start + SWEEP_AT]
        at = minute(max(min(m for m in moments if m is not None), clock.now()))
        if at >= start + HORIZON:
            return
        clock.advance(at - clock.now())
        since = svc.now()
        while change is not None and change.at <= at:
            apply(world, change, tally)
            change = next(upcoming, None)
        if tally.sweep is None and at >= start + SWEEP_AT:
            tally.sweep = queue_sweep(svc, "cron")
        deliver(world, tally)
        run_jobs(world, at)
        observe(world, tally, since, at)
        tally.stops += 1
        progress(at, start, tally, time.monotonic() - began)
        if time.monotonic() - began > max_seconds:
            tally.stopped_early = datetime.fromtimestamp(at, UTC).strftime("%a %H:%M UTC")
            return
        due = next_scheduled(svc)
        if due is not None and due <= at:
            clock.advance(MINUTE)  # a job scheduled in real time that will not run: move on


def progress(at: int, start: int, tally: Tally, elapsed: float) -> None:
    """A line on stderr every three simulated hours, for long runs."""
    hour = (at - start) // HOUR
    if hour // 3 > tally.reported // 3:
        tally.reported = hour
        when = datetime.fromtimestamp(at, UTC).strftime("%a %H:%M UTC")
        print(f"  ... simulated {when}: {tally.stops} stops, {elapsed:.0f} s", file=sys.stderr)


# -- the outcome ----------------------------------------------------------------------------------


def differing_activities(world: World, cast: list[DemoRider]) -> set[int]:
    """Activities whose stored row differs from (or is missing from, or absent on) Strava."""
    differ = set()
    with world.svc.engine.connect() as conn:
        for rider in cast:
            theirs = visible_truth(world.sim, rider)
            ours = {r.id: r._mapping for r in models.rider_activities(conn, rider.rider_id)}
            differ |= theirs.keys() ^ ours.keys()
            differ |= {
                i
                for i in theirs.keys() & ours.keys()
                if any(theirs[i][f] != ours[i][f] for f in COMPARED)
            }
    return differ


def waiting_fetches(svc) -> int:
    """Activity fetches still queued or waiting for the rate budget."""
    registry = ScheduledJobRegistry(queue=svc.queue("strava"))
    return svc.queue("strava").count + registry.get_job_count(cleanup=False)


def seed_design(tally: Tally, riders: int, start: int) -> dict:
    """What 6-hourly polling would have asked of Strava on the same day, and how fresh it is."""
    polls = [start + p for p in SEED_POLLS] + [start + DAY + SEED_POLLS[0]]
    requests, delays = riders * len(SEED_POLLS) * SEED_COST[0], []
    for times in tally.change_times.values():
        for previous, poll in itertools.pairwise([start, *polls[: len(SEED_POLLS)]]):
            if any(previous < t <= poll for t in times):
                requests += SEED_COST[1] - SEED_COST[0]
        delays += [min(p for p in polls if p >= t) - t for t in times]
    per_rider = requests / riders
    return {
        "requests": requests,
        "per_rider": per_rider,
        "largest": int(DAILY_READS // per_rider),
        "delays": delays,
    }


def peak_window_changes(tally: Tally) -> int:
    """The most changes (each a fetch) in any one 15-minute window of the day."""
    windows = Counter(t - t % WINDOW for times in tally.change_times.values() for t in times)
    return max(windows.values(), default=0)


def ours(world: World, tally: Tally, riders: int, waiting: int) -> dict:
    """Our requests on the day and the largest team the default limits keep current."""
    sim, svc = world.sim, world.svc
    with svc.engine.connect() as conn:
        run = models.get_run(conn, tally.sweep["run_id"]) if tally.sweep else None
    swept = run.riders_done if run else 0
    sweep_reads = run.requests_used if run else 0
    # Events' reads: their fetches (waiting ones will cost one each) and the lists that served
    # an athlete's backlog or catch-up: every list the sweep did not make.
    lists = sim.requests["GET /athlete/activities"] - sweep_reads
    fetches = sim.requests["GET /activities/{id}"] + waiting + lists
    sweep_cost = sweep_reads / swept if swept else 1.0
    event_cost = fetches / riders
    peak = peak_window_changes(tally) / riders
    bounds = {
        "day": DAILY_READS / (event_cost + sweep_cost),
        "sweep": DAILY_READS * (1 - RESERVE) / sweep_cost,
        "window": WINDOW_READS / peak if peak else float("inf"),
    }
    binding = min(bounds, key=bounds.get)
    return {
        "run": run,
        "swept": swept,
        "fetches": fetches,
        "lists": lists,
        "sweep_cost": sweep_cost,
        "per_rider": event_cost + sweep_cost,
        "requests": round(fetches + sweep_cost * riders),
        "largest": int(bounds[binding]),
        "binding": binding,
        "bounds": bounds,
    }


def hours(seconds: float) -> str:
    """A duration for people: seconds, minutes or hours."""
    if seconds != seconds:  # nan
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 2 * HOUR else f"{seconds / HOUR:.1f} h"


def dropped_fate(world: World, cast: list[DemoRider], tally: Tally, differ: set[int]) -> dict:
    """What became of the changes whose events Strava dropped: put right by a later event, by the
    sweep (and how long after the change), not visible to us at all, or still wrong (lost)."""
    table = models.webhook_event
    ids = [e["object_id"] for e in tally.dropped]
    with world.svc.engine.connect() as conn:
        query = (
            sa.select(table.c.object_id, sa.func.max(table.c.event_time))
            .where(table.c.object_id.in_(ids), table.c.status == "done")
            .group_by(table.c.object_id)
        )
        announced = dict(conn.execute(query).all())
    rider_of = {r.athlete_id: r.rider_id for r in cast}
    fate = {"lost": 0, "by_event": 0, "unseen": 0, "sweep_delays": []}
    for e in tally.dropped:
        swept = tally.reconciled_at.get(rider_of.get(e["owner_id"]), 0)
        if e["object_id"] in differ:
            fate["lost"] += 1
        elif announced.get(e["object_id"], 0) > e["event_time"]:
            fate["by_event"] += 1
        elif swept >= e["event_time"]:
            fate["sweep_delays"].append(swept - e["event_time"])
        else:
            fate["unseen"] += 1  # e.g. a delete of an activity whose create we never stored
    return fate


def print_world(cast: list[DemoRider], tally: Tally, args, statuses: Counter) -> None:
    d = tally.delivery
    print(f"  machine          {tally.host}")
    print(
        f"  team             {len(cast)} riders, seed {args.seed}; Strava read limits "
        f"{WINDOW_READS}/15 min, {DAILY_READS}/day; bulk reserve {RESERVE:.0%}"
    )
    print(
        f"  changes          {sum(tally.done.values())}: {tally.done['upload']} uploads, "
        f"{tally.done['edit']} edits, {tally.done['flip']} privacy flips, "
        f"{tally.done['delete']} deletions"
    )
    print(
        f"  events           {d['sent'] - d['duplicated'] + d['dropped']} sent by Strava: "
        f"{d['dropped']} dropped ({args.drop_rate:.0%}), {d['duplicated']} repeated, "
        f"{d['failed']} given up after 3 attempts; stored, by status: {dict(statuses)}"
    )
    print(f"  driven clock     {tally.stops} stops over the simulated day and night")


def print_requests(world: World, tally: Tally, mine: dict, waiting: int) -> None:
    sim = world.sim
    uploads, changes = max(tally.done["upload"], 1), max(sum(tally.done.values()), 1)
    print(
        f"  events           {sim.requests['GET /activities/{id}']} GET /activities/{{id}} "
        f"(+{waiting} still waiting for budget at the end) and {mine['lists']} lists of an "
        f"athlete's backlog: {mine['fetches'] / uploads:.2f} reads per new activity, "
        f"{mine['fetches'] / changes:.2f} per change"
    )
    print(
        f"  sweep            {mine['sweep_cost'] * mine['swept']:.0f} GET /athlete/activities "
        f"for {mine['swept']} riders: {mine['sweep_cost']:.2f} per rider"
    )
    print(f"  429 answers      {sim.rate_limited}")
    ran = ", ".join(f"{n} {name}" for name, n in world.worker.ran.most_common())
    print(f"  jobs run         {ran} (a job that found no permit ran again later)")
    print(f"  busiest window   {sim.max_window_usage()} reads of {WINDOW_READS}")
    print(f"  token refreshes  {sim.requests['POST /oauth/token']} (OAuth: not rate limited)")
    print(
        f"  404 retries      {world.worker.ran['404 retries']} fetches again after a create's 404"
    )


def print_sweep(tally: Tally, run) -> None:
    if run is None:
        print("  the sweep never started (see --max-minutes)")
        return
    print(
        f"  planned {tally.sweep['planned']}, deferred {tally.sweep['deferred']} to the next "
        f"night; {run.riders_done} done by the end ({run.status}); "
        f"{run.riders_rescheduled} rider jobs re-run after waiting for a 15-minute window"
    )
    print(
        f"  repaired {run.activities_created} created, {run.activities_updated} updated, "
        f"{run.activities_deleted} deleted ({run.activities_unannounced} never announced)"
    )


def print_freshness(tally: Tally, fate: dict, differ: set[int], dropped_ids: set[int]) -> None:
    fresh = tally.freshness
    print(
        f"  event -> row     p50 {hours(percentile(fresh, 0.5))}, p95 "
        f"{hours(percentile(fresh, 0.95))}, max {hours(max(fresh, default=float('nan')))} "
        f"over {len(fresh)} stored events (simulated time)"
    )
    print(
        f"  dropped events   {len(tally.dropped)}: {len(fate['sweep_delays'])} repaired by the "
        f"sweep (p50 {hours(percentile(fate['sweep_delays'], 0.5))} after the change), "
        f"{fate['by_event']} by a later event, {fate['unseen']} changed nothing we hold, "
        f"{fate['lost']} lost (still wrong at the end: the sweep has not reached the rider)"
    )
    print(
        f"  vs Strava        {len(differ)} activities differ: {len(differ & dropped_ids)} after a "
        f"dropped event, {len(differ - dropped_ids)} with their fetch still waiting for budget"
    )


def print_capacity(mine: dict, seed: dict, tally: Tally) -> None:
    fresh = tally.freshness
    print("                                     reads/rider/day  reads this day  largest team")
    for name, figures in (
        ("seed: every rider every 6 hours", seed),
        ("ours: events + sweep", mine),
    ):
        print(
            f"  {name:<33}{figures['per_rider']:>16.2f}{figures['requests']:>16}"
            f"{figures['largest']:>14}"
        )
    b = mine["bounds"]
    print(
        f"  ours is bound by the {mine['binding']} limit; bounds: day {b['day']:.0f}, "
        f"sweep (bulk lane, {1 - RESERVE:.0%} of a day) {b['sweep']:.0f}, "
        f"busiest 15-min window {b['window']:.0f}"
    )
    print(
        f"  freshness p50/p95: seed {hours(percentile(seed['delays'], 0.5))}/"
        f"{hours(percentile(seed['delays'], 0.95))}, ours {hours(percentile(fresh, 0.5))}/"
        f"{hours(percentile(fresh, 0.95))}"
    )


def print_scale(world: World, cast: list[DemoRider], tally: Tally, mine: dict) -> str:
    """Reads per rider-day against the floor, the sweep's 48-hour reach, windows, memory."""
    sim, riders = world.sim, len(cast)
    reads = sim.requests["GET /activities/{id}"] + sim.requests["GET /athlete/activities"]
    swept = len(tally.reconciled_at)
    floor = (tally.done["upload"] + swept) / riders  # 1 a new activity + 1 a rider swept
    realtime = sim.requests["GET /activities/{id}"]
    beyond, needed = reconcile.sweep_capacity(
        riders, DAILY_READS, realtime, reserve=RESERVE, min_share=MIN_SHARE
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  reads/rider-day  {reads / riders:.2f} (floor {floor:.2f}: 1 a new activity + 1 a sweep)"
    )
    print(
        f"  swept in 48 h    {swept} of {riders} riders; beyond capacity by the status figure: "
        f"{beyond} (needs a read limit of {needed}/day)"
    )
    print(
        f"  windows          busiest {sim.max_window_usage()} of {WINDOW_READS}; "
        f"{sim.rate_limited} answers 429"
    )
    if tally.workers_peak:
        print(
            f"  peak memory      {peak:.0f} MiB this process (web app, simulator), "
            f"{tally.workers_peak:.0f} MiB the largest worker process"
        )
    else:
        print(f"  peak memory      {peak:.0f} MiB (this process: web app, worker and simulator)")
    return (
        f"{reads / riders:.2f} reads/rider-day (floor {floor:.2f}), {swept}/{riders} swept in "
        f"48 h, {beyond} beyond capacity, peak {peak:.0f} MiB"
    )


def report(world: World, cast: list[DemoRider], tally: Tally, args, took: float) -> None:
    """Print the figures and the one-line summary."""
    sim, svc, riders = world.sim, world.svc, len(cast)
    waiting = waiting_fetches(svc)
    mine, seed = ours(world, tally, riders, waiting), seed_design(tally, riders, world.start)
    differ = differing_activities(world, cast)
    dropped_ids = {e["object_id"] for e in tally.dropped}
    fate = dropped_fate(world, cast, tally, differ)
    with svc.engine.connect() as conn:
        statuses = Counter(dict(models.event_counts_since(conn, datetime(2000, 1, 1, tzinfo=UTC))))
    heading("The simulated day")
    print_world(cast, tally, args, statuses)
    heading("Strava read requests")
    print_requests(world, tally, mine, waiting)
    heading("Sweep at 03:17 UTC")
    print_sweep(tally, mine["run"])
    heading("Freshness and losses")
    print_freshness(tally, fate, differ, dropped_ids)
    heading(f"Keeping a team current on {DAILY_READS:,} reads a day")
    print_capacity(mine, seed, tally)
    heading("Scale")
    scale = print_scale(world, cast, tally, mine)
    heading("Work per unit")
    scale += print_costs(world, tally)
    if tally.stopped_early:
        print(f"\n  (stopped by --max-minutes at simulated {tally.stopped_early})")
    fresh, uploads = tally.freshness, max(tally.done["upload"], 1)
    deferred = tally.sweep["deferred"] if tally.sweep else riders
    print(
        f"\nSummary: {riders} riders: {mine['fetches'] / uploads:.2f} reads/new activity, "
        f"{mine['sweep_cost']:.2f}/rider swept, {sim.rate_limited} 429s, {fate['lost']} events "
        f"lost, freshness p50 {hours(percentile(fresh, 0.5))} p95 "
        f"{hours(percentile(fresh, 0.95))}, sweep reached {mine['swept']}/deferred {deferred}; "
        f"largest team {mine['largest']} vs {seed['largest']} (seed design); "
        f"{world.worker.ran['404 retries']} 404 retries; {scale}; {took:.0f} s"
    )


def print_costs(world: World, tally: Tally) -> str:
    """Job runs per Strava read, and Redis commands, SQL statements and CPU per unit of work."""
    sim, ran, costs = world.sim, world.worker.ran, world.worker.costs
    reads = sim.requests["GET /activities/{id}"] + sim.requests["GET /athlete/activities"]
    work = sum(ran.values()) - ran["recover"] - ran["404 retries"]  # 404 retries: fetches too
    cpu = sum(v for (unit, kind), v in costs.items() if kind == "cpu" and unit != "recover")
    print(
        f"  job runs         {work / max(reads, 1):.2f} per Strava read ({work} runs of fetch, "
        f"sweep, catch-up and revocation jobs for {reads} reads; and {ran['recover']} runs of "
        f"the recovery pass, one a stop of the driven clock)"
    )
    where = "the worker processes" if world.pool else "jobs, the simulator's answers included"
    print(f"  CPU per read     {1000 * cpu / max(reads, 1):.1f} ms in {where}")
    total = Counter()
    for (unit, kind), value in costs.items():
        total[kind] += value if unit != "recover" else 0
    print(
        f"  all jobs         {total['redis_commands'] / max(reads, 1):.1f} Redis commands and "
        f"{total['sql'] / max(reads, 1):.1f} SQL statements per Strava read (recovery pass apart)"
    )
    units = (
        ("webhook event", tally.webhook, "webhook", tally.delivery["sent"]),
        ("fetch job run", costs, "sync_activity", ran["sync_activity"]),
        ("swept rider", costs, "reconcile_rider", ran["reconcile_rider"]),
    )
    for name, source, unit, count in units:
        n = max(count, 1)
        print(
            f"  per {name:<14}{source[unit, 'redis_commands'] / n:5.1f} Redis commands "
            f"({source[unit, 'redis'] / n:.1f} round trips), {source[unit, 'sql'] / n:4.1f} SQL "
            f"statements, {1000 * source[unit, 'cpu'] / n:.1f} ms CPU ({count} of them)"
        )
    return f", {work / max(reads, 1):.2f} job runs/read"


# -- running it -----------------------------------------------------------------------------------


def settings(sim: StravaSim, database_url: str, redis_url: str | None, create_delay: int) -> dict:
    """The app's configuration: default Strava limits, the simulator."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "INLINE_WORKER": False,  # the benchmark runs the jobs itself, at the driven clock's time
        "SECRET_KEY": secrets.token_hex(16),
        "STRAVA_CLIENT_ID": sim.client_id,
        "STRAVA_CLIENT_SECRET": sim.client_secret,
        "STRAVA_API_URL": sim.api_url,
        "STRAVA_OAUTH_URL": sim.oauth_url,
        "STRAVA_VERIFY_TOKEN": secrets.token_urlsafe(16),
        "STRAVA_SUBSCRIPTION_ID": None,
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "STRAVA_RATE_LIMITS": (2 * WINDOW_READS, 2 * DAILY_READS),
        "STRAVA_READ_RATE_LIMITS": (WINDOW_READS, DAILY_READS),
        "RECONCILE_RESERVE": RESERVE,
        "RECONCILE_MIN_SHARE": MIN_SHARE,
        "RECONCILE_LOOKBACK_DAYS": 7,
        "CREATE_FETCH_DELAY_SECONDS": (
            config.from_environ({}).create_fetch_delay_seconds
            if create_delay is None
            else create_delay
        ),
    }


def skip_fsync(engine) -> None:
    """A throwaway SQLite file need not survive a power cut: no fsync per commit (speed only)."""
    if engine.dialect.name != "sqlite":
        return

    def pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    sa.event.listen(engine, "connect", pragmas)


@contextlib.contextmanager
def backing_services(args):
    """(database URL, Redis URL): real ones when given (wiped), else a temp SQLite file and None."""
    with contextlib.ExitStack() as stack:
        if args.redis_url:
            stack.enter_context(reserved_redis(args.redis_url))
        database_url = args.database_url and config.database_url(args.database_url, "")
        if not database_url:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="strava-sync-day-"))
            database_url = f"sqlite:///{folder}/day.sqlite"
        yield database_url, args.redis_url


def run(args) -> None:
    """Build the world, drive the day, print what it cost."""
    began, rng, tally = time.monotonic(), random.Random(args.seed), Tally()
    start = day_start()
    faults = Faults(
        drop_rate=args.drop_rate,
        duplicate_rate=args.duplicate_rate,
        shuffle=True,
        not_found_after_create=args.not_ready,
    )
    with (
        contextlib.ExitStack() as stack,
        backing_services(args) as (database_url, redis_url),
        StravaSim(
            seed=args.seed,
            faults=faults,
            limits=(2 * WINDOW_READS, 2 * DAILY_READS),
            read_limits=(WINDOW_READS, DAILY_READS),
        ) as sim,
    ):
        sim.clock.advance(start - sim.clock.now())
        app = create_app(settings(sim, database_url, redis_url, args.create_delay), sim.clock.now)
        svc = app.extensions["strava_sync"]
        try:
            skip_fsync(svc.engine)
            models.drop_all(svc.engine)  # the migration record too, or init_db skips
            models.init_db(svc.engine)
            counting = stack.enter_context(counting_round_trips(svc.engine))

            def make_worker():
                queues = [svc.queue(n) for n in QUEUES]
                return BurstWorker(queues, connection=svc.redis, counts=counting)

            world = World(sim, app, svc, make_worker(), start, rng)
            cast = make_cast(sim, rng, args.riders)
            held = seed_riders(world, cast)
            changes = plan_day(cast, rng, start, args.bulk)
            if args.workers:
                world.pool = WorkerPool(svc, sim.clock, make_worker, args.workers)
            print(f"{args.riders} riders connected, {held} activities of the past week held; ")
            print(f"simulating {len(changes)} changes over the day...", flush=True)
            with serve_in_thread(app) as url:
                subscribe(world, url)
                simulate(world, changes, tally, args.max_minutes * 60)
            if world.pool is not None:
                ran, costs, tally.workers_peak = world.pool.stop()
                world.worker.ran.update(ran)
                world.worker.costs.update(costs)
            report(world, cast, tally, args, time.monotonic() - began)
        finally:
            if args.database_url:
                models.drop_all(svc.engine)  # the migration record too, or init_db skips
            svc.engine.dispose()
            svc.redis.close()
            svc.client.session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--riders", type=int, default=1000, help="team size (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--drop-rate", type=float, default=0.02, help="events Strava drops")
    parser.add_argument("--duplicate-rate", type=float, default=0.05, help="events repeated")
    parser.add_argument(
        "--create-delay", type=int, default=None, help="CREATE_FETCH_DELAY_SECONDS (default: ours)"
    )
    parser.add_argument(
        "--not-ready", type=float, default=20, help="seconds Strava 404s a new activity"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=20, help="real-time bound on the simulation loop"
    )
    parser.add_argument(
        "--read-limits", default="100,1000", help="Strava's read limits, 15-min and daily"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (needs real Redis and database)"
    )
    parser.add_argument(
        "--bulk", type=float, default=0.0, help=f"share of riders uploading {BULK_UPLOAD} at once"
    )
    parser.add_argument("--redis-url", help="a real Redis database to use (its keys are wiped)")
    parser.add_argument("--database-url", help="a real database to use (its tables are dropped)")
    args = parser.parse_args()
    if args.workers and not (args.redis_url and args.database_url):
        parser.error("--workers needs --redis-url and --database-url")
    global WINDOW_READS, DAILY_READS  # every figure of the run is relative to these
    WINDOW_READS, DAILY_READS = (int(n) for n in args.read_limits.split(","))
    exit_on_sigterm()
    run(args)


if __name__ == "__main__":
    main()
