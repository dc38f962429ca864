"""The simulator's clock: real time unless a test drives it."""

from __future__ import annotations

import threading
import time


class SimClock:
    """A clock the simulator (and tests) share; real time unless driven."""

    def __init__(self, start: float | None = None):
        self._frozen = start
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current sim time, epoch seconds."""
        with self._lock:
            return self._frozen if self._frozen is not None else time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward (a frozen clock stays frozen at the new time)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            if self._frozen is not None:
                self._frozen += seconds
            else:
                self._offset += seconds
