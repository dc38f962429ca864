"""A Vercel cold start: `import api.index` against `import flask, sqlalchemy, redis, rq`.

Every cold start of the serverless function imports the app before it can answer Strava, which
gives up after 2 seconds. The reference is the four libraries the app cannot do without; the
target is the app's import at most 1.2 times theirs. Each round runs both in fresh interpreters,
one after the other (their order alternating), and times the import inside the interpreter, so
Python's own start-up is left out of both. The environment is a deployment's: REDIS_URL and a
PostgreSQL DATABASE_URL (on a loopback port where nothing listens: the start-up check of the
database fails at once, as it answers at once when the database is up).

The import is not the whole cold start: the first request then connects to PostgreSQL (loading
its driver) and Redis. With `--redis-url` and `--database-url` (the benchmarks' own, reserved
services) it also times, in fresh interpreters, the import plus the first webhook event for a
connected rider, answered and queued: what Strava waits for at a cold start.

    .venv/bin/python bench/coldstart.py [--rounds 9] [--redis-url URL --database-url URL]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys

import ingest
from _common import ROOT, free_port, fresh_tables, reserved_redis

APP = "import api.index"
REFERENCE = "import flask, sqlalchemy, redis, rq"
TARGET = 1.2
TIMED = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"


def environment() -> dict:
    """A deployment's settings, with no .env and no developer settings from this shell."""
    port = free_port()
    return {
        "PATH": os.environ.get("PATH", ""),
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "DATABASE_URL": f"postgresql://strava@127.0.0.1:{port}/strava",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "CRON_SECRET": secrets.token_urlsafe(16),
        "STRAVA_CLIENT_ID": "4242",
        "STRAVA_CLIENT_SECRET": secrets.token_hex(20),
        "PUBLIC_URL": "https://club.example.org",
        "TOKEN_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }


def import_seconds(statement: str, env: dict) -> float:
    """Seconds one fresh interpreter spends on `statement`."""
    done = subprocess.run(
        [sys.executable, "-c", TIMED.format(statement)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def measure(rounds: int) -> dict[str, list[float]]:
    """Both imports, `rounds` times each, interleaved so load on the machine hits both alike."""
    env = environment()
    times: dict[str, list[float]] = {APP: [], REFERENCE: []}
    import_seconds(APP, env)  # compile the bytecode once, as a deployment ships it
    for i in range(rounds):
        order = (APP, REFERENCE) if i % 2 else (REFERENCE, APP)
        for statement in order:
            times[statement].append(import_seconds(statement, env))
    return times


FIRST_EVENT = """
import json, time
started = time.perf_counter()
import api.index
imported = time.perf_counter()
answer = api.index.app.test_client().post("/api/strava/webhook", json={event!r})
print(answer.status_code, imported - started, time.perf_counter() - imported)
"""


def first_events(rounds: int, redis_url: str, database_url: str) -> list[tuple[float, float]]:
    """(import, first request) seconds of `rounds` cold starts, each answering one new event."""
    env = dict(environment(), REDIS_URL=redis_url, DATABASE_URL=database_url)
    env["STRAVA_SUBSCRIPTION_ID"] = str(ingest.SUBSCRIPTION_ID)
    seconds = []
    with reserved_redis(redis_url) as store, fresh_tables(database_url) as engine:
        ingest.connect_riders(engine, 1)
        for round_ in range(rounds + 1):  # the first compiles the bytecode, as a deployment ships
            event = json.loads(ingest.event_body(1000 + round_, owners=1))
            code = FIRST_EVENT.format(event=event)
            done = subprocess.run(
                [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                check=True,
            )  # fmt: skip
            status, imported, answered = done.stdout.split()
            if status != "200":
                raise SystemExit(f"the first event was answered {status}: {done.stderr[-2000:]}")
            if round_:
                seconds.append((float(imported), float(answered)))
        queued = store.llen("rq:queue:strava") + store.zcard("rq:scheduled:strava")
        print(f"({queued} of {rounds + 1} events queued or scheduled in Redis)")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--redis-url", help="also time the first event (the bench's own Redis)")
    parser.add_argument("--database-url", help="and PostgreSQL database for it")
    args = parser.parse_args()
    times = measure(args.rounds)
    app, reference = (statistics.median(times[s]) for s in (APP, REFERENCE))
    print(f"{APP:<40} median {app * 1000:7.1f} ms over {args.rounds} rounds")
    print(f"{REFERENCE:<40} median {reference * 1000:7.1f} ms")
    verdict = "within" if app / reference <= TARGET else "over"
    print(f"ratio {app / reference:.2f} ({verdict} the target of {TARGET})")
    if args.redis_url and args.database_url:
        seconds = first_events(args.rounds, args.redis_url, args.database_url)
        imported, answered = (statistics.median(part) for part in zip(*seconds, strict=True))
        print(
            f"cold start to the first event answered: median {(imported + answered) * 1000:.1f} ms "
            f"(import {imported * 1000:.1f} ms, first request {answered * 1000:.1f} ms; "
            "Strava waits 2,000 ms)"
        )


if __name__ == "__main__":
    main()
