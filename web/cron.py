"""`/api/cron/*`: endpoints a scheduler (GitHub Actions) calls, behind the cron secret."""

from __future__ import annotations

import hmac

from flask import Blueprint, jsonify, request

from jobs import sweep
from jobs.status import collect_status
from web.extension import current_services

bp = Blueprint("cron", __name__)


def authorized(header: str | None, secret: str | None) -> bool:
    """Whether an Authorization header carries the configured cron secret (fails closed)."""
    if not secret or not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), secret.encode())


def refused():
    """401 unless the request carries the cron secret (None when it does)."""
    secret = current_services().settings.cron_secret
    if authorized(request.headers.get("Authorization"), secret):
        return None
    return jsonify(error="a valid cron bearer token is required"), 401


@bp.get("/api/cron/status")
def status():
    """Whether anything needs the club's attention: `strava status`'s warnings, for a workflow."""
    if answer := refused():
        return answer
    report = collect_status(current_services())
    summary = {k: report.get(k) for k in ("mode", "riders", "events_24h", "last_work_run")}
    return jsonify(healthy=not report["warnings"], warnings=report["warnings"], **summary)


@bp.post("/api/cron/reconcile")
def start_reconcile():
    """Plan tonight's sweep and queue its per-rider work."""
    if answer := refused():
        return answer
    svc = current_services()
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict):
        return jsonify(error="the body must be a JSON object"), 400
    dry_run, max_riders = body.get("dry_run", False), body.get("max_riders")
    if not isinstance(dry_run, bool):
        return jsonify(error="dry_run must be true or false"), 400
    if max_riders is not None and (
        isinstance(max_riders, bool) or not isinstance(max_riders, int) or max_riders < 0
    ):
        return jsonify(error="max_riders must be a non-negative integer"), 400
    summary = sweep.queue_sweep(svc, "cron", dry_run=dry_run, max_riders=max_riders)
    return jsonify(summary)
