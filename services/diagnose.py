"""Known failures as one sentence for a person: the variable to check and the fix.

The CLI, the web app's start-up, `/healthz`, the cron endpoint and workers all explain a bad
configuration, an unreachable or empty database and an unreachable Redis with the same words.
The traceback, when there is one, goes to the log at debug level only.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import click
import redis
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from config import ConfigError
from models.migrate import MigrationError, check_at_head, current

INIT_DB = "run flask --app app init-db"
START_WORKER = (
    'rq worker -w worker.Worker --url "$REDIS_URL" --worker-ttl 60 --maintenance-interval 30 '
    "--with-scheduler strava reconcile"
)
_MISSING_DB = re.compile(r'database "([^"]+)" does not exist')
_MISSING_TABLE = re.compile(r'no such table|relation "[^"]+" does not exist')
_SERVER = re.compile(r'server at "([^"]+)"(?: \([^)]*\))?, port (\d+)')
_PASSWORD = re.compile(r"password authentication failed for user \"([^\"]+)\"")


class StartupError(click.ClickException):
    """A process cannot start as configured; the message is one sentence for a person.

    A ClickException, so `flask --app app ...` prints `Error: <sentence>` and exits 1 when the
    app factory raises it.
    """


def _where(url: str | None, default_port: int) -> str:
    parts = urlsplit(url or "")
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    return f"{parts.hostname or 'localhost'}:{port}"


def _database(exc: SQLAlchemyError, url: str | None) -> tuple[str, str]:
    """(what a public answer may say, the operator's sentence) for a database failure."""
    text = str(getattr(exc, "orig", None) or exc)
    if found := _MISSING_DB.search(text):
        sentence = (
            f"DATABASE_URL: database {found.group(1)} does not exist: create it, or fix the name"
        )
        return "the database does not exist", sentence
    if _MISSING_TABLE.search(text):
        return "tables missing", f"tables missing: {INIT_DB}"
    if found := _PASSWORD.search(text):
        return (
            "password refused",
            f"DATABASE_URL: the password of user {found.group(1)} was refused",
        )
    if "refused" in text.lower() or "could not connect" in text.lower():
        found = _SERVER.search(text)
        where = f"{found[1]}:{found[2]}" if found else _where(url, 5432)
        return "connection refused", (
            f"DATABASE_URL: connection refused on {where}: start PostgreSQL "
            "or fix the host and port"
        )
    if "unable to open database file" in text:
        sentence = "DATABASE_URL: the SQLite file cannot be opened: check that its folder exists"
        return "the database file cannot be opened", sentence
    kind = type(exc).__name__
    return f"it answered {kind}", f"DATABASE_URL: the database answered {kind}: check DATABASE_URL"


def _redis(exc: redis.RedisError, url: str | None) -> tuple[str, str]:
    """(what a public answer may say, the operator's sentence) for a Redis failure."""
    if isinstance(exc, redis.AuthenticationError):
        return "password refused", "REDIS_URL: Redis refused the password"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        sentence = (
            f"REDIS_URL: cannot reach Redis on {_where(url, 6379)}: start Redis or fix REDIS_URL"
        )
        return "unreachable", sentence
    return f"it answered {type(exc).__name__}", f"REDIS_URL: Redis answered {type(exc).__name__}"


def _diagnose(exc: BaseException, settings: dict) -> tuple[str, str] | None:
    if isinstance(exc, ConfigError | StartupError):
        return "the configuration is refused", str(exc)
    if isinstance(exc, MigrationError):
        return "the database schema does not match this code", str(exc)
    if isinstance(exc, SQLAlchemyError):
        return _database(exc, settings.get("DATABASE_URL"))
    if isinstance(exc, redis.RedisError):
        return _redis(exc, settings.get("REDIS_URL"))
    return None


def explain(exc: BaseException, settings: dict | None = None) -> str | None:
    """One sentence for a failure we know, or None for one we do not (for the log, CLI, /admin)."""
    found = _diagnose(exc, settings or {})
    return found[1] if found else None


def public_reason(exc: BaseException) -> str:
    """What a public answer may say about a failure: its kind, never a value, host, port or user."""
    found = _diagnose(exc, {})
    return found[0] if found else "an unexpected error"


KNOWN = (ConfigError, StartupError, MigrationError, SQLAlchemyError, redis.RedisError)


def check_database(engine: Engine, settings: dict) -> str | None:
    """What is wrong with the database (down, missing, not at the needed revision), or None."""
    try:
        if current(engine) is None:
            return f"tables missing: {INIT_DB}"
        check_at_head(engine)
    except KNOWN as exc:
        return explain(exc, settings)
    return None
