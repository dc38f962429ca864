"""The demo's running system: the simulator, our app on loopback, its Redis state and the worker."""

from __future__ import annotations

import contextlib
import math
import secrets
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import click
from cryptography.fernet import Fernet
from flask import Flask
from rq import Worker
from rq.registry import ScheduledJobRegistry

import models
from jobs import inline
from jobs.inline import InlineRunner
from services import QUEUES, Services, make_budget
from strava_sim import StravaSim
from strava_sim.serve import serve_in_thread


class DemoError(Exception):
    """A step of the demo could not be done."""


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


def plural(count: int, noun: str) -> str:
    """The count and the noun, plural unless the count is 1: "1 upload", "2 uploads"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def wait_idle(demo: Demo, timeout: float) -> None:
    """Wait until the worker has nothing queued or running, or raise DemoError."""
    if not demo.worker.wait_idle(timeout):
        raise DemoError(f"the queued work did not finish within {timeout:.0f} s")


def scheduled_ids(svc: Services) -> set[str]:
    """The ids of jobs waiting in the scheduled registries (retries due later)."""
    registries = [ScheduledJobRegistry(queue=svc.queue(name)) for name in QUEUES]
    return {job_id for registry in registries for job_id in registry.get_job_ids()}


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
    }


@contextlib.contextmanager
def running_system(create_app, seed: int, riders: int, days: int, drop_rate: float):
    """Start the simulator, our app, its server and the worker; stop and remove them after."""
    factor = _limit_factor(riders)
    limits = {"limits": (200 * factor, 2000 * factor), "read_limits": (100 * factor, 1000 * factor)}
    with (
        tempfile.TemporaryDirectory(prefix="strava-sync-demo-") as folder,
        StravaSim(seed=seed, **limits) as sim,
    ):
        # One clock for Strava and us: token expiry and rate windows agree as simulated days pass.
        app = create_app(_settings(sim, folder, factor, days), sim.clock.now)
        svc = app.extensions["strava_sync"]
        try:
            models.init_db(svc.engine)
            with (
                _own_redis_state(svc),
                serve_in_thread(app, name="strava-sync-demo") as url,
                _working(svc) as worker,
            ):
                if factor > 1:
                    say(f"(Simulated Strava grants {factor}x the standard rate limits.)")
                yield Demo(sim, app, svc, url, worker, drop_rate)
        finally:
            svc.engine.dispose()
            svc.redis.close()
            svc.client.session.close()


@contextlib.contextmanager
def _working(svc: Services):
    runner = inline.start(svc)
    try:
        yield runner
    finally:
        runner.stop()


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
    svc.budget = svc.client.budget = make_budget(svc.settings, svc.redis, svc.clock, prefix=prefix)
    before = scheduled_ids(svc)
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
