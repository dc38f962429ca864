"""Fixed clocks for tests, so no result depends on the hour or the quarter-hour a test runs at."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from strava_sim import SimClock

WINDOW = 900  # Strava's short rate window: resets at :00, :15, :30 and :45
NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()  # far from a day's edges


def mid_window_clock() -> SimClock:
    """A frozen clock in the middle of this 15-minute window, within 7.5 min of the wall clock."""
    now = time.time()
    return SimClock(start=now - now % WINDOW + WINDOW / 2)


def noon_clock() -> SimClock:
    """A frozen clock at a fixed noon, UTC: rides a few hours apart fall on one day."""
    return SimClock(start=NOON)
