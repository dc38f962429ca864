"""Connect invites: a signed, expiring, single-use link that lets a visitor connect one rider.

`flask --app app strava invite RIDER_ID` issues one. The token is signed with SECRET_KEY
(itsdangerous) and names a random nonce; the `strava_invite` row keyed by that nonce holds the
rider, the expiry and, once the callback has linked the rider, `used_at`. A forged, unknown,
expired or used token is refused; nothing but an invite links a visitor to an existing rider.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.engine import Connection

import config
import models
from models.schema import strava_invite
from services import Services

SALT = "strava-sync-invite"
CONNECT_PATH = "/strava/connect"
DEFAULT_HOURS = 72
MAX_NAME = 100


class InviteError(ValueError):
    """The invite cannot be used; the message says why, for the visitor."""


class NoSecretKey(RuntimeError):
    """SECRET_KEY was not set explicitly, so invites can be neither signed nor checked."""


@dataclass(frozen=True)
class Invite:
    """A checked invite: the nonce that names its row and the rider it connects."""

    nonce: str
    rider_id: int


def now(svc: Services) -> datetime:
    """The services' clock as a UTC datetime."""
    return datetime.fromtimestamp(svc.clock(), UTC)


def serializer(settings) -> URLSafeTimedSerializer:
    key = settings.get("SECRET_KEY")
    if not key or not config.secret_key_set(settings):
        raise NoSecretKey(
            "SECRET_KEY is not set: set it to a long random value (the same for every web "
            "process) before issuing or accepting invites"
        )
    return URLSafeTimedSerializer(key, salt=SALT)


def public_base(config) -> str:
    """Where riders reach the web app: PUBLIC_URL, else the origin of STRAVA_CALLBACK_URL."""
    if config.get("PUBLIC_URL"):
        return config["PUBLIC_URL"].rstrip("/")
    callback = config.get("STRAVA_CALLBACK_URL")
    if not callback:
        raise InviteError("set PUBLIC_URL (or STRAVA_CALLBACK_URL) so the invite link has a host")
    parts = urlsplit(callback)
    return f"{parts.scheme}://{parts.netloc}"


def issue(svc: Services, rider_id: int, hours: float = DEFAULT_HOURS) -> str:
    """Store a new invite for an existing rider and return its signed token."""
    signer = serializer(svc.config)
    with svc.engine.begin() as conn:
        if models.get_rider(conn, rider_id) is None:
            raise InviteError(f"there is no rider {rider_id}")
        nonce = _store(conn, rider_id, now(svc), hours)
    return signer.dumps({"nonce": nonce, "rider": rider_id})


def issue_new(svc: Services, name: str, hours: float = DEFAULT_HOURS) -> tuple[int, str]:
    """Create a rider named by the admin and an invite that connects them: (rider id, token).

    The way in for a club's first riders when connecting needs an invite.
    """
    signer = serializer(svc.config)
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME:
        raise InviteError(f"a new rider needs a name of 1 to {MAX_NAME} characters")
    with svc.engine.begin() as conn:
        rider_id = models.create_rider(conn, name)
        nonce = _store(conn, rider_id, now(svc), hours)
    return rider_id, signer.dumps({"nonce": nonce, "rider": rider_id})


def _store(conn: Connection, rider_id: int, created: datetime, hours: float) -> str:
    nonce = secrets.token_urlsafe(16)
    conn.execute(
        strava_invite.insert().values(
            id=nonce,
            rider_id=rider_id,
            created_at=created,
            expires_at=created + timedelta(hours=hours),
        )
    )
    return nonce


def connect_url(base: str, token: str) -> str:
    """The link a rider follows to connect with an invite."""
    return f"{base}{CONNECT_PATH}?invite={token}"


def verify(svc: Services, token: str) -> Invite:
    """The invite a token names, if it is genuine, known, unused and unexpired; else InviteError.

    The row, not the signature's timestamp, holds the expiry: each invite has its own lifetime.
    """
    try:
        data = serializer(svc.config).loads(token)
    except BadSignature:
        raise InviteError("this invite link is not valid; ask the club for a new one") from None
    if not isinstance(data, dict) or not isinstance(data.get("nonce"), str):
        raise InviteError("this invite link is not valid; ask the club for a new one")
    with svc.engine.connect() as conn:
        row = conn.execute(sa.select(strava_invite).where(strava_invite.c.id == data["nonce"]))
        row = row.first()
        rider = row and models.get_rider(conn, row.rider_id)
    if row is None or rider is None or row.rider_id != data.get("rider"):
        raise InviteError("this invite is for a rider we do not know; ask the club for a new one")
    if row.used_at is not None:
        raise InviteError("this invite has already been used; ask the club for a new one")
    if row.expires_at <= now(svc):
        raise InviteError("this invite has expired; ask the club for a new one")
    return Invite(row.id, row.rider_id)


def consume(conn: Connection, invite: Invite, now: datetime) -> bool:
    """Mark the invite used, atomically; False when it was used (or expired) meanwhile."""
    table = strava_invite
    result = conn.execute(
        table.update()
        .where(table.c.id == invite.nonce, table.c.used_at.is_(None), table.c.expires_at > now)
        .values(used_at=now)
    )
    return result.rowcount == 1


def other_athlete(conn: Connection, invite: Invite, athlete_id: int) -> bool:
    """Whether the invite's rider is connected (live or awaiting a reconnect) as another athlete.

    Such an invite reconnects that athlete only: linking anyone else would hand them the rider.
    """
    held = models.get_connection(conn, invite.rider_id)
    return held is not None and held.deauthorized_at is None and held.athlete_id != athlete_id
