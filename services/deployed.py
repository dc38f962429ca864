"""What a deployed process (gunicorn, Vercel, an RQ worker) refuses to start with.

A laptop may run on an invented SECRET_KEY, a SQLite file and jobs inside the process; a deployed
process does so only when a setting says so, never because a variable was mistyped or forgotten.
"""

from __future__ import annotations

from config import Settings
from services.diagnose import StartupError

MAKE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'  # noqa: S105
MIN_SECRET_BYTES = 32
# Values found in tutorials and templates: anyone can sign a cookie with them.
WELL_KNOWN = frozenset(
    {"changeme", "change-me", "change_me", "secret", "secret-key", "secret_key", "secretkey",
     "dev", "development", "test", "testing", "password", "default", "flask", "key",
     "your-secret-key", "supersecret", "super-secret-key", "not-a-secret", "replace-me"}
)  # fmt: skip


def secret_key_problem(settings: Settings) -> str | None:
    """Why SECRET_KEY cannot sign a deployed process's cookies and invites, or None."""
    fix = f"make one with {MAKE_SECRET} and set it for every process"
    if settings.secret_key_generated or not settings.secret_key:
        return f"SECRET_KEY is not set: {fix}"
    key = settings.secret_key.strip()
    if key.lower() in WELL_KNOWN or len(set(key)) < 8:
        return f"SECRET_KEY is a well-known or guessable value: {fix}"
    if len(key.encode()) < MIN_SECRET_BYTES:
        return f"SECRET_KEY is shorter than {MIN_SECRET_BYTES} bytes: {fix}"
    return None


def _fallbacks(settings: Settings) -> list[str]:
    """The development fallbacks a deployed process must have been told to use."""
    problems = []
    if settings.database_defaulted:
        problems.append(
            "DATABASE_URL is not set: a deployed process does not fall back to a SQLite file; "
            "set DATABASE_URL (postgresql://... or an explicit sqlite:///path)"
        )
    if not settings.redis_url and not settings.inline_ok:
        problems.append(
            "REDIS_URL is not set: a deployed process does not run jobs inside itself; set "
            "REDIS_URL and start workers, or set INLINE_OK=1 to accept inline mode"
        )
    return problems


def _pages(settings: Settings) -> list[str]:
    """The settings without which every rider's connect fails."""
    missing = [
        name
        for name, value in (
            ("STRAVA_CLIENT_ID", settings.strava_client_id),
            ("STRAVA_CLIENT_SECRET", settings.strava_client_secret),
        )
        if not value
    ]
    where = []
    if not (settings.public_url or settings.strava_callback_url):
        # The OAuth redirect_uri and invite links are built from it, never from a Host header.
        where = ["PUBLIC_URL is not set: riders cannot be sent back here from Strava; set it to "
                 "the site's address, like https://club.example.org"]  # fmt: skip
    if not missing:
        return where
    verb = "is" if len(missing) == 1 else "are"
    return [
        f"{' and '.join(missing)} {verb} not set: riders cannot connect with Strava without them",
        *where,
    ]


def problems(settings: Settings, web: bool) -> list[str]:
    """Every reason a deployed process (a web one when `web`) must not start, one sentence each."""
    found = [p for p in (secret_key_problem(settings),) if p] + _fallbacks(settings)
    return found + (_pages(settings) if web else [])


def refuse_unfit(settings: Settings, web: bool) -> None:
    """Raise StartupError with the first reason a deployed process must not start."""
    found = problems(settings, web)
    if found:
        raise StartupError(found[0])
