"""Fault injection against the real system: every fault for real, then the outcome counted.

Each test starts the end-to-end stack (gunicorn, three supervised `rq worker --with-scheduler`
processes, the Strava simulator) on a redis-server of its own and on PostgreSQL through a proxy it
can cut; the shared Redis and PostgreSQL are never stopped. Each phase injects one fault during a
burst of events, heals it, waits for the system to converge (a condition, never a sleep), then
counts: events we answered 200 that never reached a final status (lost), activity rows unlike
Strava's (wrong), riders deauthorized (false revocations, since nobody revoked), events or runs
left pending/queued/running (stuck), and the time from healing to convergence. The table of all
rows is printed at the end of the module; README's "Reliability" section copies it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import flask
import pytest
import requests
from conftest import REAL_DATABASE, REAL_REDIS
from e2e_support import wait_until
from fault_support import CuttableProxy, FaultStack, OwnRedis, Scoreboard, assess

import models
from jobs import history
from strava_sim import Faults, StravaSim

pytestmark = [
    pytest.mark.faults,
    pytest.mark.integration,
    pytest.mark.skipif(
        not (REAL_REDIS and REAL_DATABASE),
        reason="the fault suite needs TEST_REDIS_URL and TEST_DATABASE_URL",
    ),
]

ROOMY = {"limits": (1200, 60_000), "read_limits": (600, 30_000)}
CONVERGE = 180  # seconds any phase may take to converge before the test fails
SCORES = Scoreboard()


@pytest.fixture(scope="module", autouse=True)
def table(request):
    """Hand the table of every phase to the end-of-session summary."""
    yield SCORES
    machine = f"{_cpu_name()}, {_cpus()} cores"
    # Printed by tests/conftest.py's pytest_terminal_summary, after every other report.
    request.config.fault_table = [
        f"fault suite, {datetime.now(UTC):%Y-%m-%d}, {machine}",
        *SCORES.table(),
    ]


def _cpus() -> int:
    return os.cpu_count() or 0


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown CPU"
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
    return names[0] if names else "unknown CPU"


class Hooks:
    """Sim hooks a test arms while it runs (Flask takes hooks only before serving)."""

    def __init__(self):
        self.before = None
        self.after = None

    def run_before(self):
        return self.before() if self.before else None

    def run_after(self, response):
        return self.after(response) if self.after else response


@pytest.fixture
def system(request, tmp_path):
    """Start a FaultStack; stopped at teardown with log tails on failure."""
    own_redis = OwnRedis(tmp_path).start()
    proxy = CuttableProxy(5432)
    hooks = Hooks()
    started = []
    failed_before = request.session.testsfailed

    def start(**sim_options) -> FaultStack:
        sim = StravaSim(seed=13, **sim_options)
        sim.app.before_request(hooks.run_before)
        sim.app.after_request(hooks.run_after)
        stack = FaultStack(sim.start(), REAL_DATABASE, own_redis, proxy, tmp_path)
        started.append(stack)
        return stack.start()

    yield start, hooks
    failed = request.session.testsfailed > failed_before
    for stack in started:
        try:
            stack.close(failed)
        finally:
            stack.sim.stop()
    proxy.close()
    own_redis.stop()


def converge(stack, accepted, riders, fault, *, healed_at, keep_busy=None, timeout=CONVERGE):
    """Wait until nothing is waiting and every rider equals Strava, then score the phase."""
    last_nudge = [time.monotonic()]

    def settled() -> bool:
        if keep_busy is not None and time.monotonic() - last_nudge[0] > 5:
            last_nudge[0] = time.monotonic()
            accepted.extend(keep_busy())
        outcome = assess(stack, accepted, riders, fault)
        return outcome.clean() and stack.idle()

    try:
        wait_until(settled, timeout=timeout, what=f"recovery from: {fault}", interval=0.5)
    finally:
        outcome = assess(stack, accepted, riders, fault)
        outcome.recover_s = time.monotonic() - healed_at
        SCORES.rows.append(outcome)
    assert outcome.clean(), outcome
    return outcome


def burst(stack, riders, n=1, name="Ride") -> list[dict]:
    """Each rider records n activities; their events are delivered as Strava delivers them."""
    for _, athlete in riders:
        for _ in range(n):
            stack.sim.create_activity(athlete, name=name)
    return stack.post_outbox()


# -- Redis ----------------------------------------------------------------------------------------


def test_redis_paused_stopped_and_restarted_empty(system):
    start, _ = system
    stack = start(faults=Faults(not_found_after_create=20), **ROOMY)
    riders = [stack.connect_rider(f"Redis{i}") for i in range(3)]
    accepted = burst(stack, riders)
    stack.wait_idle(timeout=120)

    # Paused (SIGSTOP) during a burst: the webhook stores events as pending and still answers.
    stack.own_redis.pause()
    try:
        accepted += burst(stack, riders)
    finally:
        stack.own_redis.resume()
    converge(stack, accepted, riders, "Redis paused (SIGSTOP) during a burst",
             healed_at=time.monotonic())  # fmt: skip

    # Stopped with a retry due: a create that 404s is retried in 60 s; Redis is down meanwhile
    # (the schedulers crash), comes back with its data, and the retry must run within 2 minutes.
    _, athlete = riders[0]
    late = stack.sim.create_activity(athlete, name="Not ready yet")
    accepted += stack.post_outbox()
    wait_until(lambda: stack.scheduled_job_ids(), timeout=30, what="the 404 retry to be scheduled")
    stack.own_redis.stop()
    accepted += burst(stack, riders)
    stack.own_redis.start()
    healed = time.monotonic()
    wait_until(lambda: stack.activity_row_count(late) == 1, timeout=150, what="the retry")
    assert time.monotonic() - healed < 120, "the retry ran later than 2 minutes after Redis"
    converge(stack, accepted, riders, "Redis stopped, a retry due (data kept)", healed_at=healed)

    # Restarted empty during a burst: queued jobs vanish; the recovery pass queues them again.
    stack.sim.faults = Faults()
    accepted += burst(stack, riders, n=2)
    stack.own_redis.restart_empty()
    healed = time.monotonic()
    accepted += burst(stack, riders)
    converge(stack, accepted, riders, "Redis restarted empty during a burst", healed_at=healed,
             keep_busy=lambda: burst(stack, riders[:1]))  # fmt: skip


# -- the database ---------------------------------------------------------------------------------


def test_database_cut_mid_event_and_between_refresh_and_write(system):
    start, hooks = system
    stack = start(**ROOMY)
    riders = [stack.connect_rider(f"Db{i}") for i in range(3)]
    accepted = burst(stack, riders)
    stack.wait_idle(timeout=120)

    # Cut mid-burst for a few seconds: events that could not be stored get 5xx (Strava retries,
    # then gives up on them), jobs that lose the database are retried; the sweep repairs the rest.
    with ThreadPoolExecutor(max_workers=1) as pool:
        later = pool.submit(burst, stack, riders, 3)
        wait_until(lambda: stack.sim.requests["GET /activities/{id}"] > 3, timeout=30,
                   what="the burst to reach the workers")  # fmt: skip
        stack.proxy.cut()
        time.sleep(3)  # the outage itself: how long the link stays down
        stack.proxy.restore()
        accepted += later.result()
    healed = time.monotonic()
    stack.wait_idle(timeout=CONVERGE)
    stack.start_sweep()
    converge(stack, accepted, riders, "database cut mid-event", healed_at=healed)

    # Cut right after Strava answered a refresh, before we stored the new pair.
    rider, athlete = riders[1]
    with stack.engine.begin() as conn:
        models.update_connection(conn, rider, expires_at=int(time.time()) + 1800)
    cut_once = threading.Event()

    def cut_after_refresh(response):
        if flask.request.path.endswith("/oauth/token") and not cut_once.is_set():
            cut_once.set()
            stack.proxy.cut()
            threading.Timer(3, stack.proxy.restore).start()
        return response

    hooks.after = cut_after_refresh
    stack.sim.create_activity(athlete, name="After the refresh")
    accepted += stack.post_outbox()
    wait_until(cut_once.is_set, timeout=30, what="the refresh")
    healed = time.monotonic() + 3
    converge(stack, accepted, riders, "database cut between a refresh and its write",
             healed_at=healed)  # fmt: skip
    with stack.engine.connect() as conn:
        assert models.get_connection(conn, rider).needs_reconnect_since is None


# -- Strava ---------------------------------------------------------------------------------------


def test_strava_errors_hangs_and_a_lost_refresh_answer(system):
    start, hooks = system
    stack = start(**ROOMY)
    riders = [stack.connect_rider(f"Api{i}") for i in range(5)]
    answers = {
        "Strava 500": lambda: (flask.jsonify(message="Internal Server Error"), 500),
        "Strava 503 HTML": lambda: ("<html><body>Service Unavailable</body></html>", 503),
        "Strava bad JSON": lambda: ('{"id": 1, "na', 200, {"Content-Type": "application/json"}),
        "Strava 429, odd headers": lambda: (
            flask.jsonify(message="Rate Limit Exceeded"), 429,
            {"Retry-After": "2", "X-RateLimit-Usage": "²,1", "X-RateLimit-Limit": "0,0"},
        ),
        "Strava hangs past the timeout": lambda: (time.sleep(22), ("", 200))[1],
    }  # fmt: skip
    targets = {}
    for (fault, answer), (_, athlete) in zip(answers.items(), riders, strict=True):
        targets[str(stack.sim.create_activity(athlete, name=fault))] = (fault, answer)
    seen = set()

    def misbehave():
        activity = (flask.request.view_args or {}).get("activity_id")
        if activity in targets and activity not in seen:
            seen.add(activity)
            return targets[activity][1]()
        return None

    hooks.before = misbehave
    began = time.monotonic()
    accepted = stack.post_outbox()
    outcome = converge(stack, accepted, riders, "Strava: 500, 503 HTML, bad JSON, 429, hang",
                       healed_at=began)  # fmt: skip
    assert seen == set(targets)
    assert outcome.recover_s < CONVERGE

    # Strava rotates the pair but its answer is lost: the rider must reconnect, nothing is
    # deleted; once they reconnect the sweep brings their rows up to date.
    hooks.before = None
    rider, athlete = riders[0]
    # Strava rotates a pair only in its last hour: move Strava's clock there, and ours for this
    # rider (the workers' clock is the real one).
    stack.sim.clock.advance(5.2 * 3600)
    with stack.engine.begin() as conn:
        models.update_connection(conn, rider, expires_at=int(time.time()) + 1800)
    lost = threading.Event()

    def lose_refresh_answer(response):
        if flask.request.path.endswith("/oauth/token") and not lost.is_set():
            lost.set()
            return flask.Response("<html>502 Bad Gateway</html>", status=502)
        return response

    hooks.after = lose_refresh_answer
    stack.sim.create_activity(athlete, name="Behind a lost refresh")
    accepted += stack.post_outbox()
    wait_until(lambda: _needs_reconnect(stack, rider), timeout=120, what="needs_reconnect")
    with stack.engine.connect() as conn:
        assert len(models.rider_activities(conn, rider)) == 1  # kept, not purged
    hooks.after = None
    healed = time.monotonic()
    _reconnect(stack, rider, athlete)
    stack.start_sweep()
    converge(stack, accepted, riders, "Strava loses a refresh answer (then reconnect)",
             healed_at=healed)  # fmt: skip


def _needs_reconnect(stack, rider) -> bool:
    with stack.engine.connect() as conn:
        return models.get_connection(conn, rider).needs_reconnect_since is not None


def _reconnect(stack, rider, athlete) -> None:
    """The rider follows an invite and connects again, as the OAuth callback stores it."""
    tokens = stack.sim.grant(athlete)
    stored = {k: stack.cipher.encrypt(tokens[k]) for k in ("access_token", "refresh_token")}
    stored["expires_at"] = tokens["expires_at"]
    with stack.engine.begin() as conn:
        models.save_connection(
            conn, rider, athlete, stored, "read,activity:read_all", now=datetime.now(UTC)
        )


# -- processes, cron and the sweep ----------------------------------------------------------------


def test_killed_workers_concurrent_crons_and_a_slow_sweep_list(system):
    start, hooks = system
    stack = start(**ROOMY)
    riders = [stack.connect_rider(f"Proc{i}") for i in range(5)]
    accepted = burst(stack, riders)
    stack.wait_idle(timeout=120)

    # kill -9 of a worker (its supervisor restarts it) and of another's work horse mid-fetch.
    stalled = threading.Event()
    release = threading.Event()
    victim = stack.sim.create_activity(riders[0][1], name="Killed mid-fetch")

    def stall():
        target = (flask.request.view_args or {}).get("activity_id") == str(victim)
        if target and not stalled.is_set():
            stalled.set()
            release.wait(timeout=30)

    hooks.before = stall
    accepted += stack.post_outbox()
    wait_until(stalled.is_set, timeout=30, what="the victim's fetch")
    try:
        (job_id,) = [j for j in stack.started_job_ids() if j.startswith(f"sync-activity-{victim}")]
        os.kill(stack.work_horse(job_id), signal.SIGKILL)
        busy = {w.pid for w in stack.rq_workers() if w.get_current_job_id() == job_id}
        idle = [w.pid for w in stack.rq_workers() if w.pid not in busy]
        os.kill(idle[0], signal.SIGKILL)
    finally:
        release.set()
    healed = time.monotonic()
    accepted += burst(stack, riders)
    converge(stack, accepted, riders, "kill -9 of a worker and of a work horse", healed_at=healed)
    hooks.before = None

    # Concurrent cron calls: one sweep, each rider listed once. The workers' own history checks
    # (which follow the day's first sweep, and list too) are marked planned for today so the
    # count is the sweep's alone.
    stack.redis.set(history.PLANNED_KEY.format(day=datetime.now(UTC).date().isoformat()), 1)
    listed = stack.sim.requests["GET /athlete/activities"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: _cron(stack), range(3)))
    began = time.monotonic()
    assert sorted(a["planned"] for a in answers) == [0, 0, 5]
    assert len({a["run_id"] for a in answers}) == 1
    converge(stack, accepted, riders, "three cron calls at once", healed_at=began)
    assert stack.sim.requests["GET /athlete/activities"] - listed == 5

    # A slow sweep list racing events: the late answer must not undo a rename or a new ride.
    rider, athlete = riders[2]
    held, go = threading.Event(), threading.Event()

    def slow_list(response):
        if flask.request.path.endswith("/athlete/activities") and not held.is_set():
            held.set()
            go.wait(timeout=30)
        return response

    hooks.after = slow_list
    ride = next(iter(stack.stored_activities(rider)))
    sweep = ThreadPoolExecutor(max_workers=1).submit(_cron, stack, {"max_riders": 1})
    wait_until(held.is_set, timeout=60, what="the sweep's list request")
    stack.sim.update_activity(ride, name="Renamed during the sweep")
    stack.sim.create_activity(athlete, name="New during the sweep")
    accepted += stack.post_outbox()
    wait_until(lambda: stack.stored_activities(rider) == stack.sim_activities(athlete),
               timeout=60, what="the events' fetches")  # fmt: skip
    go.set()
    began = time.monotonic()
    assert sweep.result()["planned"] == 1
    converge(stack, accepted, riders, "a slow sweep list racing events", healed_at=began)


def _cron(stack, body=None) -> dict:
    with requests.post(
        stack.url + "/api/cron/reconcile",
        headers={"Authorization": f"Bearer {stack.cron_secret}"},
        json=body or {},
        timeout=30,
    ) as response:
        assert response.status_code == 200, response.text
        return response.json()
