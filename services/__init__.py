"""The long-lived parts one process shares: database, Redis, queues, Strava client, rate budget.

`build(settings, clock)` makes a `Services` from the settings (`config.Settings`) and the one clock
every part reads; `from_environment()` does so from the environment, as an `rq worker` needs.
Nothing here knows about Flask: the web app keeps its `Services` in `app.extensions` (see
`extension.py`), and jobs find theirs with `current()`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

    settings: config.Settings
    redis: redis.Redis
    inline: bool
    cipher: TokenCipher
    budget: RateBudget
    client: StravaClient
    clock: Callable[[], float] = time.time  # epoch seconds; the only time source in production
    runner: Any = field(default=None, repr=False)  # inline mode's worker thread, once started
    _subscription: tuple[float, int | None] = (0.0, None)
    _engine: Engine | None = field(default=None, repr=False)
    _engine_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def engine(self) -> Engine:
        """The database engine, made at first use.

        The PostgreSQL driver loads then, not when the app is imported: a serverless cold start
        answers its first request sooner, and one that never touches the database never pays.
        """
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = models.make_engine(self.settings.database_url)
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._engine = engine

    def now(self) -> datetime:
        """The clock's time as a UTC datetime (what every stored timestamp is stamped with)."""
        return datetime.fromtimestamp(self.clock(), UTC)

    def queue(self, name: str) -> Queue:
        """One of the RQ queues ("strava", "reconcile")."""
        return Queue(name, connection=self.redis)

    def subscription_id(self) -> int | None:
        """Our push subscription's id, if known (cached for half a minute)."""
        fetched, value = self._subscription
        if time.monotonic() - fetched > SUBSCRIPTION_CACHE:
            value = self.settings.strava_subscription_id
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
        if self._engine is not None:
            self._engine.dispose()
        self.redis.close()


def connect_redis(url: str) -> redis.Redis:
    """A Redis client that fails fast: the webhook must answer Strava within 2 s regardless."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )


def _fake_redis() -> redis.Redis:
    import fakeredis  # the in-process stand-in is only needed without a real Redis

    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def make_budget(settings: config.Settings, conn: redis.Redis, clock, **options) -> RateBudget:
    """The shared rate budget, started from the configured limits (`options`: RateBudget's)."""
    return RateBudget(
        conn,
        limits=settings.strava_rate_limits,
        read_limits=settings.strava_read_rate_limits,
        reserve=settings.reconcile_reserve,
        min_share=settings.reconcile_min_share,
        clock=clock,
        **options,
    )


def build(settings: config.Settings, clock: Callable[[], float] = time.time) -> Services:
    """Connect the parts the settings name (nothing is contacted until first use)."""
    inline = not settings.redis_url
    conn = _fake_redis() if inline else connect_redis(settings.redis_url)
    budget = make_budget(settings, conn, clock)
    client = StravaClient(
        api_url=settings.strava_api_url,
        oauth_url=settings.strava_oauth_url,
        client_id=settings.strava_client_id,
        client_secret=settings.strava_client_secret,
        budget=budget,
    )
    return Services(
        settings=settings,
        redis=conn,
        inline=inline,
        cipher=TokenCipher(settings.token_encryption_key),
        budget=budget,
        client=client,
        clock=clock,
    )


def load_settings(**changes) -> config.Settings:
    """This process's settings (`.env`, then the environment); StartupError in one sentence."""
    try:
        return config.override(config.load(INSTANCE_PATH), **changes)
    except config.ConfigError as exc:
        raise StartupError(str(exc)) from None


def from_environment() -> Services:
    """Services from the environment (and a `.env` file, as `flask` reads for the web app)."""
    return build(load_settings())


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
