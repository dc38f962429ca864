"""`reconcile.diff`: what must change for our rows to equal Strava's, as a table of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models import ACTIVITY_FIELDS
from reconcile import Changes, diff

ME, OTHER = 1, 2
LISTED = datetime(2026, 6, 1, 12, tzinfo=UTC)
BEFORE, AFTER = LISTED - timedelta(minutes=5), LISTED + timedelta(seconds=1)


def values(activity_id: int, name: str = "Ride", athlete_id: int = ME) -> dict:
    """A parsed Strava activity."""
    base = dict.fromkeys(ACTIVITY_FIELDS)
    return dict(base, id=activity_id, athlete_id=athlete_id, name=name, distance=1000.0)


def row(activity_id: int, name="Ride", athlete_id=ME, fetched_at=BEFORE) -> dict:
    """A stored row."""
    return dict(values(activity_id, name, athlete_id), rider_id=7, fetched_at=fetched_at)


CASES = {
    "both empty": ({}, {}, Changes()),
    "new on Strava": ({}, {1: values(1)}, Changes(created=(values(1),))),
    "same on both": ({1: row(1)}, {1: values(1)}, Changes()),
    "renamed on Strava": (
        {1: row(1)}, {1: values(1, "Evening")}, Changes(updated=(values(1, "Evening"),))
    ),
    "gone from Strava": ({1: row(1)}, {}, Changes(deleted=(1,))),
    "another athlete's row is never updated": (
        {1: row(1, athlete_id=OTHER)}, {1: values(1, "Forged")}, Changes()
    ),
    "another athlete's row is never deleted": ({1: row(1, athlete_id=OTHER)}, {}, Changes()),
    "a row fetched after the listing is not overwritten": (
        {1: row(1, "Renamed by event", fetched_at=AFTER)}, {1: values(1, "Old")}, Changes()
    ),
    "a row fetched after the listing is not deleted": (
        {1: row(1, fetched_at=AFTER)}, {}, Changes()
    ),
    "mixed": (
        {1: row(1), 2: row(2), 3: row(3)},
        {1: values(1), 2: values(2, "New name"), 4: values(4)},
        Changes(created=(values(4),), updated=(values(2, "New name"),), deleted=(3,)),
    ),
}  # fmt: skip


@pytest.mark.parametrize(("ours", "theirs", "expected"), CASES.values(), ids=CASES.keys())
def test_diff(ours, theirs, expected):
    assert diff(ours, theirs, athlete_id=ME, listed_at=LISTED) == expected


def test_diff_without_deletes_only_adds_and_updates():
    changes = diff({1: row(1)}, {2: values(2)}, athlete_id=ME, listed_at=LISTED, deletes=False)
    assert changes == Changes(created=(values(2),))


def test_changes_are_false_when_empty_and_list_every_id():
    assert not Changes()
    changes = Changes(created=(values(4),), updated=(values(2),), deleted=(3,))
    assert changes and changes.ids() == [4, 2, 3]
