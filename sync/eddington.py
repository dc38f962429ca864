"""The Eddington number: the largest E such that E days each reached at least E miles (or km)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Connection

import models
from models.schema import METRES_PER_KM, METRES_PER_MILE


def eddington(day_distances: Iterable[float], unit_metres: float) -> int:
    """The Eddington number of per-day distances in metres, counted in the given unit."""
    days = sorted((d / unit_metres for d in day_distances), reverse=True)
    number = 0
    # After sorting longest first, day i (1-based) qualifies while it reaches i units.
    for i, distance in enumerate(days, start=1):
        if distance < i:
            break
        number = i
    return number


def eddington_numbers(day_distances: Iterable[float]) -> tuple[int, int]:
    """(miles, km) Eddington numbers of per-day distances in metres."""
    days = list(day_distances)
    return eddington(days, METRES_PER_MILE), eddington(days, METRES_PER_KM)


def qualifying_days(day_distances: Iterable[float], unit_metres: float, number: int) -> int:
    """How many days reached `number` units: the days behind an Eddington number (0 for E=0)."""
    if number <= 0:
        return 0
    return sum(1 for d in day_distances if d / unit_metres >= number)


def next_target(day_distances: Iterable[float], unit_metres: float) -> tuple[int, int]:
    """(the next Eddington number, how many more days of at least that many units reach it)."""
    days = [d / unit_metres for d in day_distances]
    target = eddington(days, 1.0) + 1
    return target, target - sum(1 for d in days if d >= target)


def store_numbers(conn: Connection, rider_id: int, sport_types: Iterable[str]) -> None:
    """Recompute and store the rider's Eddington numbers from the activities we hold."""
    days = models.daily_distances(conn, rider_id, sport_types)
    miles, km = eddington_numbers(days)
    models.update_connection(
        conn,
        rider_id,
        eddington_number_miles=miles,
        eddington_number_km=km,
        # Stored with the numbers, so the leaderboard needs no scan of every rider's rides.
        eddington_days_miles=qualifying_days(days, METRES_PER_MILE, miles),
        eddington_days_km=qualifying_days(days, METRES_PER_KM, km),
    )
