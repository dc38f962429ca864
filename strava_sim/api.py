"""Strava's API views: athlete activities (rate limited) and the push subscription."""

from __future__ import annotations

from datetime import UTC, datetime

import flask

from strava_sim.push import callback_echoes
from strava_sim.records import Grant
from strava_sim.wire import (
    already_exists,
    bad_client,
    bad_request,
    bearer_token,
    error,
    int_arg,
    int_or,
    iso,
    unauthorized,
)

WINDOW = 15 * 60
DAY = 24 * 60 * 60
MAX_PER_PAGE = 200
MAX_CALLBACK_URL = 255


class ApiViews:
    """The /api/v3 endpoints; mixed into StravaSim over its World state, limits and counters."""

    def _list_view(self):
        return self._athlete_call(self._list_activities)

    def _detail_view(self, activity_id: str):
        return self._athlete_call(self._get_activity, activity_id)

    def _athlete_call(self, handler, *args):
        """Count the call against both buckets, then answer it with Strava's headers."""
        now = self.clock.now()
        window, day = now - now % WINDOW, now - now % DAY
        with self._lock:
            self._usage_window[window] += 1
            self._usage_day[day] += 1
            self._window_log[window] += 1
            used = (self._usage_window[window], self._usage_day[day])
            response = flask.make_response(self._gated_call(used, handler, *args))
        usage = "{},{}".format(*used)
        response.headers["X-RateLimit-Limit"] = "{},{}".format(*self.limits)
        response.headers["X-RateLimit-Usage"] = usage
        response.headers["X-ReadRateLimit-Limit"] = "{},{}".format(*self.read_limits)
        response.headers["X-ReadRateLimit-Usage"] = usage
        return response

    def _gated_call(self, used: tuple[int, int], handler, *args):
        # Every athlete call here is a read, so both buckets hold the same counts.
        caps = [min(pair) for pair in zip(self.limits, self.read_limits, strict=True)]
        if used[0] > caps[0] or used[1] > caps[1]:
            self.rate_limited += 1
            return error(429, "Rate Limit Exceeded", "Application", "rate limit", "exceeded")
        if self.faults.error_rate and self._rng.random() < self.faults.error_rate:
            return flask.jsonify(message="Internal Server Error"), 500
        grant = self._grant_for_access(bearer_token(flask.request) or "")
        if grant is None:
            return unauthorized()
        if not grant.can_read:
            return error(
                401, "Authorization Error", "AccessToken", "activity:read_permission", "missing"
            )
        return handler(grant, *args)

    def _list_activities(self, grant: Grant):
        args = flask.request.args
        try:
            before, after = int_arg(args, "before"), int_arg(args, "after")
            page = int_arg(args, "page", 1, minimum=1)
            per_page = min(int_arg(args, "per_page", 30, minimum=1), MAX_PER_PAGE)
        except ValueError as exc:
            return bad_request("Activity", str(exc))
        chosen = [
            a
            for a in self._activities.values()
            if a.athlete_id == grant.athlete_id
            and (after is None or a.epoch > after)
            and (before is None or a.epoch < before)
        ]
        chosen.sort(key=lambda a: (a.epoch, a.id), reverse=after is None)
        page_items = chosen[(page - 1) * per_page : page * per_page]
        # Strava filters for privacy after paging, so a page can be short without being the last.
        return flask.jsonify([a.summary() for a in page_items if grant.sees(a)])

    def _get_activity(self, grant: Grant, activity_id: str):
        activity = self._activities.get(int_or(activity_id, None))
        if (
            activity is None
            or activity.athlete_id != grant.athlete_id
            or not grant.sees(activity)
            or self.clock.now() - activity.created_at < self.faults.not_found_after_create
        ):
            return error(404, "Record Not Found", "Activity", "id", "invalid")
        return flask.jsonify(activity.detail())

    def _subscribe_view(self):
        values = flask.request.values
        if not self._client_ok(values):
            return bad_client()
        callback_url = values.get("callback_url", "")
        verify_token = values.get("verify_token", "")
        with self._lock:
            if self.subscription is not None:
                return already_exists()
            challenge = self._hex(16)
        if not callback_url or len(callback_url) > MAX_CALLBACK_URL:
            return bad_request("PushSubscription", "callback_url")
        if not verify_token:
            return bad_request("PushSubscription", "verify_token")
        # Validated outside the lock: the callback may be served by this very process.
        if not callback_echoes(callback_url, challenge, verify_token):
            return bad_request(
                "PushSubscription", "callback url", "GET to callback URL does not return 200"
            )
        with self._lock:
            if self.subscription is not None:
                return already_exists()
            created = iso(datetime.fromtimestamp(self.clock.now(), UTC))
            self.subscription = {
                "id": 100_000 + self._rng.randrange(900_000),
                "resource_state": 2,
                "application_id": int_or(self.client_id, self.client_id),
                "callback_url": callback_url,
                "created_at": created,
                "updated_at": created,
            }
            return flask.jsonify(id=self.subscription["id"]), 201

    def _subscriptions_view(self):
        if not self._client_ok(flask.request.values):
            return bad_client()
        with self._lock:
            return flask.jsonify([dict(self.subscription)] if self.subscription else [])

    def _unsubscribe_view(self, sub_id: str):
        if not self._client_ok(flask.request.values):
            return bad_client()
        with self._lock:
            if self.subscription is None or str(self.subscription["id"]) != sub_id:
                return error(404, "Record Not Found", "PushSubscription", "id", "invalid")
            self.subscription = None
        return "", 204
