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
        (
            {},
            "tables missing in the SQLite file {tmp_path}/db.sqlite (settings from no .env file): "
            "run flask --app app init-db",
        ),
        (
            {"REDIS_URL": "http://127.0.0.1:6379"},
            "REDIS_URL starts with http://: use redis://host:6379/0 (or rediss:// for TLS)",
        ),
    ],
)
def test_the_cli_gives_one_sentence(tmp_path, env, sentence):
    result = run_flask(tmp_path, env, "strava", "status")
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: {sentence.format(tmp_path=tmp_path)}"
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


def deployable(tmp_path, **changes) -> dict[str, str]:
    """What a deployed process needs (inline by choice), with `changes` on top."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/deployed.sqlite",
        "INLINE_OK": "1",
        "SECRET_KEY": "k4Jx9-wq2VbN7s0Lr8ZtYc3Hd6Mf1PgE",
        "STRAVA_CLIENT_ID": "4242",
        "STRAVA_CLIENT_SECRET": "client-secret",
        "PUBLIC_URL": "https://club.example.org",
    }
    return {**env, **changes}


def test_every_entry_point_reads_dotenv(monkeypatch, tmp_path):
    from app import deployed_app

    monkeypatch.chdir(tmp_path)
    lines = [f"{k}={v}" for k, v in deployable(tmp_path, CRON_SECRET="from-dotenv").items()]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    app = deployed_app()
    try:
        settings = app.extensions["strava_sync"].settings
        assert settings.cron_secret == "from-dotenv"
        assert settings.database_url == f"sqlite:///{tmp_path}/deployed.sqlite"
        assert settings.dotenv_path == str(tmp_path / ".env")
    finally:
        app.extensions["strava_sync"].close()


def test_a_deployed_inline_process_says_so_to_the_admin_only(database_url, sim):
    from app import deployment_notes

    app = make_app(
        database_url, sim, REDIS_URL=None, deployed=True, INLINE_OK=True, CRON_SECRET=None
    )
    svc = app.extensions["strava_sync"]
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "db": "ok", "redis": "inline", "mode": "inline"}
    assert deployment_notes(svc.settings, svc.inline) == [
        "INLINE_OK=1: jobs run inside the web process (inline mode), not in workers",
        "CRON_SECRET is not set: the nightly sweep endpoint refuses everyone",
    ]


def test_deployed_app_logs_each_problem_once(monkeypatch, tmp_path, caplog):
    from app import deployed_app

    monkeypatch.chdir(tmp_path)
    for name, value in deployable(tmp_path).items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING):
        app = deployed_app()
    app.extensions["strava_sync"].close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("tables missing in the SQLite file") for m in messages) == 1
    assert sum(m.startswith("INLINE_OK=1") for m in messages) == 1


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
    assert config.from_environ(
        {"TOKEN_ENCRYPTION_KEY": f"{GOOD_KEY}, {GOOD_KEY}"}
    ).token_encryption_key


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
