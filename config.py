"""Every environment variable strava-sync reads, in one place."""

from __future__ import annotations

import os
import secrets

DEFAULT_API_URL = "https://www.strava.com/api/v3"
DEFAULT_OAUTH_URL = "https://www.strava.com/oauth"


class ConfigError(ValueError):
    """An environment variable holds a value we cannot use."""


def _pair(name: str, raw: str) -> tuple[int, int]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{name} must be two positive integers '15min,daily', got {raw!r}")
    return int(parts[0]), int(parts[1])


def _fraction(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number between 0 and 1, got {raw!r}") from None
    if not 0 <= value < 1:
        raise ConfigError(f"{name} must be at least 0 and below 1, got {raw!r}")
    return value


def _positive_int(name: str, raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
    return int(raw)


def _whole(name: str, raw: str, minimum: int) -> int:
    value = raw.strip()
    # isdigit() alone accepts '²', which int() refuses.
    if not (value.isascii() and value.isdigit()) or int(value) < minimum:
        raise ConfigError(f"{name} must be a whole number of at least {minimum}, got {raw!r}")
    return int(value)


def _reliability(get) -> dict:
    """Keys of the fault-handling features: grace, retention and the sweep's spacing."""
    return {
        # A connection whose grant was lost (no proof of revocation) keeps its data this long.
        "RECONNECT_GRACE_DAYS": _whole(
            "RECONNECT_GRACE_DAYS", get("RECONNECT_GRACE_DAYS", "30"), 1
        ),
        # done/ignored events are kept this long; failed ones three times as long.
        "EVENT_RETENTION_DAYS": _whole(
            "EVENT_RETENTION_DAYS", get("EVENT_RETENTION_DAYS", "30"), 1
        ),
        # A full sweep from cron starts at most this often (0: no minimum).
        "RECONCILE_MIN_INTERVAL_HOURS": _whole(
            "RECONCILE_MIN_INTERVAL_HOURS", get("RECONCILE_MIN_INTERVAL_HOURS", "12"), 0
        ),
    }


def database_url(raw: str | None, instance_path: str) -> str:
    """Turn DATABASE_URL (or its absence) into a SQLAlchemy URL using psycopg 3 for PostgreSQL."""
    if not raw:
        return "sqlite:///" + os.path.join(instance_path, "strava_sync.sqlite")
    # Supabase and Heroku hand out postgres:// and postgresql://; SQLAlchemy needs the driver named.
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")
    return value in ("1", "true", "yes", "on")


def from_environ(environ: dict[str, str] | None = None, instance_path: str = "instance") -> dict:
    """Read the environment into the app's config mapping (Flask config keys)."""
    env = os.environ if environ is None else environ
    get = env.get
    return {
        "SECRET_KEY": get("SECRET_KEY") or secrets.token_hex(32),
        "STRAVA_CLIENT_ID": get("STRAVA_CLIENT_ID"),
        "STRAVA_CLIENT_SECRET": get("STRAVA_CLIENT_SECRET"),
        "STRAVA_VERIFY_TOKEN": get("STRAVA_VERIFY_TOKEN"),
        "STRAVA_API_URL": (get("STRAVA_API_URL") or DEFAULT_API_URL).rstrip("/"),
        "STRAVA_OAUTH_URL": (get("STRAVA_OAUTH_URL") or DEFAULT_OAUTH_URL).rstrip("/"),
        "STRAVA_CALLBACK_URL": get("STRAVA_CALLBACK_URL"),
        "STRAVA_SUBSCRIPTION_ID": get("STRAVA_SUBSCRIPTION_ID"),
        "DATABASE_URL": database_url(get("DATABASE_URL"), instance_path),
        "REDIS_URL": get("REDIS_URL") or None,
        "CRON_SECRET": get("CRON_SECRET") or None,
        "TOKEN_ENCRYPTION_KEY": get("TOKEN_ENCRYPTION_KEY") or None,
        "STRAVA_RATE_LIMITS": _pair("STRAVA_RATE_LIMITS", get("STRAVA_RATE_LIMITS", "200,2000")),
        "STRAVA_READ_RATE_LIMITS": _pair(
            "STRAVA_READ_RATE_LIMITS", get("STRAVA_READ_RATE_LIMITS", "100,1000")
        ),
        "RECONCILE_RESERVE": _fraction("RECONCILE_RESERVE", get("RECONCILE_RESERVE", "0.2")),
        "RECONCILE_LOOKBACK_DAYS": _positive_int(
            "RECONCILE_LOOKBACK_DAYS", get("RECONCILE_LOOKBACK_DAYS", "7")
        ),
        # Inline mode (no REDIS_URL) runs jobs in a thread of the serving process unless this is 0.
        "INLINE_WORKER": _flag("INLINE_WORKER", get("INLINE_WORKER", "1")),
        # The time source (epoch seconds); tests and the simulator pass their own.
        "CLOCK": None,
        "EDDINGTON_SPORT_TYPES": frozenset(
            t.strip()
            for t in get("EDDINGTON_SPORT_TYPES", "Ride,GravelRide,MountainBikeRide").split(",")
            if t.strip()
        ),
        **_reliability(get),
    }
