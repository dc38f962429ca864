"""Every setting strava-sync reads, in one frozen, typed object built in one place.

Each field of `Settings` that comes from the environment names its variable, its parser (one per
kind of value, in `config/parse.py`) and its default as the text an operator would write. The
list of variables (`ENV_NAMES`) is derived from it. Tests override fields by variable name
(`override(settings, CREATE_FETCH_DELAY_SECONDS=0)`) or with `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from config import parse
from config.dotenv import read_dotenv, typo_notes
from config.parse import ConfigError

__all__ = [
    "ENV_NAMES",
    "ConfigError",
    "Settings",
    "from_environ",
    "is_setting",
    "load",
    "override",
    "parse",
]

DEFAULT_API_URL = "https://www.strava.com/api/v3"
DEFAULT_OAUTH_URL = "https://www.strava.com/oauth"


def _env(name: str, parser, default: str = "", secret: bool = False) -> Any:
    """A field read from variable `name` with `parser`; `default` is the text used when unset."""
    return field(
        default=None, metadata={"env": name, "parse": parser, "raw": default, "secret": secret}
    )


@dataclass(frozen=True)
class Settings:
    """The process's settings; see DESIGN.md §3 for what each variable means."""

    secret_key: str | None = _env("SECRET_KEY", parse.secret, secret=True)
    strava_client_id: str | None = _env("STRAVA_CLIENT_ID", parse.optional_whole)
    strava_client_secret: str | None = _env("STRAVA_CLIENT_SECRET", parse.secret, secret=True)
    strava_verify_token: str | None = _env("STRAVA_VERIFY_TOKEN", parse.secret, secret=True)
    strava_api_url: str = _env("STRAVA_API_URL", parse.http_url, DEFAULT_API_URL)
    strava_oauth_url: str = _env("STRAVA_OAUTH_URL", parse.http_url, DEFAULT_OAUTH_URL)
    strava_callback_url: str | None = _env("STRAVA_CALLBACK_URL", parse.http_url)
    strava_subscription_id: str | None = _env("STRAVA_SUBSCRIPTION_ID", parse.optional_whole)
    # None here means "not set": from_environ puts the instance folder's SQLite file in its place.
    database_url: str = _env("DATABASE_URL", parse.database_url, secret=True)
    redis_url: str | None = _env("REDIS_URL", parse.redis_url, secret=True)
    cron_secret: str | None = _env("CRON_SECRET", parse.secret, secret=True)
    token_encryption_key: str | None = _env("TOKEN_ENCRYPTION_KEY", parse.fernet_keys, secret=True)
    strava_rate_limits: tuple[int, int] = _env("STRAVA_RATE_LIMITS", parse.pair, "200,2000")
    strava_read_rate_limits: tuple[int, int] = _env(
        "STRAVA_READ_RATE_LIMITS", parse.pair, "100,1000"
    )
    # Share of each window that bulk work leaves for real-time fetches.
    reconcile_reserve: float = _env("RECONCILE_RESERVE", parse.fraction, "0.2")
    reconcile_lookback_days: int = _env("RECONCILE_LOOKBACK_DAYS", parse.positive, "7")
    reconcile_min_share: float = _env("RECONCILE_MIN_SHARE", parse.fraction, "0.25")
    verify_history_days: int = _env("VERIFY_HISTORY_DAYS", parse.positive, "30")
    create_fetch_delay_seconds: int = _env("CREATE_FETCH_DELAY_SECONDS", parse.whole, "120")
    eddington_sport_types: frozenset[str] = _env(
        "EDDINGTON_SPORT_TYPES", parse.names, "Ride,GravelRide,MountainBikeRide"
    )
    club_name: str = _env("CLUB_NAME", parse.text, "strava-sync")
    leaderboard_public: bool = _env("LEADERBOARD_PUBLIC", parse.flag, "1")
    admin_athlete_ids: frozenset[int] = _env("ADMIN_ATHLETE_IDS", parse.athlete_ids)
    strava_revoke_endpoint: str = _env(
        "STRAVA_REVOKE_ENDPOINT", parse.revoke_endpoint, "deauthorize"
    )
    public_url: str | None = _env("PUBLIC_URL", parse.base_url)
    connect_requires_invite: bool = _env("CONNECT_REQUIRES_INVITE", parse.flag, "0")
    unknown_fetch_allowance: int = _env("UNKNOWN_FETCH_ALLOWANCE", parse.positive, "20")
    # Inline mode (no REDIS_URL) runs jobs in a thread of the serving process unless this is 0.
    inline_worker: bool = _env("INLINE_WORKER", parse.flag, "1")
    # A deployed process may run jobs inline only when this says so.
    inline_ok: bool = _env("INLINE_OK", parse.flag, "0")
    reconnect_grace_days: int = _env("RECONNECT_GRACE_DAYS", parse.positive, "30")
    event_retention_days: int = _env("EVENT_RETENTION_DAYS", parse.positive, "30")
    reconcile_min_interval_hours: int = _env("RECONCILE_MIN_INTERVAL_HOURS", parse.whole, "12")
    # Not from the environment: how this process came by its settings.
    secret_key_generated: bool = False  # an invented key serves development sessions, never invites
    database_defaulted: bool = False  # DATABASE_URL unset: the instance folder's SQLite file
    deployed: bool = False  # set by the deployed entry points (wsgi.py, api/index.py, the worker)
    dotenv_path: str | None = None  # the `.env` file read, if any
    notes: tuple[str, ...] = ()  # what an operator should hear about the settings (typos in .env)

    def describe_database(self) -> str:
        """Where the data lives, without user or password ('PostgreSQL db on host:5432')."""
        url = urlsplit(self.database_url)
        if url.scheme.startswith("sqlite"):
            return f"SQLite file {self.database_url.partition(':///')[2] or '(in memory)'}"
        return f"PostgreSQL database {url.path.lstrip('/')} on {_host(url, 5432)}"

    def describe_redis(self) -> str:
        """Which Redis the queues use, without password ('Redis db 0 on host:6379')."""
        if not self.redis_url:
            return "no Redis (inline mode: jobs run inside this process)"
        url = urlsplit(self.redis_url)
        return f"Redis database {url.path.lstrip('/') or '0'} on {_host(url, 6379)}"


def _host(url, default_port: int) -> str:
    return f"{url.hostname or 'localhost'}:{url.port or default_port}"


ENV_FIELDS = {f.metadata["env"]: f for f in dataclasses.fields(Settings) if "env" in f.metadata}
ENV_NAMES = tuple(ENV_FIELDS)
FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))


def read(name: str, raw: str | None) -> Any:
    """One variable's value from its text (its default when unset or blank, as `VAR=` in `.env`)."""
    spec = ENV_FIELDS[name]
    return spec.metadata["parse"](name, raw if raw and raw.strip() else spec.metadata["raw"])


def from_environ(
    environ: dict[str, str] | None = None, instance_path: str = "instance"
) -> Settings:
    """The settings from `environ` (the process's environment by default); ConfigError if bad."""
    env = os.environ if environ is None else environ
    values = {spec.name: read(name, env.get(name)) for name, spec in ENV_FIELDS.items()}
    settings = Settings(**values)
    return dataclasses.replace(
        settings,
        secret_key=settings.secret_key or secrets.token_hex(32),
        secret_key_generated=not settings.secret_key,
        database_url=database_url(settings.database_url, instance_path),
        database_defaulted=not settings.database_url,
    )


def database_url(raw: str | None, instance_path: str) -> str:
    """The SQLAlchemy URL for DATABASE_URL's text; unset, the instance folder's SQLite file."""
    url = parse.database_url("DATABASE_URL", raw or "")
    return url or "sqlite:///" + os.path.join(instance_path, "strava_sync.sqlite")


def load(instance_path: str) -> Settings:
    """The settings of a process: `.env` (variables already set win), then the environment."""
    path = read_dotenv()
    notes = typo_notes(path, ENV_NAMES)
    return dataclasses.replace(from_environ(None, instance_path), dotenv_path=path, notes=notes)


def is_setting(key: str) -> bool:
    """Whether `key` names a setting (by its variable or its field), not a Flask config key."""
    return key in ENV_FIELDS or key in FIELD_NAMES


def override(settings: Settings, **values: Any) -> Settings:
    """`settings` with fields replaced by variable or field name (parsed values, as in tests)."""
    changes = {(ENV_FIELDS[k].name if k in ENV_FIELDS else k): v for k, v in values.items()}
    # A value given is a value chosen: neither invented nor defaulted any more.
    if "secret_key" in changes:
        changes.setdefault("secret_key_generated", False)
    if "database_url" in changes:
        changes.setdefault("database_defaulted", False)
    return dataclasses.replace(settings, **changes)
