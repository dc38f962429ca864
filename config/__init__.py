"""Every environment variable strava-sync reads, in one place."""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from dotenv import find_dotenv, load_dotenv

DEFAULT_API_URL = "https://www.strava.com/api/v3"
DEFAULT_OAUTH_URL = "https://www.strava.com/oauth"
MAKE_KEY = (
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "postgresql+psycopg")
REDIS_SCHEMES = ("redis", "rediss", "unix")


class ConfigError(ValueError):
    """An environment variable holds a value we cannot use."""


def _pair(name: str, raw: str) -> tuple[int, int]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{name} must be two positive integers '15min,daily', got {raw!r}")
    return int(parts[0]), int(parts[1])


def _fraction(name: str, raw: str) -> float:
    if raw.strip().endswith("%"):
        raise ConfigError(
            f"{name} must be a number between 0 and 1 (write 0.2 for 20%), got {raw!r}"
        )
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


def _seconds(name: str, raw: str) -> int:
    if not raw.strip().isdigit():
        raise ConfigError(f"{name} must be a whole number of seconds (0 or more), got {raw!r}")
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
    scheme = raw.partition("://")[0] if "://" in raw else ""
    if scheme not in DATABASE_SCHEMES:
        # Name only the scheme: the rest of the URL may hold a password.
        raise ConfigError(
            f"DATABASE_URL starts with {scheme + '://' if scheme else 'no scheme'}: use "
            "postgresql://user:password@host:5432/dbname (or sqlite:///path)"
        )
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


def _athlete_ids(name: str, raw: str) -> frozenset[int]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"{name} must be Strava athlete ids separated by commas, got {raw!r}")
    return frozenset(int(p) for p in parts)


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _pages(get) -> dict:
    """The web pages' settings (see pages.py and admin.py)."""
    return {
        "CLUB_NAME": (get("CLUB_NAME") or "strava-sync").strip(),
        "LEADERBOARD_PUBLIC": _flag("LEADERBOARD_PUBLIC", get("LEADERBOARD_PUBLIC", "1")),
        "ADMIN_ATHLETE_IDS": _athlete_ids("ADMIN_ATHLETE_IDS", get("ADMIN_ATHLETE_IDS", "")),
        # How "Disconnect" revokes our access: /oauth/deauthorize today, /oauth/revoke from 2027.
        "STRAVA_REVOKE_ENDPOINT": _choice(
            "STRAVA_REVOKE_ENDPOINT",
            get("STRAVA_REVOKE_ENDPOINT", "deauthorize"),
            ("deauthorize", "revoke"),
        ),
        # The OAuth callback is a top-level GET from Strava: Lax still sends the session cookie.
        "SESSION_COOKIE_SAMESITE": "Lax",
    }


def secret_key_set(settings) -> bool:
    """Whether SECRET_KEY was chosen by the operator (an invented one differs per process)."""
    return settings["SECRET_KEY"] != settings.get("GENERATED_SECRET_KEY")


def read_dotenv() -> None:
    """Read `.env` from the working folder or above, as `flask` does; variables already set win."""
    load_dotenv(find_dotenv(usecwd=True))


def from_environ(environ: dict[str, str] | None = None, instance_path: str = "instance") -> dict:
    """Read the environment into the app's config mapping (Flask config keys)."""
    env = os.environ if environ is None else environ
    get = env.get
    generated_key = secrets.token_hex(32)
    return {
        "SECRET_KEY": get("SECRET_KEY") or generated_key,
        "STRAVA_CLIENT_ID": _digits("STRAVA_CLIENT_ID", get("STRAVA_CLIENT_ID")),
        "STRAVA_CLIENT_SECRET": get("STRAVA_CLIENT_SECRET"),
        "STRAVA_VERIFY_TOKEN": get("STRAVA_VERIFY_TOKEN"),
        "STRAVA_API_URL": _http_url("STRAVA_API_URL", get("STRAVA_API_URL"), DEFAULT_API_URL),
        "STRAVA_OAUTH_URL": _http_url(
            "STRAVA_OAUTH_URL", get("STRAVA_OAUTH_URL"), DEFAULT_OAUTH_URL
        ),
        "STRAVA_CALLBACK_URL": _http_url("STRAVA_CALLBACK_URL", get("STRAVA_CALLBACK_URL")),
        "STRAVA_SUBSCRIPTION_ID": _digits("STRAVA_SUBSCRIPTION_ID", get("STRAVA_SUBSCRIPTION_ID")),
        "DATABASE_URL": database_url(get("DATABASE_URL"), instance_path),
        "REDIS_URL": _redis_url(get("REDIS_URL")),
        "CRON_SECRET": get("CRON_SECRET") or None,
        "TOKEN_ENCRYPTION_KEY": _fernet_keys(get("TOKEN_ENCRYPTION_KEY")),
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
        # A deployed process (gunicorn, Vercel) may run inline only when this says so.
        "INLINE_OK": _flag("INLINE_OK", get("INLINE_OK", "0")),
        # Set by the deployed entry points (wsgi.py, api/index.py), not by the environment.
        "DEPLOYED": False,
        # The time source (epoch seconds); tests and the simulator pass their own.
        "CLOCK": None,
        # Performance and scale (#15): the sweep's daily share, history checks, the create delay.
        "RECONCILE_MIN_SHARE": _fraction("RECONCILE_MIN_SHARE", get("RECONCILE_MIN_SHARE", "0.25")),
        "VERIFY_HISTORY_DAYS": _positive_int(
            "VERIFY_HISTORY_DAYS", get("VERIFY_HISTORY_DAYS", "30")
        ),
        "CREATE_FETCH_DELAY_SECONDS": _seconds(
            "CREATE_FETCH_DELAY_SECONDS", get("CREATE_FETCH_DELAY_SECONDS", "120")
        ),
        "EDDINGTON_SPORT_TYPES": frozenset(
            t.strip()
            for t in get("EDDINGTON_SPORT_TYPES", "Ride,GravelRide,MountainBikeRide").split(",")
            if t.strip()
        ),
        **_pages(get),
        # Trust (invites). An invented SECRET_KEY serves development sessions, never invites.
        "GENERATED_SECRET_KEY": None if get("SECRET_KEY") else generated_key,
        "PUBLIC_URL": (get("PUBLIC_URL") or "").rstrip("/") or None,
        "CONNECT_REQUIRES_INVITE": _flag(
            "CONNECT_REQUIRES_INVITE", get("CONNECT_REQUIRES_INVITE", "0")
        ),
        "UNKNOWN_FETCH_ALLOWANCE": _positive_int(
            "UNKNOWN_FETCH_ALLOWANCE", get("UNKNOWN_FETCH_ALLOWANCE", "20")
        ),
        **_reliability(get),
    }


def _fernet_keys(raw: str | None) -> str | None:
    """TOKEN_ENCRYPTION_KEY: comma-separated Fernet keys, newest first (never echoed)."""
    if not raw:
        return None
    for part in (p.strip() for p in raw.split(",")):
        try:
            Fernet(part)
        except (ValueError, TypeError):
            raise ConfigError(
                f"TOKEN_ENCRYPTION_KEY is not a Fernet key: make one with {MAKE_KEY}"
            ) from None
    return raw


def _redis_url(raw: str | None) -> str | None:
    if not raw:
        return None
    scheme = urlsplit(raw).scheme
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"REDIS_URL starts with {scheme + '://' if scheme else 'no scheme'}: "
            "use redis://host:6379/0 (or rediss:// for TLS)"
        )
    return raw


def _http_url(name: str, raw: str | None, default: str | None = None) -> str | None:
    value = (raw or default or "").rstrip("/") or None
    if value and urlsplit(value).scheme not in ("http", "https"):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value


def _digits(name: str, raw: str | None) -> str | None:
    if raw and not raw.strip().isdigit():
        raise ConfigError(f"{name} must be a number, got {raw!r}")
    return raw.strip() if raw else None
