"""What one `strava work` run costs a managed Redis: commands for an idle run and per job.

A managed Redis's free tier counts commands (and connections); the Workers workflow runs every
10 to 30 minutes whether or not anything happened. This runs the command exactly as the
workflow does (`flask --app app strava work --max-seconds N`, a fresh process) against a
redis-server of its own on a loopback port, so the count (INFO's total_commands_processed, less
the INFO calls themselves) is ours alone: once with nothing to do, once with `--jobs` fetches
queued for riders of the in-process Strava simulator.

    .venv/bin/python bench/work_cost.py [--jobs 20] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time

from _common import BENCH_DATABASE_URL, BIN, ROOT, _stop, free_port, fresh_tables


def own_redis():
    """A redis-server on a free loopback port, with no persistence; (popen, client, url)."""
    import redis

    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return popen, client, f"redis://127.0.0.1:{port}/0"


def commands(client) -> int:
    """Commands the server has processed, not counting this INFO call."""
    return client.info("stats")["total_commands_processed"] - 1


def run_work(env: dict) -> None:
    """The workflow's command, run to its end."""
    argv = [str(BIN / "flask"), "--app", "app", "strava", "work", "--max-seconds", "600"]
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)


def queue_fetches(settings: dict, sim, count: int) -> None:
    """`count` activity fetches queued for riders of the simulator, as the webhook queues them."""
    import models
    from app import create_app
    from jobs import fetch

    app = create_app(settings)
    svc = app.extensions["strava_sync"]
    for i in range(count):
        athlete = sim.add_athlete(f"Rider{i}", "Bench")
        granted = sim.grant(athlete, "read,activity:read_all")
        tokens = {k: svc.cipher.encrypt(granted[k]) for k in ("access_token", "refresh_token")}
        tokens["expires_at"] = granted["expires_at"]
        with svc.engine.begin() as conn:
            rider = models.create_rider(conn, f"Rider{i}", now=svc.now())
            models.save_connection(
                conn, rider, athlete, tokens, "read,activity:read_all", now=svc.now()
            )
            models.update_connection(conn, rider, backfill_before=0)
        fetch.queue_activity_sync(svc, athlete, sim.create_activity(athlete, event=False))
    svc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--database-url", default=BENCH_DATABASE_URL)
    args = parser.parse_args()
    from strava_sim import StravaSim

    popen, client, url = own_redis()
    try:
        with fresh_tables(args.database_url), StravaSim(seed=3) as sim:
            env = dict(os.environ, DATABASE_URL=args.database_url, REDIS_URL=url)
            env.update(STRAVA_API_URL=sim.api_url, STRAVA_OAUTH_URL=sim.oauth_url)
            env.update(STRAVA_CLIENT_ID=sim.client_id, STRAVA_CLIENT_SECRET=sim.client_secret)
            env.update(SECRET_KEY=secrets.token_urlsafe(32))  # a worker refuses to start without
            before = commands(client)
            run_work(env)
            idle = commands(client) - before - 1
            settings = {"DATABASE_URL": args.database_url, "REDIS_URL": url}
            settings.update({k: env[k] for k in env if k.startswith("STRAVA_")})
            queue_fetches(settings, sim, args.jobs)
            before = commands(client)
            run_work(env)
            busy = commands(client) - before - 1
    finally:
        client.close()
        _stop(popen)
    print(f"idle run (nothing queued or due): {idle} Redis commands")
    print(f"run with {args.jobs} fetches: {busy} commands, {(busy - idle) / args.jobs:.0f} a job")
    for minutes in (10, 15, 30):
        runs = 30 * 24 * 60 // minutes
        print(f"every {minutes} min: {runs} runs a month, {runs * idle:,} commands idle")


if __name__ == "__main__":
    sys.exit(main())
