"""Strava's wire format: error bodies, timestamps, time zone names and request parsing."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from urllib.parse import urlencode

import flask

_ZONES = {  # UTC offset in minutes -> a representative zone, as Strava names it
    0: "UTC",
    60: "Europe/Paris",
    120: "Europe/Athens",
    330: "Asia/Kolkata",
    480: "Asia/Shanghai",
    540: "Asia/Tokyo",
    600: "Australia/Sydney",
    -300: "America/New_York",
    -360: "America/Chicago",
    -480: "America/Los_Angeles",
}


def error(status: int, message: str, resource: str, field_name: str, code: str):
    """A Strava error body with one entry in `errors`, and its status."""
    errors = [{"resource": resource, "field": field_name, "code": code}]
    return flask.jsonify(message=message, errors=errors), status


def bad_request(resource: str, field_name: str, code: str = "invalid"):
    """Strava's 400 for one bad field."""
    return error(400, "Bad Request", resource, field_name, code)


def bad_client():
    """Strava's answer to a wrong client_id or client_secret."""
    return error(401, "Bad Request", "Application", "client_id", "invalid")


def unauthorized():
    """Strava's answer to a missing, unknown or expired access token."""
    return error(401, "Authorization Error", "Athlete", "access_token", "invalid")


def already_exists():
    """Strava's answer to a second push subscription."""
    return bad_request("PushSubscription", "", "already exists")


def same_secret(given: str, expected: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(request) -> str | None:
    """The token from `Authorization: Bearer`; Strava refuses tokens in the query string."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def int_or(value: str, default):
    """The value as an int, or the default when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def int_arg(args, name: str, default: int | None = None, *, minimum: int | None = None):
    """An integer query argument; raises ValueError(name) when it is not one or too small."""
    raw = args.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(name) from None
    if minimum is not None and value < minimum:
        raise ValueError(name)
    return value


def parse_scope(scope: str) -> tuple[str, ...]:
    """A scope string (comma or space separated) as a tuple, duplicates dropped, order kept."""
    return tuple(dict.fromkeys(s.strip() for s in scope.replace(" ", ",").split(",") if s.strip()))


def with_query(url: str, params: dict) -> str:
    """The URL with the parameters added to its query string."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


def utc(moment: datetime) -> datetime:
    """The moment in UTC to the second; a naive moment is taken to be UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    """A timestamp as Strava writes it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def timezone_name(offset_seconds: float) -> str:
    """Strava's `timezone` for a UTC offset, e.g. "(GMT+01:00) Europe/Paris"."""
    minutes = round(offset_seconds / 60)
    hours, rest = divmod(abs(minutes), 60)
    sign = "+" if minutes >= 0 else "-"
    # Etc/GMT zone names invert the sign (POSIX): UTC+1 is Etc/GMT-1.
    fallback = f"Etc/GMT{-minutes // 60:+d}" if rest == 0 else "Etc/Unknown"
    return f"(GMT{sign}{hours:02d}:{rest:02d}) {_ZONES.get(minutes, fallback)}"
