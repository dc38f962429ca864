"""A deployed process refuses development fallbacks and weak secrets; operators see where they are.

Each test makes the operator's mistake and reads what they would read: the process's output, the
page, the log line.
"""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import PYTHONPATH, configure, connect_rider, make_app
from pages_support import post, sign_in
from test_misconfiguration import GOOD_KEY, deployable, run_flask
from test_oauth import authorize

import config
import worker
from config import dotenv
from services import deployed
from services.diagnose import StartupError

ROOT = Path(__file__).resolve().parent.parent
MAKE = 'make one with python -c "import secrets; print(secrets.token_urlsafe(32))"'


def gunicorn_output(tmp_path, env: dict) -> tuple[int, str]:
    """Start `gunicorn wsgi:app` with only `env` set (a refusal ends it); status and stderr."""
    clean = {k: v for k, v in os.environ.items() if k not in config.ENV_NAMES}
    clean = {k: v for k, v in clean.items() if not k.startswith("TEST_")}
    clean.update(PYTHONPATH=PYTHONPATH, HOME=str(tmp_path), TOKEN_ENCRYPTION_KEY=GOOD_KEY, **env)
    argv = [str(Path(sys.executable).with_name("gunicorn")), "-b", "127.0.0.1:0", "wsgi:app"]
    process = subprocess.Popen(
        argv, cwd=ROOT, env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait()
    return process.returncode, err


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("changeme", "is a well-known or guessable value"),
        ("secret", "is a well-known or guessable value"),
        ("dev", "is a well-known or guessable value"),
        ("a" * 40, "is a well-known or guessable value"),
        ("k4Jx9-wq2VbN7s0L", "is shorter than 32 bytes"),
        ("", "is not set"),
    ],
)
def test_attack_a_weak_secret_key_is_refused_in_one_sentence(tmp_path, key, problem):
    env = deployable(tmp_path, SECRET_KEY=key)
    settings = config.from_environ(env, instance_path=str(tmp_path))
    assert deployed.problems(settings, web=True) == [
        f"SECRET_KEY {problem}: {MAKE} and set it for every process"
    ]


def test_gunicorn_refuses_a_well_known_secret_key_in_one_sentence(tmp_path):
    status, err = gunicorn_output(tmp_path, deployable(tmp_path, SECRET_KEY="changeme"))
    assert status != 0
    assert (
        f"SECRET_KEY is a well-known or guessable value: {MAKE} and set it for every process"
        in (err.splitlines())
    )
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("changes", "start"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL is not set: a deployed process does not fall back"),
        ({"INLINE_OK": ""}, "REDIS_URL is not set: a deployed process does not run jobs inside"),
        ({"STRAVA_CLIENT_SECRET": ""}, "STRAVA_CLIENT_SECRET is not set: riders cannot connect"),
        (
            {"STRAVA_CLIENT_ID": "", "STRAVA_CLIENT_SECRET": ""},
            "STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET are not set",
        ),
        ({"PUBLIC_URL": ""}, "PUBLIC_URL is not set: riders cannot be sent back here"),
    ],
)
def test_a_deployed_web_process_never_falls_back_silently(tmp_path, monkeypatch, changes, start):
    from app import deployed_app, vercel_app

    monkeypatch.chdir(tmp_path)
    for name, value in deployable(tmp_path, **changes).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StartupError) as raised:
        deployed_app()
    assert raised.value.message.startswith(start)
    assert vercel_app().test_client().get("/").status_code == 503


def test_gunicorn_with_a_mistyped_database_url_refuses_to_use_sqlite(tmp_path):
    env = deployable(tmp_path)
    env["DATABSE_URL"] = env.pop("DATABASE_URL")
    status, err = gunicorn_output(tmp_path, env)
    assert status != 0 and "DATABASE_URL is not set" in err


def test_a_worker_refuses_to_run_without_redis_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in config.ENV_NAMES}
    env.update(deployable(tmp_path, INLINE_OK=""), PYTHONPATH=PYTHONPATH)
    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/3")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("rq")), "worker", "-w", "worker.Worker", "--burst",
         "--url", redis_url, "strava"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == worker.CONFIG_ERROR_EXIT
    assert result.stderr.strip().splitlines()[-1].startswith("Error: REDIS_URL is not set")
    assert "Traceback" not in result.stderr


def test_a_typo_in_dotenv_is_named_with_did_you_mean(tmp_path):
    (tmp_path / ".env").write_text(f"DATABSE_URL=sqlite:///{tmp_path}/typo.sqlite\nREDIS_ULR=x\n")
    result = run_flask(tmp_path, {}, "init-db")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"Warning: {tmp_path}/.env sets DATABSE_URL, which is not a setting: did you mean "
        "DATABASE_URL?",
        f"Warning: {tmp_path}/.env sets REDIS_ULR, which is not a setting: did you mean REDIS_URL?",
    ]
    assert f"settings: {tmp_path}/.env and the environment" in result.stdout
    assert f"database: SQLite file {tmp_path}/db.sqlite" in result.stdout
    assert "queues: no Redis (inline mode" in result.stdout


def test_init_db_and_status_name_the_database_but_never_its_password(tmp_path):
    url = "postgresql://club:hunter2@127.0.0.1:1/strava"
    result = run_flask(
        tmp_path, {"DATABASE_URL": url, "REDIS_URL": "redis://:pw@127.0.0.1:1/2"}, "init-db"
    )
    assert "database: PostgreSQL database strava on 127.0.0.1:1" in result.stdout
    assert "queues: Redis database 2 on 127.0.0.1:1" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


def test_a_command_from_another_folder_says_which_env_and_where_the_database_is(tmp_path):
    result = run_flask(tmp_path, {}, "strava", "status")
    assert result.stderr.strip() == (
        f"Error: tables missing in the SQLite file {tmp_path}/db.sqlite (settings from no .env "
        "file): run flask --app app init-db"
    )


def test_the_env_file_beside_the_app_is_found_from_another_folder(tmp_path, monkeypatch):
    app_folder, elsewhere = tmp_path / "app", tmp_path / "elsewhere"
    app_folder.mkdir(), elsewhere.mkdir()
    (app_folder / ".env").write_text("CLUB_NAME=Beside The App\n")
    monkeypatch.setattr(dotenv, "BESIDE_THE_APP", app_folder / ".env")
    monkeypatch.chdir(elsewhere)
    settings = config.load(str(tmp_path))
    assert (settings.club_name, settings.dotenv_path) == (
        "Beside The App",
        str(app_folder / ".env"),
    )


def test_healthz_names_the_database_and_redis_to_admins_only(database_url, sim):
    app = make_app(database_url, sim)
    rider, athlete = connect_rider(app, sim)
    configure(app, admin_athlete_ids=frozenset({athlete}))
    public = app.test_client().get("/healthz").get_json()
    assert set(public) == {"status", "db", "redis"}
    admin = app.test_client()
    sign_in(admin, rider)
    body = admin.get("/healthz").get_json()
    settings = app.extensions["strava_sync"].settings
    assert body["database"] == settings.describe_database()
    assert body["queues"] == settings.describe_redis()
    assert body["settings_from"] == "the environment (no .env file)"


def test_attack_a_forged_host_never_reaches_strava_as_redirect_uri(database_url, sim):
    app = make_app(database_url, sim, PUBLIC_URL="https://club.example.org")
    start = app.test_client().get("/strava/connect", headers={"Host": "evil.example"})
    query = parse_qs(urlsplit(start.location).query)
    assert query["redirect_uri"] == ["https://club.example.org/strava/callback"]


def test_the_redirect_uri_follows_the_callback_url_without_public_url(database_url, sim):
    app = make_app(
        database_url, sim, STRAVA_CALLBACK_URL="https://sync.example.org/api/strava/webhook"
    )
    start = app.test_client().get("/strava/connect", headers={"Host": "evil.example"})
    assert parse_qs(urlsplit(start.location).query)["redirect_uri"] == [
        "https://sync.example.org/strava/callback"
    ]


def test_a_wrong_client_secret_is_logged_and_shown_to_the_admin(database_url, sim, caplog):
    app = make_app(database_url, sim)
    admin_rider, athlete = connect_rider(app, sim)
    configure(app, admin_athlete_ids=frozenset({athlete}))
    svc = app.extensions["strava_sync"]
    svc.client.client_secret = "not-the-secret"  # as with a mistyped STRAVA_CLIENT_SECRET
    with caplog.at_level(logging.ERROR):
        page = authorize(app.test_client(), sim, sim.add_athlete())
    assert page.status_code == 502 and "setup is incomplete" in page.get_data(as_text=True)
    assert any(
        "check STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET" in r.getMessage() for r in caplog.records
    )
    admin = app.test_client()
    sign_in(admin, admin_rider)
    assert "check STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET" in admin.get("/admin").get_data(
        as_text=True
    )


@pytest.mark.parametrize("form", [{"hours": "\u00b2"}, {"rider_id": "\u00b2"}, {"hours": "\u0663"}])
def test_admin_form_refuses_unusual_digits_with_a_400(database_url, sim, form):
    app = make_app(database_url, sim)
    rider, athlete = connect_rider(app, sim)
    configure(app, admin_athlete_ids=frozenset({athlete}))
    client = app.test_client()
    sign_in(client, rider)
    response = post(client, "/admin/invites", {"rider_id": str(rider), "hours": "2", **form})
    assert response.status_code == 400


@pytest.mark.parametrize(
    "args",
    [
        ["strava", "invite", "\u0661"],
        ["strava", "invite", "1", "--hours", "\u00b2"],
        ["strava", "backfill", "\u0661"],
        ["strava", "backfill", "1", "--days", "\u0663"],
        ["strava", "reconcile", "--max-riders", "\u00b2"],
        ["strava", "leaderboard", "--limit", "\u0663"],
    ],
)
def test_cli_numbers_are_ascii_digits_only(app, args):
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 2  # click's usage error, naming the option
    assert "must be a whole number of at least" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
