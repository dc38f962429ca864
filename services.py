"""The long-lived parts one app (or one worker process) shares: database, Redis, queues, client.

`create_app` builds a `Services` and keeps it in `app.extensions`; web requests and jobs reach it
through `current_services()`. In inline mode (no REDIS_URL) Redis is an in-process stand-in and a
background thread runs the queued jobs, so the whole system works in one process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from flask import current_app, has_app_context
from rq import Queue, SimpleWorker
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty
from sqlalchemy.engine import Engine

import models
from ratebudget import RateBudget
from strava_client import StravaClient, Unauthorized

log = logging.getLogger(__name__)
QUEUES = ("strava", "reconcile")  # priority order: real-time fetches first
REFRESH_MARGIN = 3600  # refresh tokens with less than an hour left, as Strava advises


class InlineWorker(SimpleWorker):
    """An RQ worker that runs in a thread: no signal handlers, timeouts by timer."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        pass  # signals can only be handled on the main thread; inline mode has no shutdown dance

    def subscribe(self):
        pass  # the pubsub thread carries `rq` admin commands, which a single process does not need


class InlineRunner:
    """Runs queued jobs, and scheduled ones once due, in a background thread of this process."""

    def __init__(self, app, svc: Services):
        self.app, self.svc = app, svc
        self.passes = 0
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="inline-worker", daemon=True)

    def start(self) -> InlineRunner:
        """Start the thread."""
        self._thread.start()
        return self

    def wake(self) -> None:
        """Run a pass now rather than at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the current pass and stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        worker = InlineWorker([self.svc.queue(n) for n in QUEUES], connection=self.svc.redis)
        while not self._stop.is_set():
            with self.app.app_context():
                worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
            self.passes += 1
            self._wake.wait(timeout=0.5)  # scheduled jobs (retries, budget waits) come due
            self._wake.clear()

    def busy(self) -> bool:
        """Whether a job is queued or running (scheduled ones wait for their time)."""
        queues = [self.svc.queue(n) for n in QUEUES]
        return any(q.count or StartedJobRegistry(queue=q).count for q in queues)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running; False if the timeout came first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.busy():
                # A job may be between its queue and the started registry: let a pass finish.
                seen = self.passes
                while self.passes < seen + 2 and time.monotonic() < deadline:
                    self.wake()
                    time.sleep(0.01)
                if not self.busy():
                    return True
            time.sleep(0.05)
        return False


@dataclass
class Services:
    """Everything a request or a job needs, built once from the app's config."""

    config: dict
    engine: Engine
    redis: redis.Redis
    inline: bool
    cipher: models.TokenCipher
    budget: RateBudget
    client: StravaClient
    clock: Callable[[], float] = time.time
    runner: InlineRunner | None = field(default=None, repr=False)
    _subscription: tuple[float, int | None] = (0.0, None)

    def queue(self, name: str) -> Queue:
        """One of the RQ queues ("strava", "reconcile")."""
        return Queue(name, connection=self.redis)

    def subscription_id(self) -> int | None:
        """Our push subscription's id, if known (cached for half a minute)."""
        fetched, value = self._subscription
        if time.monotonic() - fetched > 30:
            value = self.config.get("STRAVA_SUBSCRIPTION_ID")
            with self.engine.connect() as conn:
                value = models.get_setting(conn, "subscription_id") or value
            value = int(value) if value else None
            self._subscription = (time.monotonic(), value)
        return value

    def forget_subscription(self) -> None:
        """Drop the cached subscription id after it changed."""
        self._subscription = (0.0, None)

    def jobs_queued(self, app) -> None:
        """In inline mode, make sure the in-process worker runs what was just queued."""
        if self.inline and self.config.get("INLINE_WORKER", True) and app is not None:
            self.start_runner(app)
        if self.runner is not None:
            self.runner.wake()

    def start_runner(self, app) -> InlineRunner:
        """Start the in-process worker once (inline mode, the demo)."""
        with _runner_lock:
            if self.runner is None:
                self.runner = InlineRunner(app, self).start()
        return self.runner


_runner_lock = threading.Lock()


def build_services(config: dict) -> Services:
    """Connect the parts named by the config (nothing is contacted until first use)."""
    inline = not config.get("REDIS_URL")
    if inline:
        import fakeredis  # the in-process stand-in is only needed without a real Redis

        conn = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    else:
        # Short timeouts: the webhook must answer Strava within 2 s even when Redis is unwell.
        conn = redis.Redis.from_url(config["REDIS_URL"], socket_connect_timeout=1, socket_timeout=2)
    clock = config.get("CLOCK") or time.time
    budget = RateBudget(
        conn,
        limits=config["STRAVA_RATE_LIMITS"],
        read_limits=config["STRAVA_READ_RATE_LIMITS"],
        reserve=config["RECONCILE_RESERVE"],
        clock=clock,
    )
    client = StravaClient(
        api_url=config["STRAVA_API_URL"],
        oauth_url=config["STRAVA_OAUTH_URL"],
        client_id=config["STRAVA_CLIENT_ID"],
        client_secret=config["STRAVA_CLIENT_SECRET"],
        budget=budget,
    )
    return Services(
        config=config,
        engine=models.make_engine(config["DATABASE_URL"]),
        redis=conn,
        inline=inline,
        cipher=models.TokenCipher(config["TOKEN_ENCRYPTION_KEY"]),
        budget=budget,
        client=client,
        clock=clock,
    )


_worker_app = None


def current_services() -> Services:
    """The running app's services; in an `rq worker` process, those of an app built once."""
    global _worker_app
    if has_app_context():
        return current_app.extensions["strava_sync"]
    if _worker_app is None:
        from dotenv import load_dotenv

        from app import create_app  # late: app imports the modules that import this one

        load_dotenv()  # as `flask` does for the web app; variables already set win
        _worker_app = create_app()
    return _worker_app.extensions["strava_sync"]


def access_token(svc: Services, rider_id: int, *, force_refresh: bool = False) -> str:
    """A usable access token for the rider, refreshed first when under an hour is left.

    Strava invalidates a refresh token the moment it issues a new one, so two workers refreshing
    at once would leave one holding a dead token: one refresh per rider at a time, across all
    workers, under a Redis lock, and the newest pair is always stored before the lock is released.
    """
    row = _connected(svc, rider_id)
    if not force_refresh and row.expires_at - svc.clock() > REFRESH_MARGIN:
        return svc.cipher.decrypt(row.access_token)
    with svc.redis.lock(f"strava-sync:refresh:{rider_id}", timeout=60, blocking_timeout=30):
        latest = _connected(svc, rider_id)
        if not force_refresh and latest.expires_at - svc.clock() > REFRESH_MARGIN:
            return svc.cipher.decrypt(latest.access_token)  # another worker just refreshed
        tokens = svc.client.refresh(svc.cipher.decrypt(latest.refresh_token))
        stored = {
            "access_token": svc.cipher.encrypt(tokens["access_token"]),
            "refresh_token": svc.cipher.encrypt(tokens["refresh_token"]),
            "expires_at": int(tokens["expires_at"]),
        }
        with svc.engine.begin() as conn:
            models.store_tokens(conn, rider_id, stored)
        return tokens["access_token"]


def _connected(svc: Services, rider_id: int):
    with svc.engine.connect() as conn:
        row = models.get_connection(conn, rider_id)
    if row is None or row.refresh_token is None:
        raise Unauthorized(f"rider {rider_id} has no Strava connection")
    return row
