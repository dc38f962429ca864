"""docs/deploy.md's rehearsal, step by step, against `flask --app app simulate` as a process.

The simulator, gunicorn (`wsgi:app`, two workers sharing SECRET_KEY) and, with real services, two
`rq worker` processes run as an operator starts them; the admin commands run as subprocesses with
the same environment. The operator connects, opens /admin, invites a rider, the ride's event is
delivered, and the nightly sweep is called as GitHub calls it.
"""

import json
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import PYTHONPATH, REAL_DATABASE, REAL_REDIS
from e2e_support import BIN, ROOT, free_port, wait_until

import models
from config import database_url as normalise

KEY = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="


def start(args, env, log: Path, stdout=None) -> subprocess.Popen:
    """Start a process; its output goes to a log file (a full pipe would block it)."""
    with log.open("w") as sink:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=stdout or sink, stderr=sink, text=True
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def flask(env, *args) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRAVA_", "TEST_"))}
    env.update(PYTHONPATH=PYTHONPATH, PYTHONUNBUFFERED="1", TOKEN_ENCRYPTION_KEY=KEY)
    env.update(STRAVA_VERIFY_TOKEN="rehearsal", CRON_SECRET="rehearsal")
    env["CREATE_FETCH_DELAY_SECONDS"] = "0"  # as the guide's rehearsal sets it
    env["SECRET_KEY"] = secrets.token_urlsafe(32)  # the web processes must share it
    env["CLUB_NAME"] = "Rehearsal Wheelers"
    env.pop("REDIS_URL", None)
    if REAL_DATABASE:
        engine = models.make_engine(normalise(REAL_DATABASE, ""))
        models.drop_all(engine)
        engine.dispose()
        env["DATABASE_URL"] = REAL_DATABASE
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path}/rehearsal.sqlite"
    if REAL_REDIS:
        import redis

        redis.Redis.from_url(REAL_REDIS).flushdb()
        env["REDIS_URL"] = REAL_REDIS
    else:
        env["INLINE_OK"] = "1"  # the guide's no-services variant: one process runs the jobs
    return env


def start_web_and_workers(env, tmp_path: Path, processes: list) -> str:
    """init-db, gunicorn as the guide starts it, and (with Redis) two workers; the app's URL."""
    worker = [str(BIN / "rq"), "worker", "-w", "worker.Worker", "--worker-ttl", "60"]
    worker += ["--maintenance-interval", "30", "--with-scheduler", "strava", "reconcile"]
    assert "Database ready" in flask(env, "init-db").stdout
    port = free_port()
    app = f"http://127.0.0.1:{port}"
    env["PUBLIC_URL"] = app
    workers = "1" if "INLINE_OK" in env else "2"
    web = [str(BIN / "gunicorn"), "--workers", workers, "--threads", "4",
           "--bind", f"127.0.0.1:{port}", "wsgi:app"]  # fmt: skip
    processes.append(start(web, env, tmp_path / "web.log"))

    def healthy():
        try:
            return requests.get(f"{app}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False  # still booting

    wait_until(healthy, timeout=60, what="gunicorn to answer /healthz")
    if REAL_REDIS:
        for i in range(2):
            processes.append(start([*worker, "--url", REAL_REDIS], env, tmp_path / f"w{i}.log"))
    return app


def operator_connects_opens_admin_and_invites(env, app: str, sim: str, athlete: int) -> None:
    """The operator connects and opens /admin; an invite made on the laptop works elsewhere."""
    requests.post(f"{sim}/_sim/login", json={"athlete_id": athlete}, timeout=5)
    with requests.Session() as browser:
        page = browser.get(f"{app}/strava/connect", timeout=10)
        assert (page.status_code, "Ada" in page.text) == (200, True), page.text
        admin = browser.get(f"{app}/admin", timeout=10)
    assert admin.status_code == 200 and "Operator dashboard" in admin.text
    assert "Rehearsal Wheelers" in admin.text
    # Made on the laptop, opened in another browser (two gunicorn workers, one SECRET_KEY).
    invite = flask(env, "strava", "invite", str(athlete)).stdout.splitlines()[-1]
    assert invite.startswith(f"{app}/strava/connect?invite="), invite
    with requests.Session() as phone:
        page = phone.get(invite, timeout=10)
    assert (page.status_code, page.url) == (200, f"{app}/me"), page.text


def nightly_sweep_and_worker_lines(env, app: str, athlete: int, tmp_path: Path) -> None:
    """The nightly sweep called as GitHub's workflow calls it; each worker's one line per job."""
    auth = {"Authorization": f"Bearer {env['CRON_SECRET']}"}
    sweep = requests.post(f"{app}/api/cron/reconcile", headers=auth, json={}, timeout=30)
    assert sweep.status_code == 200 and sweep.json()["planned"] == 1, sweep.text
    if REAL_REDIS:  # a worker prints its line after the job's last write

        def job_line():
            logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
            return re.search(rf"\d\d:\d\d:\d\d activity \d+ of athlete {athlete}: [a-z]", logs)

        wait_until(job_line, timeout=30, what="the worker's line for the ride")


def test_the_guide_rehearsed_against_flask_simulate(environment, tmp_path):
    env = environment
    processes = []
    simulate = [sys.executable, "-m", "flask", "--app", "app", "simulate", "--port", "0"]
    try:
        # Terminal 1: the simulator.
        simulator = start(simulate, env, tmp_path / "sim.log", stdout=subprocess.PIPE)
        processes.append(simulator)
        sim = re.search(r"on (http://127\.0\.0\.1:\d+)", simulator.stdout.readline())[1]
        env.update(STRAVA_API_URL=f"{sim}/api/v3", STRAVA_OAUTH_URL=f"{sim}/oauth")
        env.update(STRAVA_CLIENT_ID="4242", STRAVA_CLIENT_SECRET="sim-client-secret")
        # The operator's Strava athlete, made first: its id goes in ADMIN_ATHLETE_IDS.
        names = {"firstname": "Ada", "lastname": "Lovelace"}
        athlete = requests.post(f"{sim}/_sim/athletes", json=names, timeout=5).json()["id"]
        env["ADMIN_ATHLETE_IDS"] = str(athlete)

        # Terminal 2: the database, the web app, the workers.
        app = start_web_and_workers(env, tmp_path, processes)
        callback = f"{app}/api/strava/webhook"
        created = flask(env, "strava", "subscription", "create", "--callback-url", callback)
        assert "Subscription created" in created.stdout

        operator_connects_opens_admin_and_invites(env, app, sim, athlete)

        # The rider uploads a ride; Strava pushes the event.
        ride = {"name": "Hills", "distance": 42000}
        uploaded = requests.post(f"{sim}/_sim/athletes/{athlete}/activities", json=ride, timeout=5)
        assert uploaded.status_code == 201
        delivered = requests.post(f"{sim}/_sim/events/deliver", timeout=10).json()
        assert delivered["delivered"] == 1

        def status():
            data = json.loads(flask(env, "strava", "status", "--json").stdout)
            return data if data["events_24h"].get("done") == 1 else None

        data = wait_until(status, timeout=90, what="the event to be done")
        assert data["riders"]["current"] == 1
        state = requests.get(f"{sim}/_sim/state", timeout=5).json()
        assert data["subscription_id"] == state["subscription"]["id"]
        if REAL_REDIS:
            assert data["queues"]["strava"]["workers"] == 2 and data["warnings"] == []
        riders = flask(env, "strava", "riders").stdout
        assert "Ada Lovelace" in riders and "current" in riders

        nightly_sweep_and_worker_lines(env, app, athlete, tmp_path)
    finally:
        for process in reversed(processes):
            stop(process)


def test_the_guide_agrees_with_the_files_it_hands_out():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    unit = (ROOT / "deploy" / "strava-sync-worker.service").read_text()
    restart = re.search(r"^RestartSec=(\d+)$", unit, re.MULTILINE)[1]
    assert set(re.findall(r"RestartSec=(\d+)", guide)) == {restart}
    threads = re.search(r"--threads \d+", (ROOT / "Procfile").read_text())[0]
    gunicorn_lines = re.findall(r"gunicorn --workers.*", guide)
    assert gunicorn_lines and all(threads in line for line in gunicorn_lines), gunicorn_lines
    example = (ROOT / ".env.example").read_text()
    for name in ("SECRET_KEY", "PUBLIC_URL", "ADMIN_ATHLETE_IDS", "CLUB_NAME"):
        assert re.search(rf"^{name}=", example, re.MULTILINE), name
        assert f"| `{name}`" in guide, name
    assert "chmod 600 .env" in guide and "chmod 600 .env" in example
    rehearsal = guide[guide.index("## 10. Rehearse") :]
    for step in ("export SECRET_KEY=", ". .venv/bin/activate", "strava invite", "/admin",
                 "/api/cron/reconcile"):  # fmt: skip
        assert step in rehearsal, step
