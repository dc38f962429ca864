"""Helpers for the page tests: a signed-in test client, rides stored directly, CSRF'd posts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import models
from sync import eddington

CSRF = "test-csrf-token"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def sign_in(client, rider_id: int) -> None:
    """Sign the test client in as a rider, with a known CSRF token."""
    with client.session_transaction() as session:
        session["rider_id"] = rider_id
        session["csrf"] = CSRF


def post(client, path: str, data: dict | None = None, csrf: str | None = CSRF):
    """POST a form as a page does, with the session's CSRF token unless told otherwise."""
    form = dict(data or {})
    if csrf is not None:
        form["csrf_token"] = csrf
    return client.post(path, data=form, headers=HTML)


def add_ride(svc, rider_id: int, athlete_id: int, activity_id: int, km: float, day: int = 0,
             sport_type: str = "Ride", name: str = "Ride") -> None:  # fmt: skip
    """Store one activity `day` days after START."""
    start = START + timedelta(days=day)
    values = {
        "id": activity_id, "athlete_id": athlete_id, "name": name, "sport_type": sport_type,
        "start_date": start, "start_date_local": start.replace(tzinfo=None), "timezone": "UTC",
        "distance": km * 1000.0, "moving_time": 3600, "elapsed_time": 3700,
        "total_elevation_gain": 100.0, "private": False, "manual": False, "trainer": False,
        "commute": False,
    }  # fmt: skip
    with svc.engine.begin() as conn:
        models.upsert_activity(conn, rider_id, values, now=svc.now())
        eddington.store_numbers(conn, rider_id, svc.settings.eddington_sport_types)


def connection(svc, rider_id: int):
    """The rider's strava_connection row."""
    with svc.engine.connect() as conn:
        return models.get_connection(conn, rider_id)


def held_activities(svc, rider_id: int) -> list[int]:
    """Ids of the activities we hold for a rider."""
    with svc.engine.connect() as conn:
        return [a.id for a in models.rider_activities(conn, rider_id)]
