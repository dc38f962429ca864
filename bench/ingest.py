"""The webhook under load: requests per second and latency, against a bare Flask endpoint.

Measures the event POST (`/api/strava/webhook`) served by gunicorn on loopback with real Redis
(database 11) and PostgreSQL (database `bench`): each request is a distinct, valid event for a
connected athlete, so each one is parsed, checked, stored and queued. The reference is a bare Flask
JSON endpoint (bench/bare_app.py) served by the same gunicorn configuration. Prints requests per
second and p50/p99 latency for both and their ratio; then sends a burst of 2,000 events within one
second and checks that every one was answered 200 and stored (rows counted) and queued (jobs
counted), with the latency each saw, measured from when it was due to be sent (as Strava would see
it, since its 2-second timeout starts when it sends).

Load comes from `wrk` when it is installed (`apt-get install wrk`), else from a small threaded
generator in this script. The burst is open-loop (asyncio, one connection per event, each sent when
due whether or not earlier ones were answered) and checks every answer.
No workers run: queued jobs stay in Redis until the end, when database 11 and the tables are wiped.

Run: .venv/bin/python bench/ingest.py [--duration 10] [--connections 8] [--burst 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import sqlalchemy as sa
from _common import (
    BENCH_DATABASE_URL,
    BENCH_REDIS_URL,
    counting_round_trips,
    exit_on_sigterm,
    fresh_tables,
    gunicorn,
    heading,
    machine,
    peak_memory_mib,
    percentile,
    reserved_redis,
)
from cryptography.fernet import Fernet

import config
import models
from app import create_app

SUBSCRIPTION_ID = 120475
PATH = "/api/strava/webhook"
HEADERS = {"Content-Type": "application/json"}
WARM_UP_SECONDS = 1  # of load before each measurement: imports, pools, caches
STRAVA_TIMEOUT = 2.0
# Distinct object ids per phase, so no event repeats another phase's.
BASE_IDS = {
    "warm-up": 1_000_000_000,
    "load": 2_000_000_000,
    "burst": 3_000_000_000,
    "cost": 4_000_000_000,
    "in-flight": 5_000_000_000,
}
COST_EVENTS = 200  # events posted in-process to count what one costs

WRK_SCRIPT = """
-- Distinct Strava events: each wrk thread numbers its own, so no request repeats another.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end
local sent = 0
function request()
  sent = sent + 1
  local object_id = %(base)d + thread_id * 10000000 + sent
  local body = string.format(
    '{"aspect_type":"create","event_time":%(time)d,"object_id":%%d,"object_type":"activity",'
    .. '"owner_id":%%d,"subscription_id":%(subscription)d,"updates":{}}',
    object_id, 1 + object_id %% %(owners)d)
  return wrk.format(nil, nil, nil, body)
end
"""


@dataclass
class Load:
    """One measured run: throughput and latency (milliseconds)."""

    requests: int
    seconds: float
    p50: float
    p99: float
    errors: int
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Answer:
    """One burst request: status and body, and when it was due, sent and answered (perf_counter)."""

    status: int
    body: bytes
    due: float
    sent: float
    done: float


def event_body(object_id: int, owners: int) -> bytes:
    """A create event as Strava sends it, for one of the connected athletes."""
    return json.dumps(
        {
            "aspect_type": "create",
            "event_time": int(time.time()),
            "object_id": object_id,
            "object_type": "activity",
            "owner_id": 1 + object_id % owners,
            "subscription_id": SUBSCRIPTION_ID,
            "updates": {},
        }
    ).encode()


def connect_riders(engine, count: int) -> None:
    """Riders 1..count connected as athletes 1..count (the tokens are never used here)."""
    now = datetime.now(UTC)
    riders = [{"id": i, "name": f"Rider {i}", "created_at": now} for i in range(1, count + 1)]
    connections = [
        {
            "rider_id": i,
            "athlete_id": i,
            "access_token": "unused",
            "refresh_token": "unused",
            "expires_at": 0,
            "scope": "read,activity:read_all",
            "connected_at": now,
            "backfill_before": 0,
        }
        for i in range(1, count + 1)
    ]
    with engine.begin() as conn:
        conn.execute(models.riders.insert(), riders)
        conn.execute(models.strava_connection.insert(), connections)


# -- the generators ----------------------------------------------------------------------


def post(url: str, body: bytes) -> tuple[int, bytes]:
    """One POST on a fresh connection (gunicorn's sync workers close each one anyway)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", PATH, body, HEADERS)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def closed_loop(url: str, *, seconds: float, connections: int, base: int, owners: int) -> Load:
    """`connections` threads each sending one event after another for `seconds`."""
    latencies, errors, lock = [], Counter(), threading.Lock()
    ids = iter(range(base, base + 10_000_000))
    deadline = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < deadline:
            with lock:
                object_id = next(ids)
            began = time.perf_counter()
            try:
                status, _ = post(url, event_body(object_id, owners))
            except OSError:
                status = 0  # refused or timed out: an error like any non-200
            with lock:
                latencies.append(time.perf_counter() - began)
                errors[status != 200] += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    ms = [s * 1000 for s in latencies]
    return Load(len(ms), took, percentile(ms, 0.5), percentile(ms, 0.99), errors[True], "python")


async def _send_when_due(host: str, port: int, body: bytes, due: float) -> Answer:
    """Open a connection at `due`, POST one event, read the answer to the end."""
    await asyncio.sleep(max(0.0, due - time.perf_counter()))
    sent = time.perf_counter()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        writer.write(head.encode() + body)
        raw = await asyncio.wait_for(reader.read(), 30)  # the server closes after answering
        writer.close()
        status, answer = int(raw.split(b" ", 2)[1]), raw.partition(b"\r\n\r\n")[2]
    except (OSError, TimeoutError, ValueError, IndexError) as exc:
        status, answer = 0, repr(exc).encode()
    return Answer(status, answer, due, sent, time.perf_counter())


def burst(
    url: str, *, count: int, seconds: float, owners: int, in_flight=None, base=BASE_IDS["burst"]
) -> dict:
    """Send `count` events due evenly over `seconds`, each on its own connection whether or not
    earlier ones were answered (as Strava's senders would); every answer and when it came.

    With `in_flight`, at most that many are sent at once: `count` events from that many senders.
    """
    parts = urlsplit(url)
    bodies = [event_body(base + i, owners) for i in range(count)]
    gate = asyncio.Semaphore(in_flight or count)

    async def send(body: bytes, due: float) -> Answer:
        async with gate:
            return await _send_when_due(parts.hostname, parts.port, body, due)

    async def send_all() -> tuple[list[Answer], float]:
        start = time.perf_counter() + 0.2
        sends = [send(body, start + i * seconds / count) for i, body in enumerate(bodies)]
        return list(await asyncio.gather(*sends)), start

    answers, start = asyncio.run(send_all())
    return {
        "answers": answers,
        "offered_in": max(a.sent for a in answers) - min(a.sent for a in answers),
        "took": max(a.done for a in answers) - start,
    }


# -- wrk ------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def with_wrk(url: str, *, seconds: float, connections: int, base: int, owners: int) -> Load:
    """wrk with one thread (it shares the two cores with the server) and a script of events."""
    script = WRK_SCRIPT % {
        "base": base,
        "time": int(time.time()),
        "subscription": SUBSCRIPTION_ID,
        "owners": owners,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", lua.name]
        out = subprocess.run(
            [*argv, url + PATH], capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    requests, took = re.search(r"(\d+) requests in (\S+),", out).groups()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)  # connect, read, write, timeout
    failed = sum(map(int, re.findall(r"\d+", socket.group(1)))) if socket else 0
    return Load(
        int(requests),
        _ms(took) / 1000,
        _ms(percentiles["50"]),
        _ms(percentiles["99"]),
        (int(errors.group(1)) if errors else 0) + failed,
        "wrk",
    )


# -- what one event costs ------------------------------------------------------------------------


def cost_per_event(args, owners: int) -> dict:
    """Post events to the webhook in this process (Flask's test client) and count round trips."""
    app = create_app(
        {
            "DATABASE_URL": config.database_url(args.database_url, ""),
            "REDIS_URL": args.redis_url,
            "STRAVA_SUBSCRIPTION_ID": str(SUBSCRIPTION_ID),
            "INLINE_WORKER": False,
            "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),  # as production runs
        }
    )
    svc, client = app.extensions["strava_sync"], app.test_client()
    ids = iter(range(BASE_IDS["cost"], BASE_IDS["cost"] + 2 * COST_EVENTS))
    try:
        for _ in range(COST_EVENTS):  # warm: pools filled, scripts loaded, subscription cached
            client.post(PATH, data=event_body(next(ids), owners), headers=HEADERS)
        with counting_round_trips(svc.engine) as counts:
            began = time.perf_counter()
            for _ in range(COST_EVENTS):
                client.post(PATH, data=event_body(next(ids), owners), headers=HEADERS)
            counts["ms"] = (time.perf_counter() - began) * 1000
    finally:
        svc.engine.dispose()
        svc.redis.close()
    return {name: n / COST_EVENTS for name, n in counts.items()}


# -- running it -----------------------------------------------------------------------------------


def measure(url: str, args, base: int) -> Load:
    """Warm the server up, then load it for --duration seconds with events numbered from base."""
    warm_up = dict(seconds=WARM_UP_SECONDS, connections=2, base=BASE_IDS["warm-up"])
    closed_loop(url, owners=args.riders, **warm_up)
    options = dict(seconds=args.duration, connections=args.connections, base=base)
    if args.generator == "wrk":
        return with_wrk(url, owners=args.riders, **options)
    return closed_loop(url, owners=args.riders, **options)


def stored(engine, base: int, count: int) -> Counter:
    """Stored events with object ids in [base, base + count), by status."""
    table = models.webhook_event
    query = (
        sa.select(table.c.status, sa.func.count())
        .where(table.c.object_id >= base, table.c.object_id < base + count)
        .group_by(table.c.status)
    )
    with engine.connect() as conn:
        return Counter(dict(conn.execute(query).all()))


def fetch_jobs(store, base: int) -> int:
    """Queued fetch jobs for the activities of one phase (job ids name the activity)."""
    prefix = str(base)[0]  # each phase's ids are ten digits starting with its own digit
    return sum(1 for _ in store.scan_iter(f"rq:job:sync-activity-{prefix}?????????-*", count=1000))


def print_load(name: str, load: Load) -> None:
    print(
        f"  {name:<24}{load.rps:>10.0f}{load.p50:>10.1f}{load.p99:>10.1f}"
        f"{load.requests:>10}{load.errors:>8}"
    )


def print_burst(result: dict, rows: Counter, jobs: int, count: int) -> tuple[int, float]:
    answers = result["answers"]
    ok = sum(1 for a in answers if a.status == 200 and b'"queued"' in a.body)
    late = [a.done - a.due for a in answers]
    in_time = sum(1 for s in late if s <= STRAVA_TIMEOUT)
    print(
        f"  offered          {count} events in {result['offered_in']:.2f} s "
        f"(all answered after {result['took']:.2f} s)"
    )
    print(f"  answered 200     {ok} of {count} with status queued; others: {count - ok}")
    print(f"  stored           {sum(rows.values())} rows {dict(rows)}; {jobs} fetch jobs queued")
    print(
        f"  latency from due p50 {percentile(late, 0.5) * 1000:.0f} ms, p99 "
        f"{percentile(late, 0.99) * 1000:.0f} ms, max {max(late) * 1000:.0f} ms; "
        f"{in_time} of {count} within Strava's {STRAVA_TIMEOUT:.0f} s"
    )
    return ok, max(late)


def bursts_in_flight(url: str, args, engine) -> dict[int, tuple[int, int, float]]:
    """--burst events from each --in-flight number of senders at once, as fast as answered:
    {senders: (answered 200, stored, p99 seconds from send to answer)}."""
    found = {}
    for i, in_flight in enumerate(args.in_flight):
        base = BASE_IDS["in-flight"] + i * 100_000_000
        result = burst(
            url, count=args.burst, seconds=0, owners=args.riders, in_flight=in_flight, base=base
        )
        answers = result["answers"]
        ok = sum(1 for a in answers if a.status == 200)
        rows = sum(stored(engine, base, args.burst).values())
        found[in_flight] = (ok, rows, percentile([a.done - a.sent for a in answers], 0.99))
    return found


def environment(args) -> dict:
    """What a deployment sets, pointing at the benchmark's database and Redis."""
    return dict(
        os.environ,
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        STRAVA_SUBSCRIPTION_ID=str(SUBSCRIPTION_ID),
        SECRET_KEY=secrets.token_hex(16),  # one for both gunicorn workers, as in production
        TOKEN_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        PYTHONUNBUFFERED="1",
    )


def run(args) -> None:
    """Measure the bare endpoint, the webhook, the burst and one event's cost; print the figures."""
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"
    env, host = environment(args), machine()
    with reserved_redis(args.redis_url) as store, fresh_tables(args.database_url) as engine:
        connect_riders(engine, args.riders)
        served = dict(workers=args.workers, threads=args.threads, ready_path="/healthz")
        with (
            gunicorn("bench.bare_app:create_app()", env, **served) as bare_url,
            gunicorn("app:create_app()", env, **served) as url,
        ):
            rounds = [
                (measure(bare_url, args, BASE_IDS["load"]), measure(url, args, base))
                for base in range(BASE_IDS["load"], BASE_IDS["burst"], 100_000_000)[: args.rounds]
            ]
            result = burst(url, count=args.burst, seconds=args.burst_seconds, owners=args.riders)
            jobs = fetch_jobs(store, BASE_IDS["burst"])
            concurrent = bursts_in_flight(url, args, engine)
            web_peak = peak_memory_mib(url)
        bare, hook = sorted(rounds, key=lambda r: r[1].rps / r[0].rps)[len(rounds) // 2]
        rows = stored(engine, BASE_IDS["burst"], args.burst)
        cost = cost_per_event(args, args.riders)
    heading("Webhook POST under gunicorn")
    print(f"  machine          {host}")
    print(
        f"  setup            gunicorn -w {args.workers} --threads {args.threads} "
        f"({'sync' if args.threads == 1 else 'gthread'}) on loopback; Redis {args.redis_url}; "
        f"{args.database_url}; {args.riders} connected riders; load by {bare.tool}, "
        f"{args.connections} connections, {args.duration:g} s"
    )
    print(f"  {'':<24}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'non-200':>8}")
    print_load("bare Flask JSON", bare)
    print_load("strava-sync webhook", hook)
    ratios = ", ".join(f"{h.rps / b.rps:.2f}" for b, h in rounds)
    print(
        f"  ratio            webhook/bare: {hook.rps / bare.rps:.2f}x the throughput (the median "
        f"round of {len(rounds)}: {ratios}), {hook.p50 / bare.p50:.1f}x the p50 latency, "
        f"{hook.p99 / bare.p99:.1f}x the p99"
    )
    print(
        f"  one event        {cost['sql']:.1f} SQL statements in {cost['transactions']:.1f} "
        f"transactions (+{cost['checkouts']:.1f} pool pre-pings), {cost['redis']:.1f} Redis round "
        f"trips; {cost['ms']:.1f} ms in-process (Flask test client, {COST_EVENTS} events)"
    )
    print(f"  web memory       {web_peak:.0f} MiB peak RSS of the largest gunicorn process")
    heading(f"Burst: {args.burst} events due within {args.burst_seconds:g} s")
    ok, worst = print_burst(result, rows, jobs, args.burst)
    for in_flight, (answered, stored_rows, p99) in concurrent.items():
        print(
            f"  {in_flight} in flight    {args.burst} events: {answered} answered 200, "
            f"{stored_rows} stored; p99 {p99 * 1000:.0f} ms a request (Strava allows 2 s)"
        )
    print(
        f"\nSummary: webhook {hook.rps:.0f} req/s p50 {hook.p50:.1f} ms p99 {hook.p99:.1f} ms vs "
        f"bare {bare.rps:.0f} req/s p50 {bare.p50:.1f} ms p99 {bare.p99:.1f} ms "
        f"({hook.rps / bare.rps:.2f}x); burst of {args.burst}: {ok} answered 200, "
        f"{sum(rows.values())} stored, slowest {worst:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument("--burst", type=int, default=2000, help="events in the burst")
    parser.add_argument("--burst-seconds", type=float, default=1.0, help="the burst's spread")
    parser.add_argument("--riders", type=int, default=1000, help="connected athletes")
    parser.add_argument(
        "--workers", type=int, default=2, help="gunicorn workers (default 2: one a core here)"
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="threads a worker (default 4, as in the Procfile)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="load rounds; the median is shown")
    parser.add_argument(
        "--in-flight",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[],
        help="bursts from this many senders at once, e.g. 50,200",
    )
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--redis-url", default=BENCH_REDIS_URL, help="wiped before and after")
    parser.add_argument("--database-url", default=BENCH_DATABASE_URL, help="tables dropped")
    args = parser.parse_args()
    if not 0 < args.duration <= 120 or not 0 < args.burst <= 20_000:
        parser.error("keep --duration within 120 s and --burst within 20,000")
    if not 0 < args.rounds <= 9:
        parser.error("keep --rounds within 9")
    if not 0 < args.workers <= 16 or not 0 < args.threads <= 64:
        parser.error("keep --workers within 16 and --threads within 64")
    exit_on_sigterm()
    run(args)


if __name__ == "__main__":
    main()
