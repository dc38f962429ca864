"""`strava work`: the workers' job loop in bursts, for a club with no host that stays up.

GitHub Actions runs it on a schedule (`.github/workflows/work.yml`). Each run is what a worker on
a host does, compressed: the recovery pass (the worker's first maintenance task), scheduled jobs
whose time has come moved to their queues (jobs/burst.py), every queued job run, again until
nothing is due; then it exits 0, leaving jobs that are not yet due for the next run. Past the
deadline it takes no new job; a job already running finishes (RQ's job timeout bounds it), so
nothing is half-applied. Two runs that overlap share the queues as two workers do.
"""

from __future__ import annotations

import time

import click
from flask.cli import with_appcontext
from rq.registry import ScheduledJobRegistry

import services
import worker
from jobs import burst
from services import QUEUES, Services
from web.extension import current_services


class BurstWorker(worker.Worker):
    """worker.Worker that takes no new job once its deadline (a monotonic time) has passed."""

    def __init__(self, *args, deadline: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self.jobs_run = 0

    def past_deadline(self) -> bool:
        """Whether the run should take no new job."""
        return time.monotonic() >= self.deadline

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """No job past the deadline: RQ's burst loop then ends as if the queues were empty."""
        if self.past_deadline():
            return None
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def execute_job(self, job, queue) -> None:
        """Run the job in a work horse, counting it."""
        self.jobs_run += 1
        super().execute_job(job, queue)


def run(svc: Services, max_seconds: float | None) -> dict:
    """Work in bursts until nothing is queued or due, or the deadline passes; a summary."""
    deadline = time.monotonic() + (max_seconds if max_seconds is not None else float("inf"))
    with services.bind(svc):
        rq_worker = BurstWorker(
            [svc.queue(n) for n in QUEUES], connection=svc.redis, deadline=deadline
        )
        moved = 0
        while True:
            promoted = burst.promote_due(svc, svc.clock())
            moved += len(promoted)
            worked = rq_worker.work(burst=True)
            if rq_worker.past_deadline() or not (promoted or worked):
                break
    queued_left = sum(svc.queue(n).count for n in QUEUES)
    summary = {
        "jobs_run": rq_worker.jobs_run,
        "moved_when_due": moved,
        "queued_left": queued_left,
        "scheduled_left": _scheduled(svc),
        "stopped_at_deadline": rq_worker.past_deadline() and queued_left > 0,
    }
    burst.record_run(svc, summary)
    return summary


def _scheduled(svc: Services) -> int:
    """Jobs waiting for their time."""
    return sum(ScheduledJobRegistry(queue=svc.queue(name)).count for name in QUEUES)


def describe(summary: dict) -> str:
    """The run's summary as one line for the workflow's log."""
    line = (
        f"work: {summary['jobs_run']} jobs run ({summary['moved_when_due']} came due); "
        f"left: {summary['queued_left']} queued, {summary['scheduled_left']} scheduled for later"
    )
    return line + ("; stopped at the deadline" if summary["stopped_at_deadline"] else "")


@click.command("work", short_help="Run what is queued or due, then exit (GitHub Actions).")
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0),
    default=None,
    help="Take no new job after this long (a running job finishes). Default: no limit.",
)
@with_appcontext
def work_command(max_seconds):
    """Run what is queued or due (burst mode, with the recovery pass), then exit."""
    click.echo(describe(run(current_services(), max_seconds)))
