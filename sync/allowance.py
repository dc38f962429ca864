"""The per-athlete allowance for event-driven fetches of activities we do not hold.

Events are not signed: anyone can post `create` events with made-up ids for a connected athlete.
Each such fetch spends a read, so each athlete gets UNKNOWN_FETCH_ALLOWANCE of them per UTC day
(404 retries included). Beyond it the activity waits for the athlete's catch-up: one list request
of their recent activities (up to 200), at most once per CATCH_UP_EVERY seconds and one at a time
per athlete, that stores what it finds and closes the waiting events. Made-up ids never appear.
Counters live in Redis, so every worker shares them; the day comes from the injected clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services import Services

CATCH_UP_EVERY = 3600  # seconds between one athlete's catch-up lists: at most 24 reads a day
FLAG_TTL = 2 * 86400  # a queued catch-up may wait for tomorrow's rate budget
PREFIX = "strava-sync:allowance"


def _day(svc: Services) -> str:
    return svc.now().strftime("%Y-%m-%d")


def _key(kind: str, athlete_id: int) -> str:
    return f"{PREFIX}:{kind}:{athlete_id}"


def take(svc: Services, athlete_id: int) -> bool:
    """Spend one of today's fetches of an activity we do not hold; False when none is left."""
    key = f"{_key('used', athlete_id)}:{_day(svc)}"
    pipe = svc.redis.pipeline(transaction=False)  # one trip; the pair need not be atomic
    pipe.incr(key)
    pipe.expire(key, 2 * 86400)
    used, _ = pipe.execute()
    return used <= svc.settings.unknown_fetch_allowance


def spent(svc: Services, athlete_id: int) -> bool:
    """Whether the athlete's fetches for today are all spent (a create then waits at once)."""
    return used_today(svc, athlete_id) >= svc.settings.unknown_fetch_allowance


def used_today(svc: Services, athlete_id: int) -> int:
    """How many of today's fetches the athlete's events have spent."""
    return int(svc.redis.get(f"{_key('used', athlete_id)}:{_day(svc)}") or 0)


def wait_for_catch_up(svc: Services, athlete_id: int, activity_id: int) -> bool:
    """Put an activity on the athlete's catch-up list; True when a catch-up must be queued."""
    svc.redis.sadd(_key("waiting", athlete_id), activity_id)
    return bool(svc.redis.set(_key("queued", athlete_id), 1, nx=True, ex=FLAG_TTL))


def catch_up_time(svc: Services, athlete_id: int) -> datetime | None:
    """When the athlete's next catch-up may run: None for now, else a UTC datetime."""
    last = svc.redis.get(_key("last", athlete_id))
    due = float(last) + CATCH_UP_EVERY if last else 0.0
    return None if due <= svc.clock() else datetime.fromtimestamp(due, UTC)


def start_catch_up(svc: Services, athlete_id: int) -> set[int]:
    """Begin a catch-up: record its time and take the waiting activity ids.

    The queued flag goes first, so an activity put on the list from now on queues the next one.
    """
    svc.redis.delete(_key("queued", athlete_id))
    svc.redis.set(_key("last", athlete_id), svc.clock(), ex=FLAG_TTL)
    key = _key("waiting", athlete_id)
    pipe = svc.redis.pipeline()  # MULTI/EXEC: nothing added between the read and the delete
    pipe.smembers(key)
    pipe.delete(key)
    members, _ = pipe.execute()
    return {int(m) for m in members}


def put_back(svc: Services, athlete_id: int, activity_ids) -> bool:
    """Return ids to the list after a catch-up could not run; True when one must be queued."""
    if activity_ids:
        svc.redis.sadd(_key("waiting", athlete_id), *activity_ids)
    return bool(svc.redis.set(_key("queued", athlete_id), 1, nx=True, ex=FLAG_TTL))
