"""Fixtures: an app on fake or real services, the Strava simulator, and a job runner.

Without TEST_REDIS_URL / TEST_DATABASE_URL the suite runs on fakeredis and SQLite. With them it
runs against real Redis (the named database is flushed for each test) and real PostgreSQL (tables
are dropped and recreated for each test).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import flask
import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry

import config
import models
import services
from app import create_app
from services import QUEUES
from strava_sim import StravaSim
from strava_sim.serve import LoopbackServer as LiveServer

REAL_REDIS = os.environ.get("TEST_REDIS_URL")
# For subprocesses: the checkout first, then what the suite was started with (CI puts its
# libfaketime shim there, which every Python process under the faked clock needs).
PYTHONPATH = os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")) if p
)
REAL_DATABASE = os.environ.get("TEST_DATABASE_URL")
VERIFY_TOKEN = "test-verify-token"
CRON_SECRET = "test-cron-secret"
ENV_NAMES = config.ENV_NAMES  # every variable the app reads, from config.Settings


_apps: list = []

# The suite writes nothing into the repository: no Hypothesis example database, and its cache of
# constants found in our source goes to the system's temporary folder instead of .hypothesis/.
settings.register_profile("suite", database=None)
settings.load_profile("suite")
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "strava-sync-hypothesis")


@pytest.fixture(autouse=True)
def instance_in_tmp(monkeypatch, tmp_path):
    """An app built without DATABASE_URL keeps its default SQLite file under tmp_path."""
    folder = str(tmp_path / "instance")
    monkeypatch.setattr(flask.Flask, "auto_find_instance_path", lambda self: folder)
    return folder


def pytest_terminal_summary(terminalreporter):
    """The fault suite's table (tests/faults), when it ran."""
    for line in getattr(terminalreporter.config, "fault_table", []):
        terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """A developer's own settings must not leak into tests; apps built by a test are closed."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    yield
    for name in ENV_NAMES:  # set by a `.env` a test wrote (monkeypatch restores the rest)
        os.environ.pop(name, None)
    while _apps:
        _apps.pop().extensions["strava_sync"].close()


@pytest.fixture
def database_url(tmp_path):
    """A clean database: PostgreSQL when TEST_DATABASE_URL is set, else a SQLite file."""
    if not REAL_DATABASE:
        yield f"sqlite:///{tmp_path / 'test.sqlite'}"
        return
    from config import database_url as normalise

    url = normalise(REAL_DATABASE, "")
    engine = models.make_engine(url)
    models.drop_all(engine)
    engine.dispose()
    yield url


@pytest.fixture
def sim():
    """The Strava simulator, served on loopback."""
    with StravaSim(seed=7) as simulator:
        yield simulator


def make_app(database_url: str, sim: StravaSim | None = None, *, init_db=True, **overrides):
    """An app wired to the simulator, with jobs run by the test (no inline thread).

    With init_db the database is brought to the newest schema; without, it is left as it is.
    """
    settings = {
        "TESTING": True,
        "SECRET_KEY": "conftest-session-key-7Qm2Xv9Lp4Rz8Wn3",
        "DATABASE_URL": database_url,
        "REDIS_URL": REAL_REDIS,
        "INLINE_WORKER": False,
        "STRAVA_VERIFY_TOKEN": VERIFY_TOKEN,
        "CRON_SECRET": CRON_SECRET,
        "CREATE_FETCH_DELAY_SECONDS": 0,  # fetch at once; the delay's own tests set one
    }
    if sim is not None:
        settings.update(
            STRAVA_CLIENT_ID=sim.client_id,
            STRAVA_CLIENT_SECRET=sim.client_secret,
            STRAVA_API_URL=sim.api_url,
            STRAVA_OAUTH_URL=sim.oauth_url,
        )
    settings.update(overrides)
    clock = settings.pop("CLOCK", None) or time.time  # the one clock every part reads
    app = create_app(settings, clock)
    svc = app.extensions["strava_sync"]
    if REAL_REDIS and settings["REDIS_URL"] == REAL_REDIS:
        svc.redis.flushdb()
    if init_db:
        models.init_db(svc.engine)
    _apps.append(app)
    return app


def configure(app_or_svc, **fields):
    """Replace settings (by field name) of a running app or services, as a new Settings."""
    svc = getattr(app_or_svc, "extensions", {}).get("strava_sync", app_or_svc)
    svc.settings = dataclasses.replace(svc.settings, **fields)
    if "secret_key" in fields and hasattr(app_or_svc, "config"):
        app_or_svc.config["SECRET_KEY"] = fields["secret_key"]


@pytest.fixture
def app(database_url, sim):
    return make_app(database_url, sim)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def svc(app):
    return app.extensions["strava_sync"]


def run_jobs(app, *, due_too: bool = False) -> int:
    """Run queued jobs until none is left; with due_too, first promote the scheduled ones."""
    svc = app.extensions["strava_sync"]
    ran = 0
    if due_too:
        promote_scheduled(app)
    with services.bind(svc):
        while True:
            worker = SimpleWorker([svc.queue(n) for n in QUEUES], connection=svc.redis)
            if not worker.work(burst=True, logging_level="WARNING"):
                return ran
            ran += 1


def promote_scheduled(app) -> list[Job]:
    """Move every scheduled job (retries, budget waits) to its queue, as if its time had come."""
    svc = app.extensions["strava_sync"]
    moved = []
    for name in QUEUES:
        queue = Queue(name, connection=svc.redis)
        registry = ScheduledJobRegistry(queue=queue)
        for job_id in registry.get_job_ids():
            job = Job.fetch(job_id, connection=svc.redis)
            registry.remove(job)
            queue.enqueue_job(job)
            moved.append(job)
    return moved


def scheduled_jobs(app) -> list[Job]:
    """Jobs waiting in the scheduled registries."""
    svc = app.extensions["strava_sync"]
    jobs = []
    for name in QUEUES:
        registry = ScheduledJobRegistry(queue=Queue(name, connection=svc.redis))
        jobs += [Job.fetch(i, connection=svc.redis) for i in registry.get_job_ids()]
    return jobs


@pytest.fixture
def live(app):
    """Our app served on loopback."""
    server = LiveServer(app)
    yield server
    server.close()


def connect_rider(app, sim: StravaSim, name=("Ada", "Lovelace"), scope="read,activity:read_all"):
    """A rider connected through tokens the simulator issued; returns (rider_id, athlete_id)."""
    athlete_id = sim.add_athlete(*name)
    tokens = sim.grant(athlete_id, scope)
    svc = app.extensions["strava_sync"]
    stored = {k: svc.cipher.encrypt(tokens[k]) for k in ("access_token", "refresh_token")}
    stored["expires_at"] = tokens["expires_at"]
    with svc.engine.begin() as conn:
        rider_id = models.create_rider(conn, " ".join(name), now=svc.now())
        models.save_connection(conn, rider_id, athlete_id, stored, scope, now=svc.now())
        models.update_connection(conn, rider_id, backfill_before=0)
    return rider_id, athlete_id


def event(sim_or_owner, object_id, aspect="create", object_type="activity", updates=None, **kw):
    """A webhook body as Strava sends it."""
    owner = sim_or_owner
    body = {
        "aspect_type": aspect,
        "event_time": kw.pop("event_time", 1764316800),
        "object_id": object_id,
        "object_type": object_type,
        "owner_id": owner,
        "subscription_id": kw.pop("subscription_id", 120475),
        "updates": updates if updates is not None else {},
    }
    body.update(kw)
    return body


def stop_redis_client(svc):
    """Point the app at a Redis that refuses connections (simulates Redis being down)."""
    svc.redis = services.connect_redis("redis://127.0.0.1:1")


@pytest.fixture
def start_stack(request, tmp_path):
    """Start an end-to-end Stack around a new simulator; stopped at teardown, logs on failure."""
    from e2e_support import WORKERS, Stack

    started: list = []
    failed_before = request.session.testsfailed

    def start(*, before_request=None, workers=WORKERS, env=None, pooler=None, **sim_options):
        sim = StravaSim(seed=11, **sim_options)
        if before_request is not None:
            sim.app.before_request(before_request)  # Flask only takes hooks before serving
        pooled = pooler.url if pooler is not None else None
        stack = Stack(sim.start(), REAL_DATABASE, REAL_REDIS, tmp_path, pooled_url=pooled)
        stack.env.update(env or {})
        started.append(stack)
        return stack.start(workers)

    yield start
    # The call phase's report is logged before teardown runs, so a failure is already counted.
    failed = request.session.testsfailed > failed_before
    for stack in started:
        try:
            stack.close(failed)
        finally:
            stack.sim.stop()
