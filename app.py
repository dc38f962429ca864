"""The Flask application factory."""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import timedelta

import click
import redis
from flask import Flask, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

import cli
import config
import services
import webhook
from jobs import inline
from models import migrate
from services import diagnose
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
# Flask checks a session cookie's signature against this age, permanent or not (default 31 days).
SESSION_LIFETIME = timedelta(days=14)
BEARER = re.compile(r"(Bearer\s+)[^\s\"]+", re.IGNORECASE)


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


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment, with `test_config` applied on top."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder="web/templates",
        static_folder="web/static",
    )
    try:
        app.config.from_mapping(config.from_environ(instance_path=app.instance_path))
    except config.ConfigError as exc:
        if click.get_current_context(silent=True) is not None:
            # Under `flask --app app ...`, even while it lists commands for --help: one line.
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        raise StartupError(str(exc)) from None
    app.config["PERMANENT_SESSION_LIFETIME"] = SESSION_LIFETIME
    if test_config:
        app.config.update(test_config)
    _secure_cookies(app)
    if app.config["DATABASE_URL"].startswith("sqlite:///" + app.instance_path):
        os.makedirs(app.instance_path, exist_ok=True)  # the default database lives there
    svc = services.build(app.config)
    if svc.inline and app.config.get("INLINE_WORKER", True):
        svc.runner = inline.InlineRunner(svc)  # its thread starts with the first queued job
    extension.init_app(app, svc)
    deployed = app.config["REDIS_URL"] or not app.config["DATABASE_URL"].startswith("sqlite")
    if deployed and not app.config["TOKEN_ENCRYPTION_KEY"]:
        log.warning("TOKEN_ENCRYPTION_KEY is not set: Strava tokens are stored unencrypted")
    for blueprint in (webhook.bp, cron.bp, oauth.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(pages.bp)
    app.register_blueprint(admin.bp)
    app.register_error_handler(HTTPException, _json_error)
    app.register_error_handler(SQLAlchemyError, _service_error)
    app.register_error_handler(redis.RedisError, _service_error)
    app.add_url_rule("/healthz", view_func=healthz)
    if app.config.get("CHECK_SCHEMA", True):
        app.before_request(require_schema_at_head)
    cli.init_app(app)
    # urllib3 logs each request line at DEBUG, subscription calls' client_secret included.
    for name in ("werkzeug", "gunicorn.access", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
    return app


def _secure_cookies(app: Flask) -> None:
    """Session cookies go only over https when the site is served on https, never to scripts."""
    public_url = str(app.config.get("PUBLIC_URL") or "")
    if public_url.startswith("https://"):
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
    log.error("%s", diagnose.explain(exc, current_app.config))
    log.debug("the failure in full", exc_info=exc)
    return jsonify(error=public_failure(exc)), 503


def public_failure(exc: Exception) -> str:
    """A failed part as anyone may read it: which part and the kind of failure, no host or user."""
    part = "Redis" if isinstance(exc, redis.RedisError) else "the database"
    return f"{part} is unavailable ({diagnose.public_reason(exc)}); the operator's log has more"


def _down(exc: Exception, settings) -> str:
    """A health entry for a failed part: public, while the log gets the full sentence."""
    log.error("%s", diagnose.explain(exc, settings))
    return f"down: {diagnose.public_reason(exc)}"


def deployment_notes(settings: dict, inline: bool) -> list[str]:
    """What a deployed process lacks: each a sentence naming the variable (empty when fine)."""
    notes = []
    if inline:
        notes.append(
            "REDIS_URL is not set: jobs run inside the web process (inline mode); set REDIS_URL "
            "and start workers, or set INLINE_OK=1 to accept it"
        )
    if not settings.get("CRON_SECRET"):
        notes.append("CRON_SECRET is not set: the nightly sweep endpoint refuses everyone")
    if not settings.get("STRAVA_CLIENT_ID"):
        notes.append("STRAVA_CLIENT_ID is not set: riders cannot connect with Strava")
    if not config.secret_key_set(settings):
        notes.append(
            "SECRET_KEY is not set: each web process makes its own, so connecting with Strava "
            "fails whenever two processes share the work; set one random value"
        )
    return notes


def deployed_app() -> Flask:
    """The app as a deployed web process builds it: `.env` read, start-up problems logged.

    Raises StartupError (one sentence) when the configuration cannot be used.
    """
    config.read_dotenv()
    app = create_app({"DEPLOYED": True})
    svc = current_services_of(app)
    for note in deployment_notes(app.config, svc.inline):
        log.warning("%s", note)
    problem = diagnose.check_database(svc.engine, app.config)
    if problem:
        log.error("%s", problem)
    return app


def current_services_of(app: Flask) -> services.Services:
    """The services an app was built with."""
    return app.extensions[extension.KEY]


def vercel_app() -> Flask:
    """Vercel's app: a bad configuration answers every request 503, its sentence in the log only.

    The sentence may quote the refused value (a secret pasted into the wrong variable), so the
    public answer names only the part that failed.
    """
    try:
        return deployed_app()
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
        migrate.check_at_head(current_services().engine)
    except migrate.SchemaOutOfDate as exc:
        log.error("%s", exc)
        return jsonify(error=str(exc)), 503
    except SQLAlchemyError:
        return None  # the database is down: /healthz and the request itself report that
    current_app.extensions["schema_at_head"] = True  # checked once it passes, until a restart
    return None


def healthz():
    """Whether the database and Redis answer; a deployed process also names what it lacks.

    Public: it names the part that is down and how, never a host, port, user or setting's value.
    """
    svc = current_services()
    cfg = current_app.config
    status = {"status": "ok", "db": "ok", "redis": "inline" if svc.inline else "ok"}
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        status["db"] = _down(exc, cfg)
    if not svc.inline:
        try:
            svc.redis.ping()
        except redis.RedisError as exc:
            status["redis"] = _down(exc, cfg)
    refused_inline = False
    if cfg.get("DEPLOYED"):
        status["mode"] = "inline" if svc.inline else "workers"
        status["notes"] = deployment_notes(cfg, svc.inline)
        refused_inline = svc.inline and not cfg.get("INLINE_OK")
    if "down" in status["db"] or "down" in status["redis"] or refused_inline:
        status["status"] = "degraded"
        return jsonify(status), 503
    return jsonify(status)
