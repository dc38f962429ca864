"""The operator's dashboard at /admin: status, the read budget over the last day, and invites.

Only athletes listed in ADMIN_ATHLETE_IDS, signed in with Strava, may see it; everyone else gets
403. The status dict comes from `status.collect_status` and is rendered by its keys, so new keys
show up without changes here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis
from flask import Blueprint, abort, render_template, request

import models
from jobs import status
from sync import invites
from web import pages
from web.extension import current_services

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__)
bp.before_request(pages.require_csrf)

CHART_HOURS = 24
CHART = {"width": 720, "height": 200, "left": 44, "right": 8, "top": 12, "bottom": 28}
MAX_INVITE_HOURS = 24 * 30


def require_admin():
    """Refuse (403) anyone but a signed-in athlete listed in ADMIN_ATHLETE_IDS."""
    _, connection = pages.signed_in_connection()
    if not pages.is_admin(connection):
        abort(403, "This page is for the club's operators (ADMIN_ATHLETE_IDS) only.")


bp.before_request(require_admin)


def _time_label(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M")


def budget_chart(history: list[tuple[int, int]], limit: int) -> dict:
    """Bars (one per 15-minute window) and the limit line of the read-budget chart, in SVG units."""
    c = CHART
    plot_w = c["width"] - c["left"] - c["right"]
    plot_h = c["height"] - c["top"] - c["bottom"]
    peak = max([limit, *(n for _, n in history)], default=limit) or 1
    step = plot_w / max(len(history), 1)

    def y(value: float) -> float:
        return round(c["top"] + plot_h * (1 - value / peak), 1)

    bars = [
        {
            "x": round(c["left"] + i * step, 1),
            "y": y(n),
            "width": round(max(step - 1, 1), 1),
            "height": round(plot_h * n / peak, 1),
            "label": f"{_time_label(start)} UTC: {n}",
            "over": n > limit,
        }
        for i, (start, n) in enumerate(history)
    ]
    ticks = [
        {"x": round(c["left"] + i * step, 1), "label": _time_label(start)}
        for i, (start, _) in enumerate(history)
        if i % 16 == 0
    ]
    return {
        **c,
        "bars": bars,
        "ticks": ticks,
        "limit": limit,
        "limit_y": y(limit),
        "peak": max((n for _, n in history), default=0),
        "total": sum(n for _, n in history),
        "base_y": c["top"] + plot_h,
    }


def _chart(svc) -> dict | None:
    try:
        history = svc.budget.history(hours=CHART_HOURS)
        limit = svc.budget.snapshot()["read"]["limit_15min"]
    except redis.RedisError as exc:
        log.warning("budget history unavailable: %s", exc)
        return None
    return budget_chart(history, limit)


def _dashboard(invite_url: str | None = None, status_code: int = 200):
    svc = current_services()
    with svc.engine.connect() as conn:
        choices = models.rider_choices(conn)
    return render_template(
        "admin.html",
        status=status.collect_status(svc),
        chart=_chart(svc),
        riders=choices,
        invite_url=invite_url,
        max_hours=MAX_INVITE_HOURS,
    ), status_code


@bp.get("/admin")
def dashboard():
    """What `strava status` shows, the read-budget chart, and the invite form."""
    return _dashboard()


def _invite_base(svc) -> str:
    """Where invite links point: PUBLIC_URL's host, else the host serving this page."""
    try:
        return invites.public_base(svc.config)
    except invites.InviteError:
        return request.host_url.rstrip("/")


def issue_invite(svc, rider_id: int, hours: int) -> str:
    """A signed invite URL for a rider, on PUBLIC_URL's host (else the host serving this page)."""
    base = _invite_base(svc)
    try:
        return invites.connect_url(base, invites.issue(svc, rider_id, hours))
    except (invites.InviteError, invites.NoSecretKey) as exc:
        abort(400, f"No invite was made: {exc}.")


def _form_hours() -> int:
    """The invite's validity from the form, in whole hours (400 unless 1 to MAX_INVITE_HOURS)."""
    hours = request.form.get("hours", "72")
    if not (hours.isascii() and hours.isdigit()) or not 0 < int(hours) <= MAX_INVITE_HOURS:
        abort(400, f"Choose a validity between 1 and {MAX_INVITE_HOURS} hours.")
    return int(hours)


@bp.post("/admin/invites")
def create_invite():
    """Issue an invite link for an existing rider and show it."""
    svc = current_services()
    rider_id, hours = request.form.get("rider_id", ""), request.form.get("hours", "72")
    if not rider_id.isdigit() or not hours.isdigit() or not 0 < int(hours) <= MAX_INVITE_HOURS:
        abort(400, f"Choose a rider and a validity between 1 and {MAX_INVITE_HOURS} hours.")
    with svc.engine.connect() as conn:
        if models.get_rider(conn, int(rider_id)) is None:
            abort(400, f"There is no rider {rider_id}.")
    return _dashboard(invite_url=issue_invite(svc, int(rider_id), int(hours)))


@bp.post("/admin/invites/new")
def create_rider_invite():
    """Create a rider with the name given and show an invite link that connects them."""
    svc = current_services()
    hours = _form_hours()
    base = _invite_base(svc)
    try:
        _, token = invites.issue_new(svc, request.form.get("name", ""), hours)
    except (invites.InviteError, invites.NoSecretKey) as exc:
        abort(400, f"No invite was made: {exc}.")
    return _dashboard(invite_url=invites.connect_url(base, token))
