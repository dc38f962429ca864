"""The simulator's records: an activity, an athlete's grant, and the faults to inject."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from strava_sim.wire import iso, timezone_name

# Strava still fills the deprecated `type` with the older, coarser value for newer sport types.
_LEGACY_TYPES = {"GravelRide": "Ride", "MountainBikeRide": "Ride", "TrailRun": "Run"}
_EVENT_UPDATES = {"name": "title", "sport_type": "type", "private": "private"}


@dataclass
class Faults:
    """Misbehaviour to inject; rates are shares in [0, 1]."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    shuffle: bool = False
    not_found_after_create: float = 0.0
    error_rate: float = 0.0


@dataclass
class Activity:
    """One activity as the simulator holds it."""

    id: int
    athlete_id: int
    name: str
    sport_type: str
    distance: float
    moving_time: int
    elapsed_time: int
    total_elevation_gain: float
    start_date: datetime
    utc_offset: float
    private: bool
    created_at: float
    manual: bool = False
    trainer: bool = False
    commute: bool = False
    description: str | None = None

    @property
    def epoch(self) -> float:
        """The start as epoch seconds."""
        return self.start_date.timestamp()

    def summary(self) -> dict:
        """The activity as GET /athlete/activities lists it."""
        return {
            "resource_state": 2,
            "athlete": {"id": self.athlete_id, "resource_state": 1},
            "name": self.name,
            "distance": float(self.distance),
            "moving_time": self.moving_time,
            "elapsed_time": self.elapsed_time,
            "total_elevation_gain": float(self.total_elevation_gain),
            "type": _LEGACY_TYPES.get(self.sport_type, self.sport_type),
            "sport_type": self.sport_type,
            "id": self.id,
            "start_date": iso(self.start_date),
            "start_date_local": iso(self.start_date + timedelta(seconds=self.utc_offset)),
            "timezone": timezone_name(self.utc_offset),
            "utc_offset": float(self.utc_offset),
            "private": self.private,
            "visibility": "only_me" if self.private else "everyone",
            "manual": self.manual,
            "trainer": self.trainer,
            "commute": self.commute,
        }

    def detail(self) -> dict:
        """The activity as GET /activities/{id} answers it."""
        return {**self.summary(), "resource_state": 3, "description": self.description}


UPDATABLE = {f.name for f in fields(Activity)} - {"id", "athlete_id", "utc_offset", "created_at"}


@dataclass
class Grant:
    """An athlete's authorization of the app: its scope and tokens."""

    athlete_id: int
    scope: tuple[str, ...]
    access_token: str
    refresh_token: str
    expires_at: int
    old_access: dict[str, int] = field(default_factory=dict)  # superseded token -> its expiry

    @property
    def can_read(self) -> bool:
        """Whether the grant reads activities at all."""
        return "activity:read" in self.scope or self.can_read_private

    @property
    def can_read_private(self) -> bool:
        """Whether the grant reads "Only You" activities too."""
        return "activity:read_all" in self.scope

    def sees(self, activity: Activity) -> bool:
        """Whether this grant may read the activity."""
        return self.can_read and (self.can_read_private or not activity.private)


def ticked_scope(requested: str, ticked) -> str | None:
    """What one requested scope becomes on the consent page, given what the athlete left ticked."""
    if ticked is None or requested in ticked:
        return requested
    # Strava asks about private activities separately: unticking them leaves activity:read.
    if requested == "activity:read_all" and "activity:read" in ticked:
        return "activity:read"
    return None


def event_updates(changes: dict) -> dict:
    """Strava's `updates`: title and type as given, private as the string "true" or "false"."""
    updates = {}
    for key, value in changes.items():
        if key in _EVENT_UPDATES:
            updates[_EVENT_UPDATES[key]] = str(value).lower() if key == "private" else value
    return updates
