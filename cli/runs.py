"""`strava reconcile` and `strava backfill`: queue the work, wait only while a worker is there.

Both print a short summary for people (`--json` for the data). With no worker listening on the
queue they say so at once, naming the command that starts one, instead of waiting for nobody.
"""

from __future__ import annotations

import json
import sys
import time

import click
import redis
from flask.cli import with_appcontext

import models
from cli.plain import WholeNumber
from jobs import backfill, sweep
from jobs.joblog import differences
from jobs.status import run_summary, workers_listening
from services import Services
from services.diagnose import START_WORKER, explain
from web.extension import current_services

POLL = 0.2  # seconds between looks at the run's row


def no_worker(queue: str) -> str:
    """The sentence for a queue nobody listens on."""
    return (
        f"no worker is listening on the {queue} queue: the work is queued and starts when one "
        f"does ({START_WORKER})"
    )


class Progress:
    """Counts done out of a total: a bar on a terminal, else a line per 10 %."""

    def __init__(self, label: str, total: int, stream=None):
        self.label, self.total, self.done = label, max(total, 1), 0
        self.stream = stream or sys.stderr
        self._tty = self.stream.isatty()
        self._tenths = 0
        self._bar = click.progressbar(length=self.total, label=label, file=self.stream)
        if self._tty:
            self._bar.__enter__()

    def update(self, done: int) -> None:
        """Move to `done` (never backwards)."""
        if done <= self.done:
            return
        if self._tty:
            self._bar.update(done - self.done)
        else:
            tenths = min(10, done * 10 // self.total)
            if tenths > self._tenths:
                self._tenths = tenths
                click.echo(f"{self.label}: {done}/{self.total} ({tenths * 10} %)", file=self.stream)
        self.done = done

    def close(self) -> None:
        """End the bar."""
        if self._tty:
            self._bar.__exit__(None, None, None)


def wait_for_run(svc: Services, run_id: int, queue: str, timeout: float):
    """Wait while the run is running and a worker listens; returns its last row."""
    with svc.engine.connect() as conn:
        run = models.get_run(conn, run_id)
    progress = Progress("riders", run.riders_planned)
    deadline = time.monotonic() + timeout
    try:
        while run.status == "running" and time.monotonic() < deadline:
            if not workers_listening(svc, queue):
                raise click.ClickException(no_worker(queue))
            time.sleep(POLL)
            with svc.engine.connect() as conn:
                run = models.get_run(conn, run_id)
            progress.update(run.riders_done)
    finally:
        progress.close()
    return run


def _budget_line(budget: dict) -> str:
    read = budget["read"]
    return (
        f"Budget left: {read['left_15min']}/{read['limit_15min']} reads this window, "
        f"{read['left_day']}/{read['limit_day']} today."
    )


def run_lines(run) -> list[str]:
    """A finished (or still running) run for people."""
    line = (
        f"Run #{run.id} {run.status}{' (dry run)' if run.dry_run else ''}: "
        f"{run.riders_done}/{run.riders_planned} riders, {run.activities_created} created, "
        f"{run.activities_updated} updated, {run.activities_deleted} deleted"
    )
    lines = [line + (" (would be, not written)" if run.dry_run else "") + "."]
    if run.activities_unannounced:
        lines.append(f"{run.activities_unannounced} had never been announced by an event.")
    if run.error:
        lines.append(f"Last error: {run.error}")
    return lines


def _report(svc: Services, summary: dict, run, as_json: bool) -> None:
    if run is not None:
        summary["run"] = run_summary(run)
        if run.dry_run:
            summary["differences"] = differences(svc, run.id)
    summary["budget"] = svc.budget.snapshot()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    if run is not None:
        for line in run_lines(run):
            click.echo(line)
        for d in summary.get("differences", []):
            click.echo(f"  rider {d['rider_id']}: activity {d['activity_id']} {d['change']}")
    click.echo(_budget_line(summary["budget"]))


def _finish(svc: Services, summary: dict, listening: int, wait: bool, timeout: float, as_json):
    """Wait if asked and a worker listens, then report; no worker or not finished: exit 1."""
    queue = "reconcile"
    summary["workers"] = listening
    if not listening:
        click.echo(f"Warning: {no_worker(queue)}", err=True)
    run = None
    if wait and listening:
        run = wait_for_run(svc, summary["run_id"], queue, timeout)
    _report(svc, summary, run, as_json)
    if wait and not listening:
        sys.exit(1)
    if run is not None and run.status == "running":
        click.echo(f"Error: run #{run.id} is still running after {timeout:g} s", err=True)
        sys.exit(1)


def resolve_rider(svc: Services, given: int) -> int:
    """The rider a RIDER argument names: a rider id, or else a Strava athlete id (said so)."""
    with svc.engine.connect() as conn:
        rider = models.get_rider(conn, given)
        connection = models.get_connection_by_athlete(conn, given)
    if rider is not None:
        if connection is not None and connection.rider_id != given:
            click.echo(f"Note: {given} is taken as rider {given} ({rider.name}), not as Strava "
                       f"athlete {given} (rider {connection.rider_id})", err=True)  # fmt: skip
        return given
    if connection is None:
        raise click.ClickException(
            f"there is no rider or Strava athlete {given} (`strava riders` lists both)"
        )
    click.echo(f"Strava athlete {given} is rider {connection.rider_id}.", err=True)
    return connection.rider_id


RIDER = click.argument("rider", type=WholeNumber(1), metavar="RIDER")


def _require_connected(svc: Services, rider_id: int) -> None:
    with svc.engine.connect() as conn:
        connection = models.get_connection(conn, rider_id)
    if connection is None or connection.refresh_token is None:
        raise click.ClickException(f"rider {rider_id} has no Strava connection")


_WAIT = click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait while a worker works."
)
_TIMEOUT = click.option(
    "--timeout", default=3600, show_default=True, type=WholeNumber(1), help="Seconds to wait."
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a summary.")


@click.command("reconcile")
@with_appcontext
@click.option("--dry-run", is_flag=True, help="List the differences without writing them.")
@click.option(
    "--max-riders",
    type=WholeNumber(0),
    help="Plan at most this many riders.  [default: as the budget allows]",
)
@click.option("--rider", "rider_id", type=WholeNumber(1), help="Only this rider.  [default: all]")
@_WAIT
@_TIMEOUT
@_JSON
def reconcile_command(dry_run, max_riders, rider_id, wait, timeout, as_json):
    """Run the nightly sweep now."""
    svc = current_services()
    if rider_id is not None:
        _require_connected(svc, rider_id)
    try:
        listening = workers_listening(svc, "reconcile")  # asks Redis before anything is written
        summary = sweep.queue_sweep(
            svc, "command", dry_run=dry_run, max_riders=max_riders, rider_id=rider_id
        )
    except redis.RedisError as exc:
        raise click.ClickException(f"nothing was queued: {explain(exc, svc.settings)}") from None
    if not as_json:
        click.echo(
            f"Sweep #{summary['run_id']}{' (dry run)' if dry_run else ''}: "
            f"{summary['planned']} riders planned, {summary['deferred']} deferred to later nights."
        )
    _finish(svc, summary, listening, wait and summary["planned"] > 0, timeout, as_json)


@click.command("backfill")
@with_appcontext
@RIDER
@click.option("--days", type=WholeNumber(1), help="Only the last N days.  [default: all]")
@_WAIT
@_TIMEOUT
@_JSON
def backfill_command(rider, days, wait, timeout, as_json):
    """Re-read a rider's history from Strava.

    RIDER is a rider id or the rider's Strava athlete id (`strava riders` lists both).
    """
    svc = current_services()
    rider_id = resolve_rider(svc, rider)
    _require_connected(svc, rider_id)
    try:
        listening = workers_listening(svc, "reconcile")  # asks Redis before anything is written
        run_id = backfill.queue_backfill(svc, rider_id, days, trigger="command")
    except redis.RedisError as exc:
        raise click.ClickException(f"nothing was queued: {explain(exc, svc.settings)}") from None
    if not as_json:
        span = f"the last {days} days" if days else "all of it"
        click.echo(f"Backfill #{run_id} of rider {rider_id} queued ({span}).")
    _finish(svc, {"run_id": run_id}, listening, wait, timeout, as_json)
