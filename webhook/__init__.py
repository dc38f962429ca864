"""Strava's push endpoint: the validation GET and the event POST.

`parse_event` is pure: it turns a decoded JSON body into a `StravaEvent` or raises `BadEvent`
naming the problem. The view stores the event (the durable inbox) before it answers, then queues
the work; Strava gets its 200 well inside its 2-second limit and the fetch happens on a worker.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import asdict, dataclass

import redis
from flask import Blueprint, abort, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

import models
from jobs import fetch, queueing
from web.extension import current_services

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)

MAX_BODY = 16 * 1024
MAX_ID = 2**63 - 1  # ids are stored as signed 64-bit integers
MAX_DEPTH = 8  # Strava's events are two levels deep; anything far deeper is not an event
ACTIVITY_ASPECTS = ("create", "update", "delete")


class BadEvent(ValueError):
    """The body is not a Strava event."""


@dataclass(frozen=True)
class StravaEvent:
    """One push event, typed."""

    object_type: str
    object_id: int
    aspect_type: str
    owner_id: int
    subscription_id: int
    event_time: int
    updates: dict


def _integer(payload: dict, name: str) -> int:
    if name not in payload:
        raise BadEvent(f"{name} is missing")
    value = payload[name]
    # bool is an int in Python, but true/false is not an id.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadEvent(f"{name} must be a non-negative integer, got {_short(value)}")
    if value > MAX_ID:
        raise BadEvent(f"{name} is too large: ids must fit a signed 64-bit integer")
    return value


def _short(value) -> str:
    """A value's repr for an error message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _storable(text: str) -> bool:
    """Whether a string survives every database: no NUL byte, no lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_values(payload) -> None:
    """Refuse bodies nested too deeply or holding strings no database can store (keys too)."""
    stack = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadEvent(f"the body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((k, depth) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str) and not _storable(value):
            raise BadEvent("strings must not hold NUL bytes or lone surrogates")


def _text(payload: dict, name: str) -> str:
    if name not in payload:
        raise BadEvent(f"{name} is missing")
    value = payload[name]
    if not isinstance(value, str) or not value.strip():
        raise BadEvent(f"{name} must be a non-empty string, got {_short(value)}")
    return value


def parse_event(payload) -> StravaEvent:
    """Check a decoded webhook body and return it as a StravaEvent, or raise BadEvent."""
    if not isinstance(payload, dict):
        raise BadEvent("the body must be a JSON object")
    _check_values(payload)
    # Strava always sends `updates`; were it ever left out we would rather keep the event.
    updates = payload.get("updates", {})
    if not isinstance(updates, dict):
        raise BadEvent(f"updates must be an object, got {_short(updates)}")
    return StravaEvent(
        object_type=_text(payload, "object_type"),
        object_id=_integer(payload, "object_id"),
        aspect_type=_text(payload, "aspect_type"),
        owner_id=_integer(payload, "owner_id"),
        subscription_id=_integer(payload, "subscription_id"),
        event_time=_integer(payload, "event_time"),
        updates=updates,
    )


def unhandled_reason(event: StravaEvent) -> str | None:
    """Why we do nothing with a well-formed event, or None when we handle it."""
    if event.object_type == "activity":
        if event.aspect_type in ACTIVITY_ASPECTS:
            return None
        return f"activity aspect_type {event.aspect_type!r} is not one we handle"
    if event.object_type == "athlete":
        if event.aspect_type != "update" or str(event.updates.get("authorized")) != "false":
            return "athlete events other than a deauthorization carry nothing we store"
        if event.object_id != event.owner_id:
            # Strava sends an athlete's deauthorization about that athlete: this one is made up,
            # and a check of its owner, repeated by every recovery pass, would cost reads for days.
            return f"deauthorization of athlete {event.object_id} sent for owner {event.owner_id}"
        return None
    return f"object_type {event.object_type!r} is not one we handle"


def _error(message: str, status: int):
    return jsonify(error=message), status


@bp.get("/api/strava/webhook")
def validate_subscription():
    """Answer Strava's subscription validation with the challenge, if the verify token matches."""
    expected = current_services().settings.strava_verify_token
    given = request.args.get("hub.verify_token", "")
    challenge = request.args.get("hub.challenge")
    if (
        not expected  # fail closed: no configured token, no validation
        or request.args.get("hub.mode") != "subscribe"
        or challenge is None
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        return _error("subscription validation refused", 403)
    return jsonify({"hub.challenge": challenge})


@bp.post("/api/strava/webhook")
def receive_event():
    """Store a pushed event, queue its work, and answer within Strava's 2 seconds."""
    try:
        event = parse_event(_decode(_read_body()))
    except BadEvent as exc:
        return _error(f"not a Strava event: {exc}", 400)
    svc = current_services()
    try:
        ours = svc.subscription_id()
        if ours is not None and event.subscription_id != ours:
            return _error(f"subscription {event.subscription_id} is not ours", 403)
        fields = asdict(event)
        # One statement (the connection check and the insert), committed on its own: no BEGIN.
        with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            job_id = queueing.new_job_id(fields)
            unhandled = unhandled_reason(event)
            stored = models.store_event(conn, fields, unhandled, job_id, now=svc.now())
            event_id, status, reason = stored
    except SQLAlchemyError:
        log.exception("could not store a webhook event")
        return _error("could not store the event; please retry", 503)
    if status is None:
        return jsonify(status="duplicate")
    if status == "ignored":
        return jsonify(status="ignored", reason=reason)
    _queue(svc, event_id, fields, job_id)
    return jsonify(status="queued")


def _read_body() -> bytes:
    """The request body; 413 when it is over MAX_BODY, announced or not (chunked)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        abort(413)
    stream, chunks, size = request.stream, [], 0
    while size <= MAX_BODY:
        chunk = stream.read(MAX_BODY + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_BODY:
        abort(413)
    return b"".join(chunks)


def _decode(body: bytes):
    """The body's JSON, or BadEvent naming why it is not JSON we can read."""
    try:
        return json.loads(body)
    except RecursionError:
        raise BadEvent(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError):
        raise BadEvent("the body is not valid JSON") from None


def _queue(svc, event_id: int, fields: dict, job_id: str) -> None:
    """Queue the event's work; with Redis down the row goes back to pending for the workers."""
    try:
        fetch.queue_stored_event(svc, event_id, fields, job_id)
    except redis.RedisError as exc:
        log.warning("event %s stored but not queued (%s); a worker will queue it", event_id, exc)
        try:
            with svc.engine.begin() as conn:
                models.mark_pending(conn, event_id)
        except SQLAlchemyError:
            # Left `queued` without a job: the recovery pass re-queues such events too.
            log.warning("event %s could not be marked pending", event_id)
    except SQLAlchemyError as exc:
        # Queued, its job not recorded: the recovery pass finds the waiting job and records it.
        log.warning("event %s queued but its job not recorded (%s)", event_id, exc)
