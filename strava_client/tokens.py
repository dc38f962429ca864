"""Everything about OAuth tokens: encryption at rest, and usable access tokens for a rider.

Strava's access tokens last six hours and its refresh tokens rotate: a new refresh token invalidates
the old one at once. So refreshing is serialised per rider across all workers, and the newest pair
is always stored before anyone else may refresh.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

import models
from strava_client import ApplicationInactive, StravaError, Unauthorized

log = logging.getLogger(__name__)

REFRESH_MARGIN = 3600  # refresh tokens with less than an hour left, as Strava advises
PROBE_MARGIN = 60  # a stored access token this close to expiry could lapse mid-probe: no proof
STASH_TTL = 6 * 3600  # a new pair we could not store is kept in Redis as long as it lives
CREDENTIALS_REFUSED = "strava_credentials_refused_at"  # a setting `strava status` shows


class ReconnectNeeded(StravaError):
    """Strava refused the rider's refresh token: they must reconnect (no proof of revocation)."""


class CredentialsRefused(StravaError):
    """Strava refused our application (client id or secret, or inactive): a configuration error."""


class TokenCipher:
    """Encrypts OAuth tokens with MultiFernet when keys are configured (newest key first)."""

    PREFIX = "fernet:"

    def __init__(self, keys: str | None):
        self._keys = [k.strip() for k in (keys or "").split(",") if k.strip()]
        self._multi = None

    def _fernet(self):
        """The MultiFernet, made at first use: cryptography loads then, not at a cold start."""
        if self._multi is None:
            from cryptography.fernet import Fernet, MultiFernet

            self._multi = MultiFernet([Fernet(key) for key in self._keys])
        return self._multi

    def encrypt(self, token: str | None) -> str | None:
        """Encrypt a token for storage (stored as is when no key is configured)."""
        if token is None or not self._keys:
            return token
        return self.PREFIX + self._fernet().encrypt(token.encode()).decode()

    def decrypt(self, stored: str | None) -> str | None:
        """Decrypt a stored token; plaintext stored before a key was configured is read as is."""
        if stored is None or not stored.startswith(self.PREFIX):
            return stored
        if not self._keys:
            raise RuntimeError("a token is encrypted but TOKEN_ENCRYPTION_KEY is not set")
        fernet = self._fernet()
        from cryptography.fernet import InvalidToken  # loaded already, with the keys

        try:
            return fernet.decrypt(stored[len(self.PREFIX) :].encode()).decode()
        except InvalidToken:
            raise RuntimeError(
                "a token cannot be decrypted with any TOKEN_ENCRYPTION_KEY"
            ) from None

    def encrypt_pair(self, tokens: dict) -> dict:
        """Strava's token answer as the encrypted columns we store."""
        return {
            "access_token": self.encrypt(tokens["access_token"]),
            "refresh_token": self.encrypt(tokens["refresh_token"]),
            "expires_at": int(tokens["expires_at"]),
        }


def access_token(svc, rider_id: int, *, force_refresh: bool = False) -> str:
    """A usable access token for the rider (`svc`: a services.Services), refreshed when due.

    One refresh per rider at a time, across all workers, under a Redis lock; the newest pair is
    stored before the lock is released. Raises ReconnectNeeded when Strava refuses the refresh
    token, CredentialsRefused when it refuses our application.
    """
    row = _connected(svc, rider_id)
    if not force_refresh and row.expires_at - svc.clock() > REFRESH_MARGIN:
        return svc.cipher.decrypt(row.access_token)
    with svc.redis.lock(f"strava-sync:refresh:{rider_id}", timeout=60, blocking_timeout=30):
        latest = _connected(svc, rider_id)
        if not force_refresh and latest.expires_at - svc.clock() > REFRESH_MARGIN:
            return svc.cipher.decrypt(latest.access_token)  # another worker just refreshed
        try:
            tokens = svc.client.refresh(svc.cipher.decrypt(latest.refresh_token))
        except (Unauthorized, ApplicationInactive) as exc:
            _refresh_refused(svc, rider_id, exc)
        _store_pair(svc, rider_id, tokens)
        return tokens["access_token"]


def _store_pair(svc, rider_id: int, tokens: dict) -> None:
    """Store a pair Strava just issued; if the database fails, keep it in Redis for the next try.

    Strava has already invalidated the old refresh token: losing this pair loses the grant.
    """
    encrypted = svc.cipher.encrypt_pair(tokens)
    try:
        with svc.engine.begin() as conn:
            models.store_tokens(conn, rider_id, encrypted)
    except SQLAlchemyError as exc:
        log.error(
            "rider %s: Strava issued a new token pair but storing it failed (%s); "
            "it is kept in Redis until the database answers",
            rider_id,
            type(exc).__name__,
        )
        svc.redis.hset(_stash(rider_id), mapping=encrypted)
        svc.redis.expire(_stash(rider_id), STASH_TTL)
        raise


def _stash(rider_id: int) -> str:
    return f"strava-sync:unstored-pair:{rider_id}"


def _restore_stashed(svc, rider_id: int) -> None:
    """Store a pair that was issued while the database was down, if one waits in Redis."""
    stashed = svc.redis.hgetall(_stash(rider_id))
    if not stashed:
        return
    pair = {k.decode(): v.decode() for k, v in stashed.items()}
    pair["expires_at"] = int(pair["expires_at"])
    with svc.engine.begin() as conn:
        models.store_tokens(conn, rider_id, pair)
    svc.redis.delete(_stash(rider_id))
    log.info("rider %s: the token pair kept in Redis is stored now", rider_id)


def names_application(exc: StravaError) -> bool:
    """Whether Strava's refusal is about our application rather than the rider's grant."""
    if isinstance(exc, ApplicationInactive):
        return True
    return any(isinstance(e, dict) and e.get("resource") == "Application" for e in exc.errors)


def application_refused(svc, exc: StravaError) -> CredentialsRefused:
    """Log and flag (for `strava status` and /admin) Strava's refusal of our application."""
    log.error(
        "Strava refused this application's credentials (%s): check STRAVA_CLIENT_ID and "
        "STRAVA_CLIENT_SECRET",
        exc,
    )
    with svc.engine.begin() as conn:
        at = svc.now().isoformat()
        models.set_setting(conn, CREDENTIALS_REFUSED, at)
    return CredentialsRefused(
        f"Strava refused this application ({exc}); check STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET",
        exc.status,
        exc.errors,
    )


def _refresh_refused(svc, rider_id: int, exc: StravaError):
    """A refused refresh is never proof of revocation: flag the app or the rider, then raise."""
    if names_application(exc):
        raise application_refused(svc, exc) from None
    with svc.engine.begin() as conn:
        models.mark_needs_reconnect(conn, rider_id, now=svc.now())
    log.warning("rider %s: Strava refused the refresh token; the rider must reconnect", rider_id)
    raise ReconnectNeeded(
        f"rider {rider_id}: Strava refused the refresh token; the rider must reconnect",
        exc.status,
        exc.errors,
    ) from None


def probe_token(svc, rider_id: int) -> str:
    """The token to test a revocation with: the stored one while it has not expired.

    Strava refusing an unexpired access token is proof of revocation; a refused refresh is not.
    """
    row = _connected(svc, rider_id, usable=False)
    if row.expires_at - svc.clock() > PROBE_MARGIN:
        return svc.cipher.decrypt(row.access_token)
    return access_token(svc, rider_id, force_refresh=True)


def revoked(svc, rider_id: int) -> bool:
    """Whether Strava proves the rider revoked us: it refuses an unexpired access token.

    Raises ReconnectNeeded when no unexpired token can be had (no proof either way).
    """
    token = probe_token(svc, rider_id)
    try:
        svc.client.list_activities(token, per_page=1, lane="realtime")
    except Unauthorized as exc:
        if names_application(exc):
            _refresh_refused(svc, rider_id, exc)
        return True
    return False


def _connected(svc, rider_id: int, *, usable: bool = True):
    _restore_stashed(svc, rider_id)
    with svc.engine.connect() as conn:
        row = models.get_connection(conn, rider_id)
    if row is None or row.refresh_token is None:
        raise Unauthorized(f"rider {rider_id} has no Strava connection")
    if usable and row.needs_reconnect_since is not None:
        raise ReconnectNeeded(f"rider {rider_id} must reconnect to Strava (the grant was lost)")
    return row
