"""What the demo prints at the end: the figures, the operator's view and the consistency check."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import click

import models
from demo.system import Demo, plural
from jobs.status import collect_status
from jobs.status_text import format_status
from services import Services
from strava_sim import StravaSim
from strava_sim.scenario import DemoRider, visible_truth
from sync.eddington import eddington_numbers

DIFFERENCES_SHOWN = LEADERBOARD = 10
RATE_LIMITED = ("GET /athlete/activities", "GET /activities/{id}")  # Strava counts only these
COMPARED = ("name", "sport_type", "distance", "start_date", "private")


def _eddington_of(activities, sport_types) -> tuple[int, int]:
    per_day: Counter = Counter()
    for a in activities:
        if a["sport_type"] in sport_types:
            per_day[a["start_date_local"].date()] += a["distance"]
    return eddington_numbers(per_day.values())


def check_consistency(svc: Services, sim: StravaSim, riders: list[DemoRider]) -> list[str]:
    """How our rows differ from Strava's truth (ids, fields, Eddington); empty when they agree."""
    sport_types = svc.settings.eddington_sport_types
    differences = []
    for rider in riders:
        theirs = visible_truth(sim, rider)
        with svc.engine.connect() as conn:
            ours = {row.id: row._mapping for row in models.rider_activities(conn, rider.rider_id)}
            connection = models.get_connection(conn, rider.rider_id)
        for missing in sorted(theirs.keys() - ours.keys()):
            differences.append(f"{rider.name}: activity {missing} is missing from our database")
        for extra in sorted(ours.keys() - theirs.keys()):
            differences.append(f"{rider.name}: we hold activity {extra}, Strava does not show it")
        for activity_id in sorted(ours.keys() & theirs.keys()):
            for name in COMPARED:
                mine, truth = ours[activity_id][name], theirs[activity_id][name]
                if mine != truth:
                    differences.append(
                        f"{rider.name}: activity {activity_id} {name} is {mine!r}, "
                        f"Strava says {truth!r}"
                    )
        expected = _eddington_of(theirs.values(), sport_types)
        held = (connection.eddington_number_miles, connection.eddington_number_km)
        if held != expected:
            differences.append(f"{rider.name}: Eddington (mi, km) is {held}, expected {expected}")
    return differences


def _event_lines(demo: Demo) -> list[str]:
    with demo.svc.engine.connect() as conn:
        status = Counter(models.event_counts_since(conn, datetime(2000, 1, 1, tzinfo=UTC)))
    stored, d = sum(status.values()), demo.delivery
    return [
        f"  Webhook events   {d['delivered']} received: {stored - status['ignored']} queued "
        f"({status['done']} done, {status['queued'] + status['pending']} still queued for a "
        "retry not yet due, which the sweep covers too, "
        f"{status['failed']} failed), {d['delivered'] - stored} duplicate, "
        f"{status['ignored']} ignored",
        f"                   never delivered: {d['dropped']} dropped by Strava, {d['failed']} "
        "given up after 3 attempts (the sweep's job)",
    ]


def _listing(counts: dict) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _request_lines(demo: Demo) -> list[str]:
    sim, read = demo.sim, demo.svc.budget.snapshot()["read"]
    counted = {k: n for k, n in sim.requests.items() if k in RATE_LIMITED}
    free = {k: n for k, n in sim.requests.items() if k not in RATE_LIMITED}
    return [
        f"  Strava requests  {sum(counted.values())} API calls: {_listing(counted)}",
        f"                   not rate limited: {_listing(free)}",
        f"  Rate budget      busiest 15-minute window {sim.max_window_usage()} of "
        f"{read['limit_15min']} read requests; budget now {read['used_15min']}/"
        f"{read['limit_15min']} this window, {read['used_day']}/{read['limit_day']} today",
        f"  429 answers      {sim.rate_limited}",
    ]


def _activity_lines(demo: Demo, cast: list[DemoRider], run) -> list[str]:
    with demo.svc.engine.connect() as conn:
        ours = sum(len(models.rider_activities(conn, r.rider_id)) for r in cast)
    truth = sum(len(demo.sim.activities(r.athlete_id)) for r in cast)
    visible = sum(len(visible_truth(demo.sim, r)) for r in cast)
    return [
        f"  Activities       ours {ours}, Strava's {truth}, of which {visible} visible to us "
        "(private ones stay hidden without activity:read_all)",
        f"  Nightly sweep    run {run.id} {run.status}: {run.riders_done} riders in "
        f"{run.requests_used} requests; repaired {run.activities_created} created, "
        f"{run.activities_updated} updated, {run.activities_deleted} deleted "
        f"({run.activities_unannounced} never announced by an event)",
    ]


def _leaderboard_lines(demo: Demo, cast: list[DemoRider]) -> list[str]:
    with demo.svc.engine.connect() as conn:
        rows = [(r.name, models.get_connection(conn, r.rider_id)) for r in cast]
    rows.sort(key=lambda row: (-(row[1].eddington_number_km or 0), row[0]))
    lines = ["  Eddington leaderboard (E days of at least E km / E miles):"]
    for place, (name, c) in enumerate(rows[:LEADERBOARD], start=1):
        lines.append(
            f"    {place:>3}. {name:<16} {c.eddington_number_km or 0:>4} km "
            f"{c.eddington_number_miles or 0:>4} mi"
        )
    if len(rows) > LEADERBOARD:
        lines.append(f"         ...and {plural(len(rows) - LEADERBOARD, 'more rider')}")
    return lines


def print_summary(demo: Demo, cast: list[DemoRider], run) -> None:
    """What happened, for a person to read."""
    click.echo("\nSummary")
    for line in (
        _event_lines(demo)
        + _request_lines(demo)
        + _activity_lines(demo, cast, run)
        + _leaderboard_lines(demo, cast)
    ):
        click.echo(line)
    click.echo("\nThe operator's view (flask --app app strava status)")
    with demo.app.app_context():
        status = collect_status(demo.svc)
    for line in format_status(status):
        click.echo(f"  {line}")


def print_verdict(differences: list[str], cast: list[DemoRider]) -> None:
    """PASS, or FAIL with the first few differences."""
    if not differences:
        click.echo(
            f"\nConsistency check: PASS. All {len(cast)} riders' activities and Eddington "
            "numbers equal Strava's truth as each rider's scope shows it."
        )
        return
    click.echo(f"\nConsistency check: FAIL. {len(differences)} differences, the first ones:")
    for line in differences[:DIFFERENCES_SHOWN]:
        click.echo(f"  - {line}")
