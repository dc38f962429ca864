"""Helpers for the end-to-end tests: the system started as production starts it, around the sim.

`Stack` owns one running system: the Strava simulator in this process, our app under gunicorn and
three `rq worker --with-scheduler` processes, all configured only through environment variables
and sharing the test Redis database and the test PostgreSQL database. It also gives the test
what it needs to look at the outcome: an engine on the same database, a Redis client, the token
cipher (to connect riders as the OAuth callback would) and small queries.

Child processes write their output to files in the test's tmp_path; `Stack.close` stops them
(SIGTERM, then SIGKILL after a timeout, including any work horse or scheduler they forked) and
prints the tails of their logs if the test failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import flask
import redis
import requests
import sqlalchemy as sa
from cryptography.fernet import Fernet
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

import config
import models
from services import QUEUES
from strava_client import parse_activity, tokens
from strava_sim import StravaSim

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # gunicorn, rq and flask of the interpreter running the tests
WORKERS = 3
STOP_TIMEOUT = 15  # seconds a process gets to shut down warmly before SIGKILL
# Start-up waits on a condition, so a generous bound costs nothing on an idle machine; on a
# loaded 2-core one, importing the app in five processes at once can take tens of seconds.
STARTUP_TIMEOUT = 120
PROBE_TIMEOUT = 5  # one /healthz request; a slow answer is retried, not fatal


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.2):
    """Poll until predicate() is truthy and return its value; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- processes ------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def children(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below this one (gunicorn workers, rq schedulers and work horses)."""
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@dataclass
class Process:
    """A child process whose output goes to a log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[int]:
        """SIGTERM, then SIGKILL after the timeout; returns the pids of what it had forked."""
        # Collected first: once the parent is gone its children are re-parented and lost to view.
        family = descendants(self.pid)
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in [*family, *descendants(self.pid)]:
                    _kill(pid, signal.SIGKILL)
                self.popen.kill()
                self.popen.wait()
        return family


def start_process(name: str, argv: list[str], env: dict, log_dir: Path) -> Process:
    """Start argv in the repository root, stdin closed, stdout and stderr into log_dir/name.log."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl+C in the terminal reaches pytest, not the children
        )
    return Process(name, popen, log)


# -- the running system ---------------------------------------------------------------------------


class Stack:
    """Simulator, gunicorn and rq workers, plus handles on the database and Redis they share."""

    def __init__(
        self, sim: StravaSim, database_url: str, redis_url: str, tmp_path: Path, pooled_url=None
    ):
        """`pooled_url`: the processes reach the database through it (a pooler); the test not."""
        self.sim = sim
        self.pooled = pooled_url is not None
        self.tmp_path = tmp_path
        self.cron_secret = "e2e-cron-secret"
        self.verify_token = "e2e-verify-token"
        self.key = Fernet.generate_key().decode()
        self.cipher = tokens.TokenCipher(self.key)
        self.engine = models.make_engine(config.database_url(database_url, ""))
        self.redis = redis.Redis.from_url(redis_url)
        self.http = requests.Session()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.callback_url = self.url + "/api/strava/webhook"
        self.web: Process | None = None
        self.workers: list[Process] = []
        # Environment only: what a deployment sets, nothing the test injects another way.
        self.env = dict(
            os.environ,
            DATABASE_URL=pooled_url or database_url,
            REDIS_URL=redis_url,
            STRAVA_API_URL=sim.api_url,
            STRAVA_OAUTH_URL=sim.oauth_url,
            STRAVA_CLIENT_ID=sim.client_id,
            STRAVA_CLIENT_SECRET=sim.client_secret,
            STRAVA_VERIFY_TOKEN=self.verify_token,
            CRON_SECRET=self.cron_secret,
            TOKEN_ENCRYPTION_KEY=self.key,
            SECRET_KEY="e2e-secret-key-Hq7Vb2Nc9Xw4Lz6Rt",  # one for every process, as deployed
            CREATE_FETCH_DELAY_SECONDS="0",  # the tests wait for fetches in real time
            PYTHONUNBUFFERED="1",  # logs reach the files as they happen
        )

    # -- lifecycle --

    def start_web(self) -> None:
        """Clean Redis and the schema, then start gunicorn on them."""
        self.redis.flushdb()
        models.drop_all(self.engine)
        if self.pooled:  # the migration too goes through the pooler, as a deploy runs it
            self.flask("init-db")
        else:
            models.init_db(self.engine)
        self.web = start_process(
            "gunicorn",
            [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{self.port}", "app:create_app()"],
            # Gunicorn 27 puts a control socket under ~/.gunicorn: keep it out of the real home.
            dict(self.env, HOME=str(self.tmp_path)),
            self.tmp_path,
        )

    def start(self, workers: int = WORKERS) -> Stack:
        """Clean Redis and the schema, start gunicorn and the workers, create the subscription."""
        self.start_web()
        for i in range(workers):
            argv = [str(BIN / "rq"), "worker", "-w", "worker.Worker"]
            argv += ["--url", self.env["REDIS_URL"], "--with-scheduler"]
            self.workers.append(
                start_process(f"worker-{i}", [*argv, *QUEUES], self.env, self.tmp_path)
            )
        wait_until(self._healthy, timeout=STARTUP_TIMEOUT, what="gunicorn to answer /healthz")
        wait_until(
            lambda: self._workers_registered(workers),
            timeout=STARTUP_TIMEOUT,
            what=f"{workers} rq workers to register",
        )
        self.create_subscription()
        return self

    def _check_running(self) -> None:
        for process in [self.web, *self.workers]:
            if not process.running():
                raise AssertionError(
                    f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}"
                )

    def _check_alone(self) -> None:
        """Fail plainly if a worker not started here takes jobs from this Redis database."""
        ours = {w.pid for w in self.workers}
        strangers = [f"{w.hostname}:{w.pid}" for w in self.rq_workers() if w.pid not in ours]
        if strangers:
            raise AssertionError(
                f"rq workers {strangers} also serve {self.env['REDIS_URL']}; the end-to-end "
                "tests need that Redis database to themselves"
            )

    def _workers_registered(self, workers: int) -> bool:
        self._check_running()
        try:
            return Worker.count(connection=self.redis) == workers
        except (redis.ConnectionError, redis.TimeoutError):  # a loaded Redis answers late
            return False

    def _healthy(self) -> bool:
        """Whether gunicorn answers /healthz; refused, slow or cut-off answers mean not yet."""
        self._check_running()
        try:
            with self.http.get(self.url + "/healthz", timeout=PROBE_TIMEOUT) as response:
                return response.status_code == 200
        except requests.RequestException:  # ConnectionError, Timeout, ChunkedEncodingError
            return False

    def create_subscription(self) -> None:
        """`flask strava subscription create`, as an operator runs it: Strava validates us."""
        self.flask("strava", "subscription", "create", "--callback-url", self.callback_url)
        assert self.sim.subscription["callback_url"] == self.callback_url

    def flask(self, *argv: str) -> str:
        """Run `flask --app app ARGV...` with the stack's environment; its output (exit 0)."""
        result = subprocess.run(
            [str(BIN / "flask"), "--app", "app", *argv],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def close(self, failed: bool) -> None:
        """Stop every process, check nothing is left behind, and release connections."""
        leftovers = []
        if failed:
            with contextlib.suppress(redis.RedisError):  # a diagnosis must not stop the cleanup
                registered = [f"{w.hostname}:{w.pid}" for w in self.rq_workers()]
                print(f"rq workers on {self.env['REDIS_URL']}: {registered}")
                print(f"ours: {[w.pid for w in self.workers]}")
        for process in [*self.workers, self.web]:
            if process is None:
                continue
            family = process.stop()
            leftovers += [pid for pid in family if alive(pid)]
            if failed:
                print(f"----- {process.name} (last lines of {process.log}) -----")
                print(process.tail())
        for pid in leftovers:
            _kill(pid, signal.SIGKILL)
        self.http.close()
        self.redis.close()
        self.engine.dispose()
        assert not leftovers, f"processes outlived their parents: {leftovers}"

    # -- riders and events --

    def connect_rider(self, firstname: str, lastname: str = "Rider") -> tuple[int, int]:
        """A rider connected by tokens the sim issued, stored as the OAuth callback stores them."""
        athlete_id = self.sim.add_athlete(firstname, lastname)
        scope = "read,activity:read_all"
        tokens = self.sim.grant(athlete_id, scope)
        stored = {k: self.cipher.encrypt(tokens[k]) for k in ("access_token", "refresh_token")}
        stored["expires_at"] = tokens["expires_at"]
        with self.engine.begin() as conn:
            rider_id = models.create_rider(conn, f"{firstname} {lastname}", now=datetime.now(UTC))
            models.save_connection(conn, rider_id, athlete_id, stored, scope, now=datetime.now(UTC))
            models.update_connection(conn, rider_id, backfill_before=0)  # no history to read
        return rider_id, athlete_id

    def seed_history(self, rider_id: int, activity_ids: list[int]) -> None:
        """Store activities as a finished backfill would have left them (Strava's values now)."""
        with self.engine.begin() as conn:
            for detail in self.sim.activities(self.athlete_of(rider_id)):
                if detail["id"] in activity_ids:
                    models.upsert_activity(
                        conn, rider_id, parse_activity(detail), now=datetime.now(UTC)
                    )

    def athlete_of(self, rider_id: int) -> int:
        with self.engine.connect() as conn:
            return models.get_connection(conn, rider_id).athlete_id

    def deliver(self) -> dict:
        """Have the sim push its outbox to gunicorn; every attempted delivery must get its 200."""
        counts = self.sim.deliver_events()
        assert counts["failed"] == 0, counts
        return counts

    def start_sweep(self) -> dict:
        """POST /api/cron/reconcile as the nightly GitHub Actions job does."""
        with self.http.post(
            self.url + "/api/cron/reconcile",
            headers={"Authorization": f"Bearer {self.cron_secret}"},
            timeout=30,
        ) as response:
            assert response.status_code == 200, response.text
            return response.json()

    # -- looking at the outcome --

    def queues(self) -> list[Queue]:
        return [Queue(name, connection=self.redis) for name in QUEUES]

    def job_counts(self) -> dict[str, int]:
        """Jobs waiting, running, scheduled and failed over both queues (no registry cleanup:
        that would run RQ's failure callbacks in this process)."""
        counts = Counter()
        for queue in self.queues():
            counts["queued"] += queue.count
            for name, registry in (
                ("started", StartedJobRegistry),
                ("scheduled", ScheduledJobRegistry),
                ("failed", FailedJobRegistry),
            ):
                ids = registry(queue=queue).get_job_ids(cleanup=False)
                counts[name] += len(ids)
        return dict(counts)

    def scheduled_job_ids(self, queue: str = "strava") -> list[str]:
        registry = ScheduledJobRegistry(queue=Queue(queue, connection=self.redis))
        return registry.get_job_ids(cleanup=False)

    def started_job_ids(self, queue: str = "strava") -> list[str]:
        registry = StartedJobRegistry(queue=Queue(queue, connection=self.redis))
        return registry.get_job_ids(cleanup=False)

    def event_statuses(self) -> Counter:
        """webhook_event rows by status."""
        table = models.webhook_event
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.status, sa.func.count()).group_by(table.c.status))
            return Counter(dict(rows.all()))

    def events_per_activity(self) -> Counter:
        """Distinct stored events per activity id (exact repeats are stored once)."""
        table = models.webhook_event
        query = (
            sa.select(table.c.object_id, sa.func.count())
            .where(table.c.object_type == "activity")
            .group_by(table.c.object_id)
        )
        with self.engine.connect() as conn:
            return Counter(dict(conn.execute(query).all()))

    def idle(self) -> bool:
        """Nothing queued, running or scheduled, and no event still waiting for its work."""
        counts = self.job_counts()
        busy = counts["queued"] or counts["started"] or counts["scheduled"]
        if busy:
            return False
        statuses = self.event_statuses()
        return not (statuses["pending"] or statuses["queued"])

    def wait_idle(self, timeout: float) -> None:
        def settled() -> bool:
            self._check_running()
            self._check_alone()
            return self.idle()

        try:
            wait_until(settled, timeout=timeout, what="the queues to drain")
        except AssertionError as exc:
            state = f"jobs {self.job_counts()}, events {dict(self.event_statuses())}"
            raise AssertionError(f"{exc}: {state}") from None

    def run_row(self, run_id: int):
        with self.engine.connect() as conn:
            return models.get_run(conn, run_id)

    def stored_activities(self, rider_id: int) -> dict[int, dict]:
        """Our copy of a rider's activities, keyed by id, in the fields compared with Strava."""
        with self.engine.connect() as conn:
            rows = models.rider_activities(conn, rider_id)
        return {r.id: comparable(r._mapping) for r in rows}

    def sim_activities(self, athlete_id: int) -> dict[int, dict]:
        """Strava's truth for an athlete, in the same shape."""
        return {a["id"]: comparable(a) for a in self.sim.activities(athlete_id)}

    def activity_ids(self) -> list[int]:
        """The ids of every row in strava_activity."""
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(models.strava_activity.c.id)).scalars())

    def activity_row_count(self, activity_id: int | None = None) -> int:
        """Rows in strava_activity (for one activity id, or all)."""
        table = models.strava_activity
        query = sa.select(sa.func.count()).select_from(table)
        if activity_id is not None:
            query = query.where(table.c.id == activity_id)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def event_statuses_of(self, activity_id: int) -> list[str]:
        """Statuses of one activity's stored events, oldest first."""
        table = models.webhook_event
        query = (
            sa.select(table.c.status)
            .where(table.c.object_type == "activity", table.c.object_id == activity_id)
            .order_by(table.c.id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def rq_workers(self) -> list[Worker]:
        """The registered rq workers, as RQ sees them (job counts and state)."""
        return Worker.all(connection=self.redis)

    def work_horse(self, job_id: str) -> int:
        """The pid of the work horse running a job now.

        A horse is a child of its worker that leads its own process group (RQ calls setpgrp in
        it); the worker's other child, the scheduler, stays in the worker's group.
        """
        (worker,) = [w for w in self.rq_workers() if w.get_current_job_id() == job_id]
        horses = [pid for pid in children(worker.pid) if _pgid(pid) == pid]
        assert len(horses) == 1, f"worker {worker.pid} has work horses {horses}"
        return horses[0]


def comparable(values) -> dict:
    """The fields a rider sees, from either a strava_activity row or Strava's JSON."""
    return {
        "name": values["name"],
        "distance": float(values["distance"]),
        "sport_type": values["sport_type"],
        "private": bool(values["private"]),
    }


class StallFirstFetch:
    """A before_request hook for the sim: the first GET of one activity hangs until released."""

    def __init__(self):
        self.activity_id: int | None = None
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self):
        view_args = flask.request.view_args or {}
        if (
            flask.request.endpoint == "_detail_view"
            and view_args.get("activity_id") == str(self.activity_id)
            and not self.reached.is_set()
        ):
            self.reached.set()
            self.release.wait(timeout=60)
