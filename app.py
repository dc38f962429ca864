"""The Flask application factory."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import click
import redis
from flask import Flask, current_app, jsonify
from flask.cli import AppGroup
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

import config
import services
import webhook
from jobs import inline
from models import revision
from services import deployed, diagnose
from services.diagnose import StartupError
from web import admin, cron, extension, oauth, pages
from web.extension import current_services

log = logging.getLogger(__name__)
# Secrets that travel in URLs: the verify token (validation GET), the OAuth code and state
# (callback), an invite token (connect link), and Strava credentials should one ever be logged.
SECRET_PARAM = re.compile(
    r"((?:^|[?&;\s])(?:hub\.verify_token|code|state|invite|client_secret|access_token"
    r"|refresh_token)=)[^&\s\"]*"
)
BEARER = re.compile(r"(Bearer\s+)[^\s\"]+", re.IGNORECASE)
# Flask checks a session cookie's signature against this age, permanent or not (default 31 days).
SESSION_LIFETIME = timedelta(days=14)


def redact(value):
    """A log argument with secrets in URLs (and bearer credentials) replaced by [redacted]."""
    if not isinstance(value, str):
        return value
    return BEARER.sub(r"\1[redacted]", SECRET_PARAM.sub(r"\1[redacted]", value))


class RedactSecrets(logging.Filter):
    """Keep secrets out of access logs: werkzeug's (tuple arguments) and gunicorn's (a dict)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) for a in record.args)
        elif isinstance(record.args, dict):
            # In place: gunicorn's atoms are a dict subclass whose lookups of `{header}i` atoms
            # lowercase the name and answer "-" when absent; a plain dict would raise KeyError.
            for key, value in record.args.items():
                record.args[key] = redact(value)
        return True


class LazyCommands(AppGroup):
    """The app's commands, imported on first use: a web process's cold start never loads them."""

    loaded = False

    def _load(self) -> None:
        if not self.loaded:
            self.loaded = True
            import cli  # the commands and all they import (the CLI layer)

            cli.register(self)

    def get_command(self, ctx: click.Context, cmd_name: str):
        self._load()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)


def create_app(
    test_config: dict | config.Settings | None = None, clock: Callable[[], float] = time.time
) -> Flask:
    """Build the app from the environment (and `.env`), with `test_config` applied on top.

    `test_config` may be whole `Settings`, or a mapping of settings (by variable or field name)
    and Flask's own keys; `clock` is the one time source every part reads.
    """
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder="web/templates",
        static_folder="web/static",
    )
    app.cli = LazyCommands(app.name)
    settings = _settings(app, test_config)
    app.config.update(SECRET_KEY=settings.secret_key, PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME)
    _secure_cookies(app, settings)
    if isinstance(test_config, dict):
        app.config.update({k: v for k, v in test_config.items() if not config.is_setting(k)})
    if settings.database_url.startswith("sqlite:///" + app.instance_path):
        os.makedirs(app.instance_path, exist_ok=True)  # the default database lives there
    svc = services.build(settings, clock)
    if svc.inline and settings.inline_worker:
        svc.runner = inline.InlineRunner(svc)  # its thread starts with the first queued job
    extension.init_app(app, svc)
    if (settings.redis_url or not settings.database_url.startswith("sqlite")) and not (
        settings.token_encryption_key
    ):
        log.warning("TOKEN_ENCRYPTION_KEY is not set: Strava tokens are stored unencrypted")
    _register(app)
    return app


def _settings(app: Flask, test_config: dict | config.Settings | None) -> config.Settings:
    """The settings: given whole, or read (with `.env` when not under test) and overridden."""
    if isinstance(test_config, config.Settings):
        return test_config
    try:
        if test_config is None:
            return config.load(app.instance_path)
        changes = {k: v for k, v in test_config.items() if config.is_setting(k)}
        return config.override(config.from_environ(instance_path=app.instance_path), **changes)
    except config.ConfigError as exc:
        if click.get_current_context(silent=True) is not None:
            # Under `flask --app app ...`, even while it lists commands for --help: one line.
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        raise StartupError(str(exc)) from None


def _register(app: Flask) -> None:
    """Blueprints, error handlers, the health check, the schema check, the CLI, log redaction."""
    for blueprint in (webhook.bp, cron.bp, oauth.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(pages.bp)
    app.register_blueprint(admin.bp)
    app.register_error_handler(HTTPException, _json_error)
    app.register_error_handler(SQLAlchemyError, _service_error)
    app.register_error_handler(redis.RedisError, _service_error)
    app.add_url_rule("/healthz", view_func=healthz)
    app.before_request(require_schema_at_head)
    # urllib3 logs each request line at DEBUG, subscription calls' client_secret included.
    for name in ("werkzeug", "gunicorn.access", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


def _secure_cookies(app: Flask, settings: config.Settings) -> None:
    """Session cookies go only over https when the site is served on https, never to scripts."""
    if (settings.public_url or "").startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    # Lax still sends the cookie on Strava's redirect back to the callback (a top-level GET).
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"


def _json_error(exc: HTTPException):
    if pages.wants_page():  # the pages' errors are pages; the JSON API stays JSON
        return pages.error_page(exc)
    return jsonify(error=exc.description or exc.name), exc.code


def _service_error(exc: Exception):
    """The database or Redis failed under a request: 503 naming the part, the sentence logged."""
    log.error("%s", diagnose.explain(exc, current_services().settings))
    log.debug("the failure in full", exc_info=exc)
    return jsonify(error=public_failure(exc)), 503


def public_failure(exc: Exception) -> str:
    """A failed part as anyone may read it: which part and the kind of failure, no host or user."""
    part = "Redis" if isinstance(exc, redis.RedisError) else "the database"
    return f"{part} is unavailable ({diagnose.public_reason(exc)}); the operator's log has more"


def deployment_notes(settings: config.Settings, inline: bool) -> list[str]:
    """What a deployed process runs without, by choice: each a sentence naming the variable."""
    notes = list(settings.notes)
    if inline:
        notes.append("INLINE_OK=1: jobs run inside the web process (inline mode), not in workers")
    if not settings.cron_secret:
        notes.append("CRON_SECRET is not set: the nightly sweep endpoint refuses everyone")
    return notes


def deployed_app(probe_database: bool = True) -> Flask:
    """The app as a deployed web process builds it: `.env` read, start-up problems logged.

    Raises StartupError (one sentence) when the configuration cannot be used or would fall back
    to a development default (services/deployed.py). `probe_database` logs what is wrong with the
    database at once; without it the first request finds out (`require_schema_at_head`).
    """
    settings = services.load_settings(deployed=True)
    deployed.refuse_unfit(settings, web=True)
    app = create_app(settings)
    svc = current_services_of(app)
    log.info("settings from %s", settings.dotenv_path or "the environment (no .env file)")
    log.info("database: %s; queues: %s", settings.describe_database(), settings.describe_redis())
    for note in deployment_notes(settings, svc.inline):
        log.warning("%s", note)
    problem = probe_database and diagnose.check_database(svc.engine, settings)
    if problem:
        log.error("%s", problem)
    return app


def current_services_of(app: Flask) -> services.Services:
    """The services an app was built with."""
    return app.extensions[extension.KEY]


def vercel_app() -> Flask:
    """Vercel's app: a bad configuration answers every request 503, its sentence in the log only.

    The sentence may quote the refused value (a secret pasted into the wrong variable), so the
    public answer names only the part that failed. The database is not probed at import: a cold
    start is followed by its request at once, which checks it (loading the PostgreSQL driver only
    then keeps the import itself within bench/coldstart.py's target).
    """
    try:
        return deployed_app(probe_database=False)
    except StartupError as exc:
        log.error("%s", exc.message)
    refusing = Flask(__name__)
    public = "this site cannot start: its configuration is refused; the operator's log says why"
    refusing.register_error_handler(404, lambda _: (jsonify(error=public), 503))
    return refusing


def require_schema_at_head():
    """Answer 503 with the fix until the database is at the revision this code needs."""
    if current_app.extensions.get("schema_at_head"):
        return None
    try:
        revision.check_at_head(current_services().engine)
    except revision.SchemaOutOfDate as exc:
        log.error("%s", exc)
        return jsonify(error=str(exc)), 503
    except SQLAlchemyError:
        return None  # the database is down: /healthz and the request itself report that
    current_app.extensions["schema_at_head"] = True  # checked once it passes, until a restart
    return None


def _probe(svc: services.Services) -> dict:
    """Each part's state: "ok" (or "inline"), else the exception saying what is wrong."""
    found: dict = {"db": "ok", "redis": "inline" if svc.inline else "ok"}
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        found["db"] = exc
    if not svc.inline:
        try:
            svc.redis.ping()
        except redis.RedisError as exc:
            found["redis"] = exc
    return found


def healthz():
    """Whether the database and Redis answer; an admin also reads where they are and why not.

    The public answer names the part that is down and how, never a host, a user or a value.
    """
    svc = current_services()
    settings = svc.settings
    parts = _probe(svc)
    down = [name for name, state in parts.items() if isinstance(state, Exception)]
    for name in down:
        log.error("%s", diagnose.explain(parts[name], settings))
    status = {"status": "degraded" if down else "ok"}
    status.update({name: parts[name] for name in parts if name not in down})
    status.update({name: f"down: {diagnose.public_reason(parts[name])}" for name in down})
    if pages.is_admin(pages.signed_in_connection()[1]):
        status.update({name: f"down: {diagnose.explain(parts[name], settings)}" for name in down})
        status["database"] = settings.describe_database()
        status["queues"] = settings.describe_redis()
        status["settings_from"] = settings.dotenv_path or "the environment (no .env file)"
        status["notes"] = deployment_notes(settings, svc.inline)
    if settings.deployed:
        status["mode"] = "inline" if svc.inline else "workers"
    return jsonify(status), 503 if down else 200
