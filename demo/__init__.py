"""`flask --app app demo`: the whole of strava-sync against the Strava simulator, in one process.

A newcomer's first run, with no accounts and no services. The demo starts `strava_sim` and its own
app (a temporary SQLite database; the in-process Redis stand-in unless REDIS_URL is set) on
loopback, gives simulated riders a year of history, connects them through the real OAuth flow,
creates the webhook subscription, simulates days of riding while Strava drops, repeats, shuffles
and forges events, lets an in-process worker do the work, runs the nightly sweep, prints what
happened, and ends by checking our database against the simulator's truth.

The package: `system` (the running pieces), `story` (the steps), `report` (what it prints and the
consistency check); the riders and their activities come from `strava_sim.scenario`.
"""

from __future__ import annotations

import random
import sys
import time

import click

from app import create_app
from demo.report import check_consistency, print_summary, print_verdict
from demo.story import connect_all, simulate, subscribe, sweep
from demo.system import DemoError, running_system, say
from strava_sim.scenario import FULL_SCOPE, READ_SCOPE, DemoRider, give_history, make_cast

__all__ = ["FULL_SCOPE", "READ_SCOPE", "DemoError", "DemoRider", "check_consistency", "run_demo"]


def command(create_app) -> click.Command:
    """The `flask demo` command, building the demo's app with `create_app`."""

    @click.command("demo", short_help="Run the whole system against the simulator and check it.")
    @click.option(
        "--riders",
        default=8,
        show_default=True,
        type=click.IntRange(1, 500),
        help="Riders to connect.",
    )
    @click.option(
        "--days",
        default=1,
        show_default=True,
        type=click.IntRange(1, 30),
        help="Days of riding to simulate.",
    )
    @click.option(
        "--seed",
        default=1,
        show_default=True,
        help="Seed for the simulated world (same seed, same day).",
    )
    @click.option(
        "--drop-rate",
        default=0.1,
        show_default=True,
        type=click.FloatRange(0, 1),
        help="Share of events Strava drops.",
    )
    def demo_command(riders, days, seed, drop_rate):
        """Run the whole system against the Strava simulator and check it ends consistent."""
        ok = run_demo(create_app, riders=riders, days=days, seed=seed, drop_rate=drop_rate)
        sys.exit(0 if ok else 1)

    return demo_command


def run_demo(create_app, *, riders: int, days: int, seed: int, drop_rate: float) -> bool:
    """Run the whole system against the simulator; True when it ends consistent with Strava."""
    began, rng = time.monotonic(), random.Random(seed)
    say(f"strava-sync demo: {riders} riders, {days} day(s), seed {seed}, {drop_rate:.0%} dropped")
    try:
        with running_system(create_app, seed, riders, days, drop_rate) as demo:
            redis = "an in-process Redis stand-in" if demo.svc.inline else "Redis at REDIS_URL"
            say(f"Strava simulator at {demo.sim.base_url}; strava-sync at {demo.url} ({redis}).")
            cast = make_cast(demo.sim, rng, riders)
            history = give_history(demo.sim, rng, cast)
            say(f"Gave {riders} riders {history} activities over the past year.")
            connect_all(demo, cast)
            subscribe(demo)
            simulate(demo, cast, rng, days)
            run = sweep(demo, riders)
            print_summary(demo, cast, run)
            # Looked up here, in the package, so a test can replace demo.check_consistency.
            differences = check_consistency(demo.svc, demo.sim, cast)
            print_verdict(differences, cast)
    except DemoError as exc:
        click.echo(f"\nThe demo stopped: {exc}\nConsistency check: FAIL")
        return False
    click.echo(f"Finished in {time.monotonic() - began:.1f} s.")
    return not differences


demo_command = command(create_app)  # `flask demo`: registered in pyproject.toml (flask.commands)
