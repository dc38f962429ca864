"""Everything about OAuth tokens: encryption at rest, and usable access tokens for a rider.

Strava's access tokens last six hours and its refresh tokens rotate: a new refresh token invalidates
the old one at once. So refreshing is serialised per rider across all workers, and the newest pair
is always stored before anyone else may refresh.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

import models
from strava_client import Unauthorized

REFRESH_MARGIN = 3600  # refresh tokens with less than an hour left, as Strava advises


class TokenCipher:
    """Encrypts OAuth tokens with MultiFernet when keys are configured (newest key first)."""

    PREFIX = "fernet:"

    def __init__(self, keys: str | None):
        self._fernet = (
            MultiFernet([Fernet(k.strip()) for k in keys.split(",") if k.strip()]) if keys else None
        )

    def encrypt(self, token: str | None) -> str | None:
        """Encrypt a token for storage (stored as is when no key is configured)."""
        if token is None or self._fernet is None:
            return token
        return self.PREFIX + self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, stored: str | None) -> str | None:
        """Decrypt a stored token; plaintext stored before a key was configured is read as is."""
        if stored is None or not stored.startswith(self.PREFIX):
            return stored
        if self._fernet is None:
            raise RuntimeError("a token is encrypted but TOKEN_ENCRYPTION_KEY is not set")
        try:
            return self._fernet.decrypt(stored[len(self.PREFIX) :].encode()).decode()
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
    stored before the lock is released.
    """
    row = _connected(svc, rider_id)
    if not force_refresh and row.expires_at - svc.clock() > REFRESH_MARGIN:
        return svc.cipher.decrypt(row.access_token)
    with svc.redis.lock(f"strava-sync:refresh:{rider_id}", timeout=60, blocking_timeout=30):
        latest = _connected(svc, rider_id)
        if not force_refresh and latest.expires_at - svc.clock() > REFRESH_MARGIN:
            return svc.cipher.decrypt(latest.access_token)  # another worker just refreshed
        tokens = svc.client.refresh(svc.cipher.decrypt(latest.refresh_token))
        with svc.engine.begin() as conn:
            models.store_tokens(conn, rider_id, svc.cipher.encrypt_pair(tokens))
        return tokens["access_token"]


def _connected(svc, rider_id: int):
    with svc.engine.connect() as conn:
        row = models.get_connection(conn, rider_id)
    if row is None or row.refresh_token is None:
        raise Unauthorized(f"rider {rider_id} has no Strava connection")
    return row
