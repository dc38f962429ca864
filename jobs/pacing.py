"""Real-time work released at the pace the rate budget allows, in the order it was queued.

Every fetch and revocation check books its read with the shared budget when it is queued (a
catch-up list when it is refused a permit): it runs when due if this window's permits are not all
promised, else at its turn in the first window (and day) that has one free. So when the budget
is spent, waiting work wakes a window's worth at a time, spread across the window, instead of all
of it at every reset only to find one window's permits and go back to sleep.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services import Services


def release_at(svc: Services, at: datetime | None = None) -> datetime | None:
    """When a real-time job queued now, not before `at`, should run: None for at once."""
    not_before = at.timestamp() if at is not None else 0.0
    when = svc.budget.book("realtime", not_before)
    if when <= svc.clock():
        return None
    return datetime.fromtimestamp(when, UTC)
