"""The Eddington number: the largest E such that E days each reached at least E miles (or km)."""

from __future__ import annotations

from collections.abc import Iterable

METRES_PER_MILE = 1609.344
METRES_PER_KM = 1000.0


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
