"""Misconfiguration ends in one sentence naming the variable and the fix, never a traceback."""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CRON_SECRET, PYTHONPATH, REAL_DATABASE, event, make_app

import config
import services
from models import make_engine
from services.diagnose import StartupError

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="  # a valid Fernet key (32 bytes)
FERNET_HINT = (
    "TOKEN_ENCRYPTION_KEY is not a Fernet key: make one with python -c 'from cryptography.fernet "
    "import Fernet; print(Fernet.generate_key().decode())'"
)


def run_flask(tmp_path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """`flask --app app ...` as an operator runs it, in a clean environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRAVA_", "TEST_"))}
    clean.pop("REDIS_URL", None)
    clean.update({"PYTHONPATH": PYTHONPATH, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"})
    clean["TOKEN_ENCRYPTION_KEY"] = GOOD_KEY
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def no_traceback(result) -> bool:
    lines = (result.stdout + result.stderr).splitlines()
    return not any(line.startswith("Traceback") for line in lines)


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        ({"TOKEN_ENCRYPTION_KEY": "not-a-key"}, FERNET_HINT),
        (
            {"RECONCILE_RESERVE": "20%"},
            "RECONCILE_RESERVE must be a number between 0 and 1 (write 0.2 for 20%), got '20%'",
        ),
        (
            {"DATABASE_URL": "postgress://u:secret@127.0.0.1/db"},
            "DATABASE_URL starts with postgress://: use "
            "postgresql://user:password@host:5432/dbname (or sqlite:///path)",
        ),
        (
            {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
            "DATABASE_URL: connection refused on 127.0.0.1:1: start PostgreSQL or fix the host "
            "and port",
        ),
        ({}, "tables missing: run flask --app app init-db"),
        (
            {"REDIS_URL": "http://127.0.0.1:6379"},
            "REDIS_URL starts with http://: use redis://host:6379/0 (or rediss:// for TLS)",
        ),
    ],
)
def test_the_cli_gives_one_sentence(tmp_path, env, sentence):
    result = run_flask(tmp_path, env, "strava", "status")
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: {sentence}"
    assert no_traceback(result) and "secret" not in result.stderr


@pytest.mark.skipif(not REAL_DATABASE, reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_a_missing_database_is_named(tmp_path):
    url = REAL_DATABASE.rsplit("/", 1)[0] + "/ux_missing"
    result = run_flask(tmp_path, {"DATABASE_URL": url}, "strava", "riders")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: DATABASE_URL: database ux_missing does not exist: create it, or fix the name"
    )
    assert no_traceback(result)


def test_backfill_names_an_unreachable_redis(database_url, sim):
    from conftest import connect_rider

    app = make_app(database_url, sim, REDIS_URL="redis://127.0.0.1:1/0")
    rider_id, _ = connect_rider(app, sim)
    result = app.test_cli_runner().invoke(args=["strava", "backfill", str(rider_id)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: nothing was queued: REDIS_URL: cannot reach Redis on 127.0.0.1:1: "
        "start Redis or fix REDIS_URL"
    )
    assert no_traceback(result)


def test_gunicorn_refuses_a_bad_key_in_one_sentence(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRAVA_", "TEST_"))}
    env.update(PYTHONPATH=PYTHONPATH, TOKEN_ENCRYPTION_KEY="not-a-key")
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/db.sqlite"
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "--bind", "127.0.0.1:0", "--workers", "1", "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait()
    assert process.returncode != 0
    assert FERNET_HINT in err.splitlines()
    assert not any(line.startswith("Traceback") for line in (out + err).splitlines())


def test_a_worker_validates_the_same_way(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", "not-a-key")
    with pytest.raises(StartupError) as raised:
        services.from_environment()
    assert raised.value.message == FERNET_HINT


def test_every_entry_point_reads_dotenv(monkeypatch, tmp_path):
    from app import deployed_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INLINE_OK", raising=False)
    (tmp_path / ".env").write_text(
        f"DATABASE_URL=sqlite:///{tmp_path}/env.sqlite\nCRON_SECRET=from-dotenv\n"
    )
    monkeypatch.delenv("CRON_SECRET", raising=False)
    app = deployed_app()
    try:
        assert app.config["CRON_SECRET"] == "from-dotenv"
        assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path}/env.sqlite"
    finally:
        app.extensions["strava_sync"].close()
        monkeypatch.delenv("CRON_SECRET", raising=False)
        monkeypatch.delenv("DATABASE_URL", raising=False)


def test_a_deployed_inline_process_warns_and_healthz_fails(database_url, caplog):
    with caplog.at_level(logging.WARNING):
        app = make_app(
            database_url,
            REDIS_URL=None,
            DEPLOYED=True,
            CRON_SECRET=None,
            GENERATED_SECRET_KEY="test",
        )
    from app import deployment_notes

    svc = app.extensions["strava_sync"]
    notes = deployment_notes(app.config, svc.inline)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert (body["status"], body["mode"]) == ("degraded", "inline")
    assert body["notes"] == notes and len(notes) == 4
    assert notes[0].startswith("REDIS_URL is not set") and "INLINE_OK=1" in notes[0]
    assert notes[1].startswith("CRON_SECRET is not set")
    assert notes[2].startswith("STRAVA_CLIENT_ID is not set")
    assert notes[3].startswith("SECRET_KEY is not set")


def test_inline_ok_accepts_inline_mode(database_url, sim):
    app = make_app(database_url, sim, REDIS_URL=None, DEPLOYED=True, INLINE_OK=True)
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["mode"] == "inline" and response.get_json()["notes"] == [
        "REDIS_URL is not set: jobs run inside the web process (inline mode); set REDIS_URL "
        "and start workers, or set INLINE_OK=1 to accept it"
    ]


def test_deployed_app_logs_each_problem_once(monkeypatch, tmp_path, caplog):
    from app import deployed_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/empty.sqlite")
    with caplog.at_level(logging.WARNING):
        app = deployed_app()
    app.extensions["strava_sync"].close()
    messages = [r.getMessage() for r in caplog.records]
    assert "tables missing: run flask --app app init-db" in messages
    assert sum(m.startswith("REDIS_URL is not set") for m in messages) == 1


def test_healthz_and_cron_name_an_unreachable_database(app, client, svc, tmp_path, caplog):
    svc.engine.dispose()
    svc.engine = make_engine(f"sqlite:///{tmp_path}/no/such/dir.sqlite")
    sentence = "DATABASE_URL: the SQLite file cannot be opened: check that its folder exists"
    with caplog.at_level(logging.ERROR):
        assert client.get("/healthz").get_json()["db"] == "down: the database file cannot be opened"
        response = client.post(
            "/api/cron/reconcile", headers={"Authorization": f"Bearer {CRON_SECRET}"}, json={}
        )
    public = "the database is unavailable (the database file cannot be opened); the operator's log"
    assert response.status_code == 503 and response.get_json()["error"].startswith(public)
    assert sentence in [r.getMessage() for r in caplog.records]


def test_attack_healthz_and_503s_never_show_the_database_host_port_or_user(database_url, caplog):
    app = make_app(database_url, init_db=False)
    svc = app.extensions["strava_sync"]
    svc.engine.dispose()
    svc.engine = make_engine("postgresql://clubadmin:pw@127.0.0.1:1/club")
    client = app.test_client()
    with caplog.at_level(logging.ERROR):
        health = client.get("/healthz")
        webhook = client.post("/api/strava/webhook", json=event(134815, 1360128428))
    assert (health.status_code, health.get_json()["db"]) == (503, "down: connection refused")
    assert webhook.status_code == 503
    for answer in (health, webhook):
        body = answer.get_data(as_text=True)
        assert "127.0.0.1" not in body and ":1" not in body and "clubadmin" not in body
    assert "connection refused on 127.0.0.1:1" in caplog.text  # the operator's log has it all


def test_attack_vercel_never_shows_a_refused_value(monkeypatch, tmp_path, caplog):
    from app import vercel_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STRAVA_RATE_LIMITS", "pasted-client-secret-9f3e")  # the wrong variable
    with caplog.at_level(logging.ERROR):
        client = vercel_app().test_client()
    for path in ("/healthz", "/", "/api/strava/webhook"):
        response = client.get(path)
        assert response.status_code == 503
        assert "pasted-client-secret" not in response.get_data(as_text=True)
        assert "configuration is refused" in response.get_json()["error"]
    assert "pasted-client-secret-9f3e" in caplog.text  # the log names the value to fix


def test_vercel_logs_a_bad_configurations_sentence(monkeypatch, tmp_path, caplog):
    from app import vercel_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", "not-a-key")
    with caplog.at_level(logging.ERROR):
        response = vercel_app().test_client().get("/healthz")
    assert response.status_code == 503 and FERNET_HINT not in response.get_data(as_text=True)
    assert FERNET_HINT in [r.getMessage() for r in caplog.records]


def test_a_good_key_list_is_accepted():
    assert config.from_environ({"TOKEN_ENCRYPTION_KEY": f"{GOOD_KEY}, {GOOD_KEY}"})[
        "TOKEN_ENCRYPTION_KEY"
    ]


def test_help_with_a_bad_configuration_is_one_line_too(tmp_path):
    result = run_flask(tmp_path, {"RECONCILE_RESERVE": "20%"}, "--help")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: RECONCILE_RESERVE must be a number between 0 and 1 (write 0.2 for 20%), got '20%'"
    ]


@pytest.mark.skipif(not REAL_DATABASE, reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_init_db_names_a_missing_database(tmp_path):
    url = REAL_DATABASE.rsplit("/", 1)[0] + "/ux_missing"
    result = run_flask(tmp_path, {"DATABASE_URL": url}, "init-db")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: the migration failed: DATABASE_URL: database ux_missing does not exist: "
        "create it, or fix the name"
    )
    assert no_traceback(result)
