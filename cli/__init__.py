"""Command line: `flask --app app init-db`, `flask --app app db ...`, `flask --app app strava ...`.

Every refusal exits non-zero with one plain sentence on stderr: the `strava` group turns database,
Redis and configuration failures into one (see `commands.plain`). This module registers the
groups and holds the subscription commands; the rest live in `commands/`.
"""

from __future__ import annotations

import secrets
import sys

import click
import requests
from flask import Flask
from flask.cli import AppGroup

import models
from cli import db as dbcli
from cli import report, runs
from cli.plain import PlainGroup
from services import Services
from strava_client import ApplicationInactive, BadRequest, StravaError, Unauthorized
from sync import invites
from web.extension import current_services

strava = PlainGroup("strava", help="Manage the Strava subscription, sweeps and backfills.")
subscription = AppGroup("subscription", help="The one webhook subscription Strava allows.")
strava.add_command(subscription)
strava.add_command(runs.reconcile_command)
strava.add_command(runs.backfill_command)
strava.add_command(report.status_command)
strava.add_command(report.riders_command)
strava.add_command(report.leaderboard_command)


def fail(message: str) -> None:
    """Stop with a sentence on stderr and exit status 1."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


# -- subscription ---------------------------------------------------------------------------------


def check_callback(url: str, verify_token: str) -> str | None:
    """Call our callback as Strava will; returns what is wrong, or None if it answers right."""
    challenge = secrets.token_urlsafe(12)
    params = {"hub.mode": "subscribe", "hub.challenge": challenge, "hub.verify_token": verify_token}
    try:
        response = requests.get(url, params=params, timeout=5)
    except requests.RequestException as exc:
        return f"the callback URL {url} is not reachable ({type(exc).__name__})"
    if response.status_code == 403:
        return (
            f"the callback at {url} refused our verify token: the deployed app's "
            "STRAVA_VERIFY_TOKEN differs from this one (or is unset there)"
        )
    if response.status_code != 200:
        return f"the callback at {url} answered {response.status_code}, not 200"
    try:
        echoed = response.json().get("hub.challenge")
    except (ValueError, AttributeError):
        echoed = None
    if echoed != challenge:
        return f"the callback at {url} did not echo the challenge as JSON {{'hub.challenge': ...}}"
    if response.elapsed.total_seconds() > 2:
        return f"the callback at {url} took over 2 s to answer; Strava will give up on it"
    return None


def _explain(exc: StravaError) -> str:
    if isinstance(exc, ApplicationInactive):
        return str(exc)
    if isinstance(exc, Unauthorized) or exc.status == 401:
        return "Strava refused the application's credentials: check STRAVA_CLIENT_ID and SECRET"
    if isinstance(exc, BadRequest) and any("callback" in str(e).lower() for e in exc.errors):
        return f"Strava could not validate the callback URL ({exc})"
    return str(exc)


def _remember(svc: Services, subscription_id: int | None) -> None:
    with svc.engine.begin() as conn:
        models.set_setting(
            conn, "subscription_id", str(subscription_id) if subscription_id else None
        )
    svc.forget_subscription()


def _describe(sub: dict) -> str:
    return f"id {sub['id']}, callback {sub.get('callback_url')}, created {sub.get('created_at')}"


def _existing(svc: Services) -> dict | None:
    try:
        subs = svc.client.list_subscriptions()
    except StravaError as exc:
        fail(_explain(exc))
    return subs[0] if subs else None


def _require(svc: Services, *names: str) -> None:
    missing = [n for n in names if not svc.config.get(n)]
    if missing:
        fail(f"{', '.join(missing)} must be set")


@subscription.command("create")
@click.option(
    "--callback-url", help="Public URL of /api/strava/webhook (default STRAVA_CALLBACK_URL)."
)
def subscription_create(callback_url):
    """Create the push subscription after checking our callback answers as Strava expects."""
    svc = current_services()
    _require(svc, "STRAVA_CLIENT_ID", "STRAVA_CLIENT_SECRET", "STRAVA_VERIFY_TOKEN")
    url = callback_url or svc.config.get("STRAVA_CALLBACK_URL")
    if not url:
        fail("give --callback-url or set STRAVA_CALLBACK_URL")
    problem = check_callback(url, svc.config["STRAVA_VERIFY_TOKEN"])
    if problem:
        fail(f"{problem}. Strava was not asked.")
    existing = _existing(svc)
    if existing:
        _remember(svc, existing["id"])
        fail(f"a subscription already exists ({_describe(existing)}); delete it first")
    try:
        created = svc.client.create_subscription(url, svc.config["STRAVA_VERIFY_TOKEN"])
    except StravaError as exc:
        fail(_explain(exc))
    _remember(svc, created["id"])
    click.echo(f"Subscription created: id {created['id']}, callback {url}")


@subscription.command("show")
def subscription_show():
    """Show the current subscription, or 'none'."""
    svc = current_services()
    _require(svc, "STRAVA_CLIENT_ID", "STRAVA_CLIENT_SECRET")
    existing = _existing(svc)
    _remember(svc, existing["id"] if existing else None)
    if not existing:
        click.echo("none")
        return
    click.echo(_describe(existing))
    configured = svc.config.get("STRAVA_CALLBACK_URL")
    if configured and configured != existing.get("callback_url"):
        click.echo(
            f"Warning: STRAVA_CALLBACK_URL is {configured}, not the subscribed URL", err=True
        )


@subscription.command("delete")
@click.option("--id", "subscription_id", type=int, help="Subscription id (default: ours).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def subscription_delete(subscription_id, yes):
    """Delete the push subscription; Strava stops sending events."""
    svc = current_services()
    _require(svc, "STRAVA_CLIENT_ID", "STRAVA_CLIENT_SECRET")
    if subscription_id is None:
        existing = _existing(svc)
        if not existing:
            fail("there is no subscription to delete")
        subscription_id = existing["id"]
    if not yes and not click.confirm(f"Delete subscription {subscription_id}?"):
        fail("not deleted")
    try:
        svc.client.delete_subscription(subscription_id)
    except StravaError as exc:
        fail(_explain(exc))
    _remember(svc, None)
    click.echo(f"Subscription {subscription_id} deleted.")


def init_app(app: Flask) -> None:
    """Register the commands on the app (`demo` and `simulate` register themselves as plugins)."""
    app.cli.add_command(dbcli.init_db_command)
    app.cli.add_command(dbcli.db)
    app.cli.add_command(strava)


@strava.command("invite")
@click.argument("rider_id", type=int, required=False)
@click.option(
    "--new", "new_name", metavar="NAME", help="Create a rider with this name and invite them."
)
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=invites.DEFAULT_HOURS)
def invite_command(rider_id: int | None, new_name: str | None, hours: float) -> None:
    """Print a signed, expiring, single-use connect link for a rider (last line).

    Name an existing RIDER_ID, or create a rider with --new NAME (the way in for a club's first
    riders when connecting needs an invite).
    """
    if (rider_id is None) == (new_name is None):
        fail("name either an existing RIDER_ID or a new rider with --new NAME")
    svc = current_services()
    try:
        invites.serializer(svc.config)  # refuse before anything is stored
        base = invites.public_base(svc.config)
        if new_name is None:
            token = invites.issue(svc, rider_id, hours)
        else:
            rider_id, token = invites.issue_new(svc, new_name, hours)
    except (invites.InviteError, invites.NoSecretKey) as exc:
        fail(f"{exc}.")
    click.echo(f"Invite for rider {rider_id}, valid {hours:g} hours, usable once:")
    click.echo(invites.connect_url(base, token))
