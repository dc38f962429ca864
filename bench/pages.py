"""Server render time of the pages for a club of 500 riders (the issue asks for under 50 ms).

Loads a club (riders, connections and a year of rides each) into a database, then requests each
page through Flask's test client, which runs the whole app (routing, session, queries, Jinja) but
no network, and prints the median and 95th percentile in milliseconds. A benchmark, not a test.
Without --database-url it uses a SQLite file in a temporary folder and inline mode's in-process
Redis; --database-url postgresql://postgres@127.0.0.1:5432/bench measures PostgreSQL.

Run: .venv/bin/python bench/pages.py [--riders 500] [--rides 150] [--repeat 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import heading, machine, percentile

import config
import models
from app import create_app
from sync import eddington

PAGES = ("/", "/me", "/leaderboard", "/admin")


def load_club(svc, riders: int, rides: int, seed: int) -> tuple[int, int]:
    """Insert riders, their connections and rides; returns (a rider id, its athlete id)."""
    rng, now = random.Random(seed), datetime.now(UTC)
    activity_id = 10_000_000
    with svc.engine.begin() as conn:
        for n in range(riders):
            rider_id = models.create_rider(conn, f"Rider {n:03d}", now=svc.now())
            tokens = {"access_token": "a", "refresh_token": "r", "expires_at": 2_000_000_000}
            models.save_connection(
                conn, rider_id, 500_000 + n, tokens, "read,activity:read_all", now=svc.now()
            )
            rows = []
            for _ in range(rides):
                activity_id += 1
                start = now - timedelta(days=rng.uniform(0, 365))
                rows.append(
                    {
                        "id": activity_id, "rider_id": rider_id, "athlete_id": 500_000 + n,
                        "name": "Ride", "sport_type": rng.choice(("Ride", "Ride", "Run")),
                        "start_date": start, "start_date_local": start.replace(tzinfo=None),
                        "distance": rng.uniform(10_000, 160_000), "private": False,
                        "fetched_at": now,
                    }
                )  # fmt: skip
            conn.execute(models.strava_activity.insert(), rows)
            eddington.store_numbers(conn, rider_id, svc.settings.eddington_sport_types)
    return 1, 500_000


def time_page(client, path: str, repeat: int) -> list[float]:
    """Milliseconds per request of `path`, after one warm-up request."""
    assert client.get(path).status_code == 200, path
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, path
    return timings


def main() -> None:
    """Load a club, time each page, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=500)
    parser.add_argument("--rides", type=int, default=150, help="rides per rider")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = config.database_url(args.database_url, tmp) if args.database_url else None
        url = url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        app = create_app({"DATABASE_URL": url, "REDIS_URL": None, "INLINE_WORKER": False})
        svc = app.extensions["strava_sync"]
        models.drop_all(svc.engine)
        models.init_db(svc.engine)
        try:
            loaded = time.perf_counter()
            rider_id, athlete_id = load_club(svc, args.riders, args.rides, seed=1)
            loaded = time.perf_counter() - loaded
            svc.settings = dataclasses.replace(
                svc.settings, admin_athlete_ids=frozenset({athlete_id})
            )
            client = app.test_client()
            with client.session_transaction() as session:
                session["rider_id"] = rider_id
            heading(f"pages: {args.riders} riders x {args.rides} rides ({url.split(':')[0]})")
            print(machine())
            print(f"loaded in {loaded:.1f} s")
            for path in PAGES:
                ms = time_page(client, path, args.repeat)
                print(
                    f"{path:<13} median {statistics.median(ms):7.1f} ms   "
                    f"p95 {percentile(ms, 0.95):7.1f} ms"
                )
        finally:
            models.drop_all(svc.engine)
            svc.close()


if __name__ == "__main__":
    main()
