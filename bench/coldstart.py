"""A Vercel cold start: `import api.index` against `import flask, sqlalchemy, redis, rq`.

Every cold start of the serverless function imports the app before it can answer Strava, which
gives up after 2 seconds. The reference is the four libraries the app cannot do without; the
target is the app's import at most 1.2 times theirs. Each round runs both in fresh interpreters,
one after the other (their order alternating), and times the import inside the interpreter, so
Python's own start-up is left out of both. The environment is a deployment's: REDIS_URL and a
PostgreSQL DATABASE_URL (on a loopback port where nothing listens: the start-up check of the
database fails at once, as it answers at once when the database is up).

    .venv/bin/python bench/coldstart.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from _common import ROOT, free_port

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
        "SECRET_KEY": "x" * 64,
        "CRON_SECRET": "bench",
        "STRAVA_CLIENT_ID": "1",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    times = measure(args.rounds)
    app, reference = (statistics.median(times[s]) for s in (APP, REFERENCE))
    print(f"{APP:<40} median {app * 1000:7.1f} ms over {args.rounds} rounds")
    print(f"{REFERENCE:<40} median {reference * 1000:7.1f} ms")
    verdict = "within" if app / reference <= TARGET else "over"
    print(f"ratio {app / reference:.2f} ({verdict} the target of {TARGET})")


if __name__ == "__main__":
    main()
