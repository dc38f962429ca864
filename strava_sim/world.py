"""The simulated world: athletes, their activities and grants, and the events they cause."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime

from strava_sim.clock import SimClock
from strava_sim.records import UPDATABLE, Activity, Faults, Grant, event_updates
from strava_sim.wire import parse_scope, same_secret, utc

TOKEN_LIFETIME = 6 * 60 * 60


class World:
    """The state behind the simulator's API, changed by tests directly and by its HTTP views."""

    def __init__(self, *, clock: SimClock | None, seed: int, faults: Faults | None):
        self.clock = clock or SimClock()
        self.faults = faults or Faults()
        self.subscription: dict | None = None
        self.outbox: list[dict] = []
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._athletes: dict[int, dict] = {}
        self._activities: dict[int, Activity] = {}
        self._grants: dict[int, Grant] = {}
        self._codes: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._login: tuple[int, frozenset[str] | None, bool] | None = None
        self._last_athlete_id = 100_000
        self._last_activity_id = 10_000_000_000
        self._issued: list[str] = []  # every token and authorization code handed out

    def add_athlete(self, firstname: str = "Sim", lastname: str = "Rider") -> int:
        """Create an athlete and return its id."""
        with self._lock:
            self._last_athlete_id += self._rng.randint(1, 999)
            athlete_id = self._last_athlete_id
            self._athletes[athlete_id] = {"firstname": firstname, "lastname": lastname}
            return athlete_id

    def grant(self, athlete_id: int, scope: str = "read,activity:read_all") -> dict:
        """Authorize the app for an athlete without the HTTP flow; returns the /oauth/token JSON."""
        with self._lock:
            self._require_athlete(athlete_id)
            return self._authorize_athlete(athlete_id, parse_scope(scope))

    def login_as(self, athlete_id: int, scope: str | None = None, deny: bool = False) -> None:
        """Act for this athlete on each following GET /oauth/authorize, ticking `scope`."""
        with self._lock:
            self._require_athlete(athlete_id)
            ticked = None if scope is None else frozenset(parse_scope(scope))
            self._login = (athlete_id, ticked, deny)

    def create_activity(
        self,
        athlete_id: int,
        *,
        name: str = "Morning Ride",
        sport_type: str = "Ride",
        distance: float = 30000.0,
        moving_time: int = 3600,
        elapsed_time: int | None = None,
        total_elevation_gain: float = 250.0,
        start_date: datetime | None = None,
        utc_offset_hours: float = 0,
        private: bool = False,
        manual: bool = False,
        trainer: bool = False,
        commute: bool = False,
        event: bool = True,
    ) -> int:
        """Record an activity for an athlete and (by default) queue its create event."""
        with self._lock:
            self._require_athlete(athlete_id)
            now = self.clock.now()
            if start_date is None:
                start_date = datetime.fromtimestamp(now - moving_time, UTC)
            self._last_activity_id += self._rng.randint(1, 9_999)
            activity = Activity(
                id=self._last_activity_id,
                athlete_id=athlete_id,
                name=name,
                sport_type=sport_type,
                distance=float(distance),
                moving_time=int(moving_time),
                elapsed_time=int(moving_time if elapsed_time is None else elapsed_time),
                total_elevation_gain=float(total_elevation_gain),
                start_date=utc(start_date),
                utc_offset=round(utc_offset_hours * 3600),
                private=private,
                created_at=now,
                manual=manual,
                trainer=trainer,
                commute=commute,
            )
            self._activities[activity.id] = activity
            if event and self._watching(activity):
                self._notify(activity, "create")
            return activity.id

    def update_activity(self, activity_id: int, *, event: bool = True, **changes) -> None:
        """Edit an activity; the event carries Strava's `updates` (title, type, private)."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)}; updatable: {sorted(UPDATABLE)}")
        with self._lock:
            activity = self._activities[activity_id]
            was_visible = self._watching(activity)
            for key, value in changes.items():
                setattr(activity, key, utc(value) if key == "start_date" else value)
            if not event:
                return
            # Without activity:read_all an app sees turning "Only You" as a delete and back as a
            # create, since it is never told about what it cannot read.
            if was_visible and self._watching(activity):
                self._notify(activity, "update", event_updates(changes))
            elif was_visible:
                self._notify(activity, "delete")
            elif self._watching(activity):
                self._notify(activity, "create")

    def delete_activity(self, activity_id: int, *, event: bool = True) -> None:
        """Delete an activity and (by default) queue its delete event."""
        with self._lock:
            activity = self._activities[activity_id]
            del self._activities[activity_id]
            if event and self._watching(activity):
                self._notify(activity, "delete")

    def revoke(self, athlete_id: int, *, event: bool = True) -> None:
        """The athlete revokes the app: its tokens stop working; an athlete event is queued."""
        with self._lock:
            self._require_athlete(athlete_id)
            if self._grants.pop(athlete_id, None) is None:
                return
            if event:
                self._queue("athlete", athlete_id, "update", athlete_id, {"authorized": "false"})

    def activities(self, athlete_id: int) -> list[dict]:
        """The truth: the athlete's current activities in detail, newest first, private included."""
        with self._lock:
            own = [a for a in self._activities.values() if a.athlete_id == athlete_id]
            return [a.detail() for a in sorted(own, key=lambda a: (a.epoch, a.id), reverse=True)]

    def queue_event(self, **event) -> None:
        """Put an arbitrary (e.g. forged) event in the outbox, as given."""
        with self._lock:
            self.outbox.append(dict(event))

    # -- internals -------------------------------------------------------------------------

    def _require_athlete(self, athlete_id: int) -> None:
        if athlete_id not in self._athletes:
            raise KeyError(f"no athlete {athlete_id}")

    def _watching(self, activity: Activity) -> bool:
        """Whether the app hears about this activity: Strava only tells it what it can read."""
        grant = self._grants.get(activity.athlete_id)
        return grant is not None and grant.sees(activity)

    def _notify(self, activity: Activity, aspect_type: str, updates: dict | None = None) -> None:
        self._queue("activity", activity.id, aspect_type, activity.athlete_id, updates or {})

    def _queue(self, object_type, object_id, aspect_type, owner_id, updates) -> None:
        self.outbox.append(
            {
                "aspect_type": aspect_type,
                "event_time": int(self.clock.now()),
                "object_id": object_id,
                "object_type": object_type,
                "owner_id": owner_id,
                "subscription_id": self.subscription["id"] if self.subscription else None,
                "updates": updates,
            }
        )

    def _hex(self, nbytes: int) -> str:
        return f"{self._rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def _secret(self) -> str:
        """A new access or refresh token or authorization code, remembered for issued_secrets()."""
        value = self._hex(20)
        self._issued.append(value)
        return value

    def issued_secrets(self) -> list[str]:
        """Every access token, refresh token and authorization code the simulator has issued."""
        with self._lock:
            return list(self._issued)

    def _authorize_athlete(self, athlete_id: int, scope: tuple[str, ...]) -> dict:
        expires_at = int(self.clock.now()) + TOKEN_LIFETIME
        grant = Grant(athlete_id, scope, self._secret(), self._secret(), expires_at)
        self._grants[athlete_id] = grant
        return self._token_json(grant, athlete=True)

    def _token_json(self, grant: Grant, *, athlete: bool) -> dict:
        body = {
            "token_type": "Bearer",
            "expires_at": grant.expires_at,
            "expires_in": max(0, int(grant.expires_at - self.clock.now())),
            "refresh_token": grant.refresh_token,
            "access_token": grant.access_token,
        }
        if athlete:
            names = self._athletes[grant.athlete_id]
            body["athlete"] = {"id": grant.athlete_id, "resource_state": 2, **names}
        return body

    def _grant_for_access(self, token: str) -> Grant | None:
        now = self.clock.now()
        for grant in self._grants.values():
            expires_at = (
                grant.expires_at
                if same_secret(grant.access_token, token)
                else grant.old_access.get(token)
            )
            if expires_at is not None:
                return grant if expires_at > now else None
        return None
