"""The app factory, configuration and health check."""

import logging
import os

import pytest
from conftest import make_app, stop_redis_client

import config
from models import make_engine


def test_create_app_needs_no_settings_and_defaults_to_inline_sqlite(instance_in_tmp):
    from app import create_app

    app = create_app({"INLINE_WORKER": False})
    svc = app.extensions["strava_sync"]
    try:
        assert svc.inline
        assert (
            app.extensions["strava_sync"].settings.database_url
            == f"sqlite:///{instance_in_tmp}/strava_sync.sqlite"
        )
        assert os.path.isdir(instance_in_tmp)  # made for the default database, not in the repo
        assert (
            app.extensions["strava_sync"].settings.strava_api_url == "https://www.strava.com/api/v3"
        )
    finally:
        svc.engine.dispose()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "postgres://u:p@db.supabase.co:5432/postgres",
            "postgresql+psycopg://u:p@db.supabase.co:5432/postgres",
        ),
        ("postgresql://u@h/db?sslmode=require", "postgresql+psycopg://u@h/db?sslmode=require"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.sqlite", "sqlite:////tmp/x.sqlite"),
    ],
)
def test_database_url_accepts_supabase_urls_as_given(raw, expected):
    assert config.database_url(raw, "/instance") == expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("STRAVA_RATE_LIMITS", "200", "two positive integers"),
        ("STRAVA_READ_RATE_LIMITS", "100,-1", "two positive integers"),
        ("RECONCILE_RESERVE", "1.5", "below 1"),
        ("RECONCILE_RESERVE", "lots", "a number"),
        ("RECONCILE_LOOKBACK_DAYS", "0", "whole number of at least 1"),
    ],
)
def test_bad_settings_are_named(name, value, message):
    with pytest.raises(config.ConfigError, match=f"{name} must be .*{message}"):
        config.from_environ({name: value})


def test_settings_are_read_from_the_environment():
    cfg = config.from_environ(
        {
            "STRAVA_READ_RATE_LIMITS": "300, 3000",
            "EDDINGTON_SPORT_TYPES": "Ride, EBikeRide",
            "STRAVA_API_URL": "http://127.0.0.1:9/api/v3/",
        }
    )
    assert cfg.strava_read_rate_limits == (300, 3000)
    assert cfg.eddington_sport_types == {"Ride", "EBikeRide"}
    assert cfg.strava_api_url == "http://127.0.0.1:9/api/v3"
    assert cfg.redis_url is None and cfg.cron_secret is None


def test_missing_encryption_key_is_warned_about_when_deployed(caplog):
    from app import create_app

    with caplog.at_level(logging.WARNING):
        app = create_app({"DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:9/x"})
    app.extensions["strava_sync"].engine.dispose()
    assert "TOKEN_ENCRYPTION_KEY is not set" in caplog.text


def test_healthz_reports_both_parts(client, svc):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "db": "ok",
        "redis": "ok" if not svc.inline else "inline",
    }


def test_healthz_is_503_naming_what_is_down(app, client, svc, tmp_path):
    svc.engine.dispose()
    svc.engine = make_engine(f"sqlite:///{tmp_path}/no/such/dir.sqlite")
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body == {
        "status": "degraded",
        "db": "down: the database file cannot be opened",
        "redis": body["redis"],
    }  # the kind, no host


def test_healthz_names_redis_when_it_is_down(database_url, sim):
    app = make_app(database_url, sim, REDIS_URL="redis://127.0.0.1:1/0")
    svc = app.extensions["strava_sync"]
    stop_redis_client(svc)
    body = app.test_client().get("/healthz").get_json()
    assert (
        body["db"] == "ok" and body["redis"] == "down: unreachable" and "127.0.0.1" not in str(body)
    )


def test_unknown_paths_answer_json(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert "error" in response.get_json()
    assert client.delete("/api/strava/webhook").status_code == 405


def test_access_logs_never_show_the_verify_token():
    from app import RedactSecrets

    request_line = "GET /api/strava/webhook?hub.verify_token=s3cret&hub.challenge=x HTTP/1.1"
    args = ("127.0.0.1", request_line, "200")
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '%s "%s" %s', args, None)
    assert RedactSecrets().filter(record)
    line = record.getMessage()
    assert "s3cret" not in line and "hub.verify_token=[redacted]&hub.challenge=x" in line
