"""One parser per kind of value: each takes the variable's name and the raw text.

Every parser returns a value or raises ConfigError with one sentence naming the variable; nothing
else escapes. Numbers are ASCII digits only: `str.isdigit` and `int()` accept '²' and '٣'.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MAKE_FERNET_KEY = (
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "postgresql+psycopg")
REDIS_SCHEMES = ("redis", "rediss", "unix")
_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]*\.?[0-9]+")
_NAME = re.compile(r"[A-Za-z]+")


class ConfigError(ValueError):
    """A value (from the environment, a form or a command line) that we cannot use."""


def whole(name: str, raw: str, minimum: int = 0) -> int:
    """A whole number of at least `minimum`, written in ASCII digits."""
    value = raw.strip()
    if not _WHOLE.fullmatch(value) or int(value) < minimum:
        raise ConfigError(f"{name} must be a whole number of at least {minimum}, got {raw!r}")
    return int(value)


def positive(name: str, raw: str) -> int:
    """A whole number of at least 1."""
    return whole(name, raw, 1)


def optional_whole(name: str, raw: str) -> str | None:
    """An id made of ASCII digits, kept as text (None when empty)."""
    return str(whole(name, raw)) if raw.strip() else None


def pair(name: str, raw: str) -> tuple[int, int]:
    """Two positive whole numbers separated by a comma ('15min,daily')."""
    parts = raw.split(",")
    if len(parts) != 2 or not all(_WHOLE.fullmatch(p.strip()) for p in parts):
        raise ConfigError(f"{name} must be two positive integers '15min,daily', got {raw!r}")
    first, second = (int(p) for p in parts)
    if not (first and second):
        raise ConfigError(f"{name} must be two positive integers '15min,daily', got {raw!r}")
    return first, second


def fraction(name: str, raw: str) -> float:
    """A decimal at least 0 and below 1."""
    value = raw.strip()
    if value.endswith("%"):
        raise ConfigError(
            f"{name} must be a number between 0 and 1 (write 0.2 for 20%), got {raw!r}"
        )
    if not _DECIMAL.fullmatch(value) or not float(value) < 1:
        raise ConfigError(f"{name} must be a number at least 0 and below 1, got {raw!r}")
    return float(value)


def flag(name: str, raw: str) -> bool:
    """1/0 (or true/false, yes/no, on/off)."""
    value = raw.strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")
    return value in ("1", "true", "yes", "on")


def athlete_ids(name: str, raw: str) -> frozenset[int]:
    """Strava athlete ids separated by commas."""
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not all(_WHOLE.fullmatch(p) for p in parts):
        raise ConfigError(f"{name} must be Strava athlete ids separated by commas, got {raw!r}")
    return frozenset(int(p) for p in parts)


def names(name: str, raw: str) -> frozenset[str]:
    """Words (Strava sport types) separated by commas."""
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not all(_NAME.fullmatch(p) for p in parts):
        raise ConfigError(f"{name} must be Strava sport types separated by commas, got {raw!r}")
    return frozenset(parts)


def text(name: str, raw: str) -> str | None:
    """Free text, None when empty."""
    return raw.strip() or None


def secret(name: str, raw: str) -> str | None:
    """A secret, taken as written (None when empty); never echoed in an error."""
    return raw or None


def revoke_endpoint(name: str, raw: str) -> str:
    """Which Strava endpoint Disconnect calls."""
    value = raw.strip().lower()
    if value not in ("deauthorize", "revoke"):
        raise ConfigError(f"{name} must be one of deauthorize, revoke, got {raw!r}")
    return value


def _split(name: str, raw: str):
    try:
        return urlsplit(raw)
    except ValueError:
        raise ConfigError(f"{name} is not a URL we can read, got {raw!r}") from None


def http_url(name: str, raw: str) -> str | None:
    """An http:// or https:// URL without its trailing slash (None when empty)."""
    value = raw.strip().rstrip("/")
    if value and (
        _split(name, value).scheme not in ("http", "https") or not urlsplit(value).netloc
    ):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value or None


def base_url(name: str, raw: str) -> str | None:
    """A site's address: http(s)://host[:port] and nothing after it (None when empty)."""
    value = http_url(name, raw)
    if value and (urlsplit(value).path or urlsplit(value).query or urlsplit(value).fragment):
        raise ConfigError(
            f"{name} must be the site's address with no path, like https://club.example.org, "
            f"got {value!r}"
        )
    return value


def _scheme(raw: str) -> str:
    return raw.partition("://")[0] if "://" in raw else ""


def database_url(name: str, raw: str) -> str | None:
    """A SQLAlchemy URL using psycopg 3 for PostgreSQL (None when empty); never echoed."""
    value = raw.strip()
    if not value:
        return None
    scheme = _scheme(value)
    if scheme not in DATABASE_SCHEMES:
        # Name only the scheme: the rest of the URL may hold a password.
        raise ConfigError(
            f"{name} starts with {scheme + '://' if scheme else 'no scheme'}: use "
            "postgresql://user:password@host:5432/dbname (or sqlite:///path)"
        )
    # Supabase and Heroku hand out postgres:// and postgresql://; SQLAlchemy needs the driver named.
    if scheme in ("postgres", "postgresql"):
        value = "postgresql+psycopg://" + value.partition("://")[2]
    try:
        make_url(value)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{name} is not a URL we can read: check its host and port") from None
    return value


def redis_url(name: str, raw: str) -> str | None:
    """A Redis URL (None when empty); only its scheme is ever echoed."""
    value = raw.strip()
    if not value:
        return None
    scheme = _scheme(value)
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"{name} starts with {scheme + '://' if scheme else 'no scheme'}: "
            "use redis://host:6379/0 (or rediss:// for TLS)"
        )
    try:
        urlsplit(value).port  # noqa: B018 (a bad port raises here rather than at first use)
    except ValueError:
        raise ConfigError(f"{name} is not a URL we can read: check its host and port") from None
    return value


def fernet_keys(name: str, raw: str) -> str | None:
    """Comma-separated Fernet keys, newest first (None when empty); never echoed."""
    if not raw.strip():
        return None
    for part in (p.strip() for p in raw.split(",")):
        if not _is_fernet_key(part):
            raise ConfigError(f"{name} is not a Fernet key: make one with {MAKE_FERNET_KEY}")
    return raw


def _is_fernet_key(text: str) -> bool:
    """Whether `text` is 32 bytes in URL-safe base64, as `Fernet(key)` requires.

    Checked by hand so that start-up does not load cryptography (a serverless cold start); the
    tests hold this check to Fernet's own on the same inputs.
    """
    try:
        return len(base64.urlsafe_b64decode(text.encode("ascii"))) == 32
    except (UnicodeEncodeError, binascii.Error):
        return False
