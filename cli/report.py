"""`strava status`, `strava riders` and `strava leaderboard`: what an operator reads."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from cli.plain import WholeNumber, say_where
from jobs.status import STALE_AFTER, collect_status
from jobs.status_text import format_status
from models import overview
from web.extension import current_services

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")


@click.command("status", short_help="What needs you now, then workers, events, riders, sweeps.")
@with_appcontext
@_JSON
def status_command(as_json):
    """Workers, queues, failures, budget, subscription, sweeps, riders, the last event."""
    svc = current_services()
    status = collect_status(svc)
    if as_json:
        status.update(
            database=svc.settings.describe_database(),
            queues_at=svc.settings.describe_redis(),
            settings_from=svc.settings.dotenv_path,
        )
        click.echo(json.dumps(status, indent=2, default=str))
        return
    for line in format_status(status):
        click.echo(line)
    say_where(svc.settings)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


def rider_list(svc) -> list[dict]:
    """Every rider: id, name, athlete, state, last sync and Eddington numbers."""
    now = svc.now()
    with svc.engine.connect() as conn:
        rows = overview.rider_rows(conn)
    return [
        {
            "id": r.id,
            "name": r.name,
            "athlete_id": r.athlete_id,
            "state": overview.rider_state(r, now - STALE_AFTER),
            "last_sync": r.last_sync.isoformat(timespec="seconds") if r.last_sync else None,
            "eddington_km": r.eddington_number_km,
            "eddington_miles": r.eddington_number_miles,
            "leaderboard_hidden": bool(r.leaderboard_hidden),
            "_last_sync": r.last_sync,
        }
        for r in rows
    ]


@click.command("riders", short_help="Every rider: id, athlete, state, last sync, Eddington.")
@with_appcontext
@_JSON
def riders_command(as_json):
    """The riders: id, name, Strava athlete, state, last sync, Eddington numbers."""
    riders = rider_list(current_services())
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if k[0] != "_"} for r in riders]))
        return
    if not riders:
        click.echo("no riders yet: share the connect link (/strava/connect)")
        return
    click.echo(f"{'id':>4}  {'name':<24} {'athlete':>10}  {'state':<15} {'last sync':<16}  km  mi")
    for r in riders:
        click.echo(
            f"{r['id']:>4}  {r['name'][:24]:<24} {r['athlete_id'] or '-':>10}  "
            f"{r['state']:<15} {_when(r['_last_sync']):<16} "
            f"{r['eddington_km'] or 0:>3} {r['eddington_miles'] or 0:>3}"
        )


@click.command("leaderboard", short_help="Connected riders ranked by Eddington number.")
@with_appcontext
@click.option("--km", is_flag=True, help="Rank by kilometres.  [default: miles]")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=WholeNumber(1),
    help="Show at most N riders.",
)
@_JSON
def leaderboard_command(km, limit, as_json):
    """Connected riders ranked by Eddington number (riders who hid themselves are left out)."""
    key = "eddington_km" if km else "eddington_miles"
    shown = [
        r
        for r in rider_list(current_services())
        if r["state"] in ("current", "stale") and not r["leaderboard_hidden"]
    ]
    shown.sort(key=lambda r: (-(r[key] or 0), r["name"], r["id"]))
    shown = shown[:limit]
    if as_json:
        board = [{"place": i, "id": r["id"], "name": r["name"], "eddington": r[key] or 0}
                 for i, r in enumerate(shown, start=1)]  # fmt: skip
        click.echo(json.dumps({"unit": "km" if km else "miles", "riders": board}))
        return
    unit = "km" if km else "mi"
    click.echo(f"Eddington leaderboard (E days of at least E {unit}):")
    if not shown:
        click.echo("  nobody yet")
    for place, r in enumerate(shown, start=1):
        click.echo(f"  {place:>3}. {r['name'][:24]:<24} {r[key] or 0:>4} {unit}")
