"""Our RQ worker: the stock forking worker, with the app's services built once before any fork.

Run it as `rq worker -w worker.Worker --url "$REDIS_URL" --with-scheduler strava reconcile`.
A stock worker forks a work horse per job, and each horse imported the job modules and built its
services (engine, Redis client, Strava client) again: about 0.3 s of CPU a job. This one imports
the job modules and builds the services in the parent, so each horse inherits them ready. A horse
must never use the database connections it inherited (the parent's sockets), so it drops them from
its pool without closing them, and opens its own. Between jobs, and every RECOVERY_EVERY seconds
while idle, the parent runs the recovery pass (recovery.py) and, once a day after the sweep has
started, plans the history checks (history.py). Jobs queued under an earlier release's function
names run through `AliasJob` (aliases.py).

What it prints: RQ's own lines, one INFO line per job from the `jobs` logger ("activity 123 of
athlete 4: updated"), a one-line warning for an expected failure (Strava refused or did not answer,
no rate permit: the job is retried or recorded), a traceback only for a bug, and one sentence
(exit status 4) for a bad setting at start.
"""

from __future__ import annotations

import gc
import logging
import sys

import click
import redis
import rq
from rq import worker_registration
from sqlalchemy.exc import SQLAlchemyError

import models
import services
from jobs import fetch, history, recovery
from jobs.aliases import AliasJob  # imports every job module, once, in the parent
from services import Services, deployed
from services.diagnose import StartupError
from strava_client import StravaError
from strava_client.ratebudget import NoPermit

log = logging.getLogger(__name__)

RECOVERY_EVERY = recovery.EVERY  # seconds between maintenance runs, idle or busy
OUR_LOGGERS = ("jobs", "sync", "reconcile", "services", "strava_client", "models", __name__)
# A job failing with one of these is the outside world, not a bug: the job logged it in one line.
# (Network errors reach jobs as StravaError: the client's one send path turns them into one.)
EXPECTED_FAILURES = (StravaError, NoPermit)
CONFIG_ERROR_EXIT = 4  # as gunicorn exits on a bad configuration


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a line is logged."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


def configure_logging() -> None:
    """Print our packages' INFO lines on stderr beside RQ's (they have no handler otherwise)."""
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


def recover(svc: Services) -> int:
    """Between jobs: the recovery pass (recovery.py) when due, and the day's history checks.

    Returns how many events the pass queued again.
    """
    history.queue_checks(svc)  # once a day, after the sweep started
    outcome = recovery.run_if_due(svc)
    return outcome["requeued"] if outcome else 0


def warm_up(svc: Services) -> None:
    """Connect once and compile the jobs' common queries, so every horse inherits them ready.

    The first connection sets the dialect up and loads the driver's lazy parts; compiled SQL is
    cached by the engine. Both would otherwise be paid again in every horse.
    """
    try:
        with svc.engine.connect() as conn:
            models.get_connection_by_athlete(conn, 0)
            models.get_connection(conn, 0)
            models.open_events(conn, "activity", 0)
            models.pending_events(conn, 1)
    except SQLAlchemyError as exc:
        log.warning("could not warm up the database connection (%s); jobs will connect", exc)


class Worker(rq.Worker):
    """rq.Worker with services built in the parent, inherited by every forked work horse."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", RECOVERY_EVERY)
        kwargs["job_class"] = AliasJob  # `rq worker` passes its own default, rq's Job
        super().__init__(*args, **kwargs)
        configure_logging()
        try:
            self.services = services.current()  # from the environment, once, before any fork
            # A worker is always deployed: no invented SECRET_KEY, SQLite file or in-process Redis.
            deployed.refuse_unfit(self.services.settings, web=False)
        except StartupError as exc:
            click.echo(f"Error: {exc.message}", err=True)  # the sentence, not a traceback
            raise SystemExit(CONFIG_ERROR_EXIT) from None
        warm_up(self.services)
        # What exists now is shared with every horse: kept out of the garbage collector's reach,
        # the horse's collections do not write to those pages, so the fork copies few of them.
        gc.collect()
        gc.freeze()

    @property
    def dequeue_timeout(self) -> int:
        """How long an idle worker waits for a job before its maintenance (RQ's: 405 s) runs."""
        return min(super().dequeue_timeout, RECOVERY_EVERY)

    def run_maintenance_tasks(self) -> None:
        """RQ's registry cleaning, registering again if Redis forgot us, then our recovery pass."""
        super().run_maintenance_tasks()
        try:
            self.register_again_if_forgotten()
            queued = recover(self.services)
        except (redis.RedisError, SQLAlchemyError):
            # A failed pass must not stop the worker: the next one tries again.
            log.exception("the recovery pass failed; it runs again in %s s", RECOVERY_EVERY)
            return
        if queued:
            log.info("recovery pass: queued %s events stored while Redis was unreachable", queued)

    def register_again_if_forgotten(self) -> None:
        """Put this worker back in RQ's registry after Redis lost it (a restart without its data).

        RQ registers a worker only at birth; its heartbeats refresh the worker's own key but not
        the sets that `rq info`, `strava status` and `strava backfill` read, so without this a
        live worker stays invisible until it restarts.
        """
        if self.birth_date is None or self.connection.sismember(self.redis_workers_keys, self.key):
            return  # never born (maintenance before work()), or still listed
        log.warning(
            "Redis no longer lists worker %s (it restarted empty?): registering again", self.name
        )
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    def handle_exception(self, job, *exc_info) -> None:
        """RQ's traceback for a bug; for an expected failure only the job's own line (joblog)."""
        if not isinstance(exc_info[1], EXPECTED_FAILURES):
            super().handle_exception(job, *exc_info)
            return
        for handler in self._exc_handlers:  # RQ's handler chain, which has no quiet mode
            if handler(job, *exc_info) is False:
                break

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage) -> None:
        """A horse died mid-job: free its fetch lock now, so RQ's retry need not wait it out."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        try:
            if fetch.release_fetch_lock(self.connection, job):
                log.info("freed the fetch lock of %s, whose work horse died", job.id)
        except redis.RedisError:
            log.warning("could not free the fetch lock of %s; it lapses by itself", job.id)

    def main_work_horse(self, job, queue) -> None:
        """In the forked horse: forget the parent's pooled connections (never close them), work."""
        self.services.engine.dispose(close=False)
        super().main_work_horse(job, queue)
