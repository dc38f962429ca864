"""Planning the nightly sweep over 100,000 connections in PostgreSQL: time and queries.

Measures `reconcile.plan_sweep` (which riders tonight's budget reaches) and `sweep.queue_sweep` in
dry and real mode (plan, record the sync_run, enqueue one RQ job per planned rider), counting the
SQL statements each sends (a `before_cursor_execute` listener) and its Redis round trips, over
connections bulk-loaded with COPY into PostgreSQL (database `bench`; Redis database 11 holds the
budget and the queue).
With Strava's default limits the sweep plans 800 riders (80 % of 1,000 reads); --plan-all raises
the limits so that every connection is planned and enqueued, to time the enqueueing at scale. For
reference it also times the same selection done in SQL (ORDER BY ... LIMIT plus a COUNT).

Tables and Redis keys are wiped before and after; no worker runs the queued jobs.

Run: .venv/bin/python bench/sweep_plan.py [--connections 100000] [--repeat 5] [--plan-all]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from _common import (
    BENCH_DATABASE_URL,
    BENCH_REDIS_URL,
    counting_round_trips,
    exit_on_sigterm,
    fresh_tables,
    heading,
    machine,
    reserved_redis,
)
from cryptography.fernet import Fernet

import config
import models
import reconcile
from app import create_app
from jobs import sweep

NEVER_SWEPT, REVOKED = 0.05, 0.02  # shares of connections: new riders, revoked access


def load_connections(engine, count: int, seed: int) -> float:
    """COPY `count` riders and their connections in; returns the seconds it took."""
    rng, now = random.Random(seed), datetime.now(UTC)
    began = time.perf_counter()
    with engine.begin() as conn:
        raw = conn.connection.driver_connection  # psycopg 3, for COPY
        with raw.cursor() as cursor:
            with cursor.copy("COPY riders (id, name, created_at) FROM STDIN") as copy:
                for i in range(1, count + 1):
                    copy.write_row((i, f"Rider {i}", now))
            columns = (
                "rider_id, athlete_id, access_token, refresh_token, expires_at, scope, "
                "connected_at, last_reconciled_at, deauthorized_at, backfill_before"
            )
            with cursor.copy(f"COPY strava_connection ({columns}) FROM STDIN") as copy:
                for i in range(1, count + 1):
                    copy.write_row(connection_row(rng, i, now))
    took = time.perf_counter() - began
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE riders, strava_connection"))
    return took


def connection_row(rng: random.Random, rider_id: int, now: datetime) -> tuple:
    """One strava_connection row: mostly swept in the past week, some never, a few revoked."""
    draw = rng.random()
    swept = None if draw < NEVER_SWEPT else now - timedelta(days=rng.uniform(0, 7))
    revoked = now if draw > 1 - REVOKED else None
    token = None if revoked else f"token-{rider_id}"
    expires = int(now.timestamp()) + 6 * 3600
    scope = "read,activity:read_all"
    return (rider_id, 1_000_000 + rider_id, token, token, expires, scope, now, swept, revoked, 0)


def timed(func, engine, repeat: int) -> tuple[list[float], Counter, object]:
    """Run func `repeat` times: (seconds of each run, round trips of the last, its result)."""
    seconds, runs = [], []
    for _ in range(repeat):
        with counting_round_trips(engine) as trips:
            began = time.perf_counter()
            runs.append(func())
            seconds.append(time.perf_counter() - began)
    return seconds, trips, runs[-1]


def plan_in_sql(engine, capacity: int) -> tuple[list[int], int]:
    """The reference: the same order and filter, with the cut and the count done by PostgreSQL."""
    table = models.strava_connection
    connected = sa.and_(table.c.deauthorized_at.is_(None), table.c.refresh_token.is_not(None))
    order = (table.c.last_reconciled_at.is_not(None), table.c.last_reconciled_at, table.c.rider_id)
    with engine.connect() as conn:
        query = sa.select(table.c.rider_id).where(connected).order_by(*order).limit(capacity)
        planned = list(conn.execute(query).scalars())
        total = conn.execute(sa.select(sa.func.count()).where(connected)).scalar()
    return planned, total - len(planned)


def ms(seconds: list[float]) -> str:
    """First (cold) and median of the rest, in milliseconds."""
    return f"first {seconds[0] * 1000:7.1f} ms, median {median_ms(seconds):7.1f} ms"


def median_ms(seconds: list[float]) -> float:
    """The median of the warm runs (all but the first), in milliseconds."""
    return statistics.median(seconds[1:] or seconds) * 1000


def settings(args) -> dict:
    """The app on the benchmark's services; --plan-all lifts the limits above the team's size."""
    big = (args.connections, 2 * args.connections)
    return {
        "DATABASE_URL": config.database_url(args.database_url, ""),
        "REDIS_URL": args.redis_url,
        "INLINE_WORKER": False,
        "STRAVA_RATE_LIMITS": big if args.plan_all else (200, 2000),
        "STRAVA_READ_RATE_LIMITS": big if args.plan_all else (100, 1000),
        "RECONCILE_RESERVE": 0.2,
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),  # as production runs
    }


def fetch_all(svc) -> int:
    """plan_sweep's one query alone: every connected rider, in sweep order, into Python."""
    with svc.engine.connect() as conn:
        return len(models.riders_to_reconcile(conn))


def measure(svc, repeat: int) -> dict:
    """Time plan_sweep and its parts, the SQL reference, and queue_sweep in both modes."""
    engine, f = svc.engine, {}
    f["plan"], f["plan_trips"], (planned, deferred) = timed(
        lambda: reconcile.plan_sweep(svc), engine, repeat
    )
    f["planned"], f["deferred"] = len(planned), deferred
    f["query"] = timed(lambda: fetch_all(svc), engine, repeat)[0]
    f["budget"] = timed(lambda: svc.budget.available("bulk"), engine, repeat)[0]
    f["reference"] = timed(lambda: plan_in_sql(engine, len(planned)), engine, repeat)[0]
    for mode in ("dry", "real"):
        seconds, trips, summary = timed(
            lambda mode=mode: sweep.queue_sweep(svc, "bench", dry_run=mode == "dry"), engine, 1
        )
        enqueued = svc.queue("reconcile").count
        svc.queue("reconcile").empty()  # the next mode starts from an empty queue
        f[mode] = {"seconds": seconds[0], "trips": trips, "jobs": enqueued, **summary}
    return f


def run(args) -> None:
    """Load the rows, measure, print."""
    host = machine()
    with reserved_redis(args.redis_url), fresh_tables(args.database_url) as engine:
        loaded = load_connections(engine, args.connections, args.seed)
        app = create_app(settings(args))
        svc = app.extensions["strava_sync"]
        try:
            figures = measure(svc, args.repeat)
        finally:
            svc.engine.dispose()
            svc.redis.close()
    report(args, host, loaded, figures)


def report(args, host: str, loaded: float, f: dict) -> None:
    """Print the figures and the one-line summary."""
    heading(f"Planning the sweep over {args.connections:,} connections")
    print(f"  machine          {host}")
    print(
        f"  loaded           {args.connections:,} riders + connections with COPY in "
        f"{loaded:.2f} s ({2 * args.connections / loaded:,.0f} rows/s); PostgreSQL "
        f"{args.database_url.rsplit('/', 1)[-1]}, Redis {args.redis_url}"
    )
    trips = f["plan_trips"]
    print(
        f"  plan_sweep       {ms(f['plan'])}; {trips['sql']} SQL statement, {trips['redis']} Redis "
        f"round trip; planned {f['planned']:,}, deferred {f['deferred']:,}"
    )
    print(f"    its query      {ms(f['query'])} (all {f['planned'] + f['deferred']:,} rows)")
    print(f"    its budget     {ms(f['budget'])} (Redis: budget.available)")
    print(f"  SQL reference    {ms(f['reference'])} (ORDER BY .. LIMIT {f['planned']:,} + COUNT)")
    for mode in ("dry", "real"):
        sweep, count = f[mode], max(f[mode]["jobs"], 1)
        per_job = (sweep["seconds"] * 1000 - median_ms(f["plan"])) / count
        sql, redis_trips = sweep["trips"]["sql"], sweep["trips"]["redis"]
        print(
            f"  queue_sweep {mode:<5}{sweep['seconds'] * 1000:8.1f} ms; {sql} SQL statements, "
            f"{redis_trips:,} Redis round trips; {sweep['jobs']:,} jobs enqueued: about "
            f"{per_job * 1000:,.0f} us and {(redis_trips - trips['redis']) / count:.1f} Redis "
            "round trips each"
        )
    real = f["real"]
    print(
        f"\nSummary: {args.connections:,} connections: plan_sweep {median_ms(f['plan']):.0f} ms "
        f"in {trips['sql']} query ({f['planned']:,} planned, {f['deferred']:,} deferred; "
        f"SQL LIMIT reference {median_ms(f['reference']):.0f} ms); queue_sweep (real) "
        f"{real['seconds'] * 1000:.0f} ms in {real['trips']['sql']} queries, {real['jobs']:,} jobs "
        "enqueued"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100_000, help="rows to plan over")
    parser.add_argument("--repeat", type=int, default=5, help="timed plan_sweep runs")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the rows")
    parser.add_argument(
        "--plan-all", action="store_true", help="limits high enough to plan and enqueue everyone"
    )
    parser.add_argument("--redis-url", default=BENCH_REDIS_URL, help="wiped before and after")
    parser.add_argument("--database-url", default=BENCH_DATABASE_URL, help="tables dropped")
    args = parser.parse_args()
    if not 0 < args.connections <= 1_000_000 or not 0 < args.repeat <= 50:
        parser.error("keep --connections within 1,000,000 and --repeat within 50")
    exit_on_sigterm()
    run(args)


if __name__ == "__main__":
    main()
