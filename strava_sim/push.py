"""Webhook push: delivering the outbox to the subscription's callback, and validating callbacks."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

CALLBACK_TIMEOUT = 2
DELIVERY_ATTEMPTS = 3
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class PushDelivery:
    """The simulator's event delivery; mixed into StravaSim over its World state."""

    def deliver_events(self) -> dict:
        """POST every outbox event to the subscription's callback, applying the faults."""
        counts = dict.fromkeys(
            ("sent", "delivered", "dropped", "duplicated", "failed", "attempts"), 0
        )
        with self._lock:
            if self.subscription is None:
                return counts
            url = self.subscription["callback_url"]
            require_loopback(url)
            batch = self._plan_delivery(counts, self.subscription["id"])
        # Sent without the lock: the receiver may call this simulator while handling an event.
        with requests.Session() as session:
            for payload in batch:
                delivered, attempts = post_event(session, url, payload)
                counts["sent"] += 1
                counts["attempts"] += attempts
                counts["delivered" if delivered else "failed"] += 1
        return counts

    def _plan_delivery(self, counts: dict, subscription_id: int) -> list[dict]:
        batch, self.outbox = self.outbox, []
        planned, repeats = [], []
        for event in batch:
            if self.faults.drop_rate and self._rng.random() < self.faults.drop_rate:
                counts["dropped"] += 1
                continue
            payload = dict(event)
            if payload.get("subscription_id") is None:
                payload["subscription_id"] = subscription_id
            planned.append(payload)
            if self.faults.duplicate_rate and self._rng.random() < self.faults.duplicate_rate:
                counts["duplicated"] += 1
                repeats.append(dict(payload))
        planned += repeats  # a repeat comes later, as a retry would
        if self.faults.shuffle:
            self._rng.shuffle(planned)
        return planned


def require_loopback(url: str) -> None:
    """Refuse any URL that is not on this machine: the simulator never calls out."""
    if urlsplit(url).hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"the simulator only calls loopback addresses, not {url!r}")


def callback_echoes(url: str, challenge: str, verify_token: str) -> bool:
    """Strava's validation GET: 200, JSON, the challenge echoed, within two seconds."""
    try:
        require_loopback(url)
        params = {
            "hub.mode": "subscribe",
            "hub.challenge": challenge,
            "hub.verify_token": verify_token,
        }
        response = requests.get(url, params=params, timeout=CALLBACK_TIMEOUT)
        body = response.json()
    except (ValueError, requests.RequestException):
        return False
    return (
        response.status_code == 200
        and "application/json" in response.headers.get("Content-Type", "")
        and isinstance(body, dict)
        and body.get("hub.challenge") == challenge
    )


def post_event(session: requests.Session, url: str, payload: dict) -> tuple[bool, int]:
    """One event, retried like Strava: anything but a 200 within 2 s, up to three attempts."""
    for attempt in range(1, DELIVERY_ATTEMPTS + 1):
        try:
            with session.post(url, json=payload, timeout=CALLBACK_TIMEOUT) as response:
                if response.status_code == 200:
                    return True, attempt
        except requests.RequestException:
            pass
    return False, DELIVERY_ATTEMPTS
