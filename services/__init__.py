"""The long-lived parts one process shares: database, Redis, queues, Strava client, rate budget.

`build(config)` makes a `Services` from a configuration mapping; `from_environment()` does so from
the environment, as an `rq worker` process needs. Nothing here knows about Flask: the web app keeps
its `Services` in `app.extensions` (see `extension.py`), and jobs find theirs with `current()`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from sqlalchemy.engine import Engine

import config
import models
from services.diagnose import StartupError
from strava_client import StravaClient
from strava_client.ratebudget import RateBudget
from strava_client.tokens import TokenCipher

QUEUES = ("strava", "reconcile")  # priority order: real-time fetches first
SUBSCRIPTION_CACHE = 30  # seconds the stored subscription id is trusted
INSTANCE_PATH = str(Path(__file__).resolve().parent.parent / "instance")  # as the Flask app's


@dataclass
class Services:
    """Everything a request or a job needs, built once from the configuration."""

    config: dict
    engine: Engine
    redis: redis.Redis
    inline: bool
    cipher: TokenCipher
    budget: RateBudget
    client: StravaClient
    clock: Callable[[], float] = time.time
    runner: Any = field(default=None, repr=False)  # inline mode's worker thread, once started
    _subscription: tuple[float, int | None] = (0.0, None)

    def queue(self, name: str) -> Queue:
        """One of the RQ queues ("strava", "reconcile")."""
        return Queue(name, connection=self.redis)

    def subscription_id(self) -> int | None:
        """Our push subscription's id, if known (cached for half a minute)."""
        fetched, value = self._subscription
        if time.monotonic() - fetched > SUBSCRIPTION_CACHE:
            value = self.config.get("STRAVA_SUBSCRIPTION_ID")
            with self.engine.connect() as conn:
                value = models.get_setting(conn, "subscription_id") or value
            value = int(value) if value else None
            self._subscription = (time.monotonic(), value)
        return value

    def forget_subscription(self) -> None:
        """Drop the cached subscription id after it changed."""
        self._subscription = (0.0, None)

    def close(self) -> None:
        """Release the database pool and the Redis connections."""
        self.engine.dispose()
        self.redis.close()


def connect_redis(url: str) -> redis.Redis:
    """A Redis client that fails fast: the webhook must answer Strava within 2 s regardless."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )


def _fake_redis() -> redis.Redis:
    import fakeredis  # the in-process stand-in is only needed without a real Redis

    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def build(settings: dict) -> Services:
    """Connect the parts named by the configuration (nothing is contacted until first use)."""
    inline = not settings.get("REDIS_URL")
    conn = _fake_redis() if inline else connect_redis(settings["REDIS_URL"])
    clock = settings.get("CLOCK") or time.time
    budget = RateBudget(
        conn,
        limits=settings["STRAVA_RATE_LIMITS"],
        read_limits=settings["STRAVA_READ_RATE_LIMITS"],
        reserve=settings["RECONCILE_RESERVE"],
        min_share=settings.get("RECONCILE_MIN_SHARE", 0.0),
        clock=clock,
    )
    client = StravaClient(
        api_url=settings["STRAVA_API_URL"],
        oauth_url=settings["STRAVA_OAUTH_URL"],
        client_id=settings["STRAVA_CLIENT_ID"],
        client_secret=settings["STRAVA_CLIENT_SECRET"],
        budget=budget,
    )
    return Services(
        config=settings,
        engine=models.make_engine(settings["DATABASE_URL"]),
        redis=conn,
        inline=inline,
        cipher=TokenCipher(settings["TOKEN_ENCRYPTION_KEY"]),
        budget=budget,
        client=client,
        clock=clock,
    )


def from_environment() -> Services:
    """Services from the environment (and a `.env` file, as `flask` reads for the web app)."""
    config.read_dotenv()
    try:
        return build(config.from_environ(instance_path=INSTANCE_PATH))
    except config.ConfigError as exc:
        raise StartupError(str(exc)) from None


_bound: ContextVar[Services | None] = ContextVar("strava_sync_services", default=None)


@contextlib.contextmanager
def bind(svc: Services) -> Iterator[Services]:
    """Make `svc` what `current()` returns in this context (a worker running jobs for an app)."""
    token = _bound.set(svc)
    try:
        yield svc
    finally:
        _bound.reset(token)


@functools.cache
def _process_services() -> Services:
    return from_environment()


def current() -> Services:
    """The services jobs use: those bound by the running worker, else this process's own."""
    return _bound.get() or _process_services()
