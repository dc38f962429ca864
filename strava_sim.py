"""A stateful simulator of the parts of Strava strava-sync uses, served over loopback.

It speaks Strava's OAuth, activity and push-subscription API with Strava's field names, error
bodies, rate-limit headers and quirks (see STRAVA.md), counts every request it receives so tests
can assert on Strava's side of the conversation, and pushes webhook events on demand. It is
deterministic given a seed, and it only ever calls back to loopback addresses.
"""

from __future__ import annotations

import collections
import hmac
import random
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

import flask
import requests
from werkzeug.serving import WSGIRequestHandler, make_server

API = "/api/v3"
WINDOW = 15 * 60
DAY = 24 * 60 * 60
TOKEN_LIFETIME = 6 * 60 * 60
REFRESH_MARGIN = 60 * 60
CALLBACK_TIMEOUT = 2
DELIVERY_ATTEMPTS = 3
MAX_PER_PAGE = 200
MAX_CALLBACK_URL = 255
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SCOPES = frozenset(
    {"read", "read_all", "profile:read_all", "profile:write"}
    | {"activity:read", "activity:read_all", "activity:write"}
)
# Strava still fills the deprecated `type` with the older, coarser value for newer sport types.
_LEGACY_TYPES = {"GravelRide": "Ride", "MountainBikeRide": "Ride", "TrailRun": "Run"}
_ZONES = {  # UTC offset in minutes -> a representative zone, as Strava names it
    0: "UTC",
    60: "Europe/Paris",
    120: "Europe/Athens",
    330: "Asia/Kolkata",
    480: "Asia/Shanghai",
    540: "Asia/Tokyo",
    600: "Australia/Sydney",
    -300: "America/New_York",
    -360: "America/Chicago",
    -480: "America/Los_Angeles",
}
_EVENT_UPDATES = {"name": "title", "sport_type": "type", "private": "private"}


def _ticked_scope(requested: str, ticked) -> str | None:
    """What one requested scope becomes on the consent page, given what the athlete left ticked."""
    if ticked is None or requested in ticked:
        return requested
    # Strava asks about private activities separately: unticking them leaves activity:read.
    if requested == "activity:read_all" and "activity:read" in ticked:
        return "activity:read"
    return None


class SimClock:
    """A clock the simulator (and tests) share; real time unless driven."""

    def __init__(self, start: float | None = None):
        self._frozen = start
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current sim time, epoch seconds."""
        with self._lock:
            return self._frozen if self._frozen is not None else time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward (a frozen clock stays frozen at the new time)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            if self._frozen is not None:
                self._frozen += seconds
            else:
                self._offset += seconds


@dataclass
class Faults:
    """Misbehaviour to inject; rates are shares in [0, 1]."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    shuffle: bool = False
    not_found_after_create: float = 0.0
    error_rate: float = 0.0


@dataclass
class _Activity:
    id: int
    athlete_id: int
    name: str
    sport_type: str
    distance: float
    moving_time: int
    elapsed_time: int
    total_elevation_gain: float
    start_date: datetime
    utc_offset: float
    private: bool
    created_at: float
    manual: bool = False
    trainer: bool = False
    commute: bool = False
    description: str | None = None

    @property
    def epoch(self) -> float:
        return self.start_date.timestamp()

    def summary(self) -> dict:
        return {
            "resource_state": 2,
            "athlete": {"id": self.athlete_id, "resource_state": 1},
            "name": self.name,
            "distance": float(self.distance),
            "moving_time": self.moving_time,
            "elapsed_time": self.elapsed_time,
            "total_elevation_gain": float(self.total_elevation_gain),
            "type": _LEGACY_TYPES.get(self.sport_type, self.sport_type),
            "sport_type": self.sport_type,
            "id": self.id,
            "start_date": _iso(self.start_date),
            "start_date_local": _iso(self.start_date + timedelta(seconds=self.utc_offset)),
            "timezone": _timezone_name(self.utc_offset),
            "utc_offset": float(self.utc_offset),
            "private": self.private,
            "visibility": "only_me" if self.private else "everyone",
            "manual": self.manual,
            "trainer": self.trainer,
            "commute": self.commute,
        }

    def detail(self) -> dict:
        return {**self.summary(), "resource_state": 3, "description": self.description}


_UPDATABLE = {f.name for f in fields(_Activity)} - {"id", "athlete_id", "utc_offset", "created_at"}


@dataclass
class _Grant:
    athlete_id: int
    scope: tuple[str, ...]
    access_token: str
    refresh_token: str
    expires_at: int
    old_access: dict[str, int] = field(default_factory=dict)  # superseded token -> its expiry

    @property
    def can_read(self) -> bool:
        return "activity:read" in self.scope or self.can_read_private

    @property
    def can_read_private(self) -> bool:
        return "activity:read_all" in self.scope

    def sees(self, activity: _Activity) -> bool:
        return self.can_read and (self.can_read_private or not activity.private)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


class StravaSim:
    """Strava's OAuth, activity and webhook API, stateful and deterministic, on loopback."""

    def __init__(
        self,
        *,
        client_id: str = "4242",
        client_secret: str = "sim-client-secret",  # noqa: S107
        limits=(200, 2000),
        read_limits=(100, 1000),
        clock: SimClock | None = None,
        seed: int = 0,
        faults: Faults | None = None,
    ):
        self.client_id = client_id
        self.client_secret = client_secret
        self.limits = tuple(limits)
        self.read_limits = tuple(read_limits)
        self.clock = clock or SimClock()
        self.faults = faults or Faults()
        self.inactive = False
        self.subscription: dict | None = None
        self.outbox: list[dict] = []
        self.requests: collections.Counter = collections.Counter()
        self.requests_by_activity: collections.Counter = collections.Counter()
        self.rate_limited = 0
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._athletes: dict[int, dict] = {}
        self._activities: dict[int, _Activity] = {}
        self._grants: dict[int, _Grant] = {}
        self._codes: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._login: tuple[int, frozenset[str] | None, bool] | None = None
        self._last_athlete_id = 100_000
        self._last_activity_id = 10_000_000_000
        self._usage_window: collections.Counter = collections.Counter()
        self._usage_day: collections.Counter = collections.Counter()
        self._window_log: collections.Counter = collections.Counter()
        self._server = None
        self._thread: threading.Thread | None = None
        self._labels: dict[str, str] = {}
        self.app = self._build_app()

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> StravaSim:
        """Serve on 127.0.0.1 on an ephemeral port, in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._server = make_server(
            "127.0.0.1", 0, self.app, threaded=True, request_handler=_QuietHandler
        )
        # A short poll keeps stop() quick: shutdown() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="strava-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> StravaSim:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The root URL, e.g. http://127.0.0.1:PORT."""
        if self._server is None:
            raise RuntimeError("start() the simulator first")
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def api_url(self) -> str:
        """What STRAVA_API_URL should be."""
        return self.base_url + "/api/v3"

    @property
    def oauth_url(self) -> str:
        """What STRAVA_OAUTH_URL should be."""
        return self.base_url + "/oauth"

    # -- the world -------------------------------------------------------------------------

    def add_athlete(self, firstname: str = "Sim", lastname: str = "Rider") -> int:
        """Create an athlete and return its id."""
        with self._lock:
            self._last_athlete_id += self._rng.randint(1, 999)
            athlete_id = self._last_athlete_id
            self._athletes[athlete_id] = {"firstname": firstname, "lastname": lastname}
            return athlete_id

    def grant(self, athlete_id: int, scope: str = "read,activity:read_all") -> dict:
        """Authorize the app for an athlete without the HTTP flow; returns the /oauth/token JSON."""
        with self._lock:
            self._require_athlete(athlete_id)
            return self._authorize_athlete(athlete_id, _parse_scope(scope))

    def login_as(self, athlete_id: int, scope: str | None = None, deny: bool = False) -> None:
        """Act for this athlete on each following GET /oauth/authorize, ticking `scope`."""
        with self._lock:
            self._require_athlete(athlete_id)
            ticked = None if scope is None else frozenset(_parse_scope(scope))
            self._login = (athlete_id, ticked, deny)

    def create_activity(
        self,
        athlete_id: int,
        *,
        name: str = "Morning Ride",
        sport_type: str = "Ride",
        distance: float = 30000.0,
        moving_time: int = 3600,
        elapsed_time: int | None = None,
        total_elevation_gain: float = 250.0,
        start_date: datetime | None = None,
        utc_offset_hours: float = 0,
        private: bool = False,
        manual: bool = False,
        trainer: bool = False,
        commute: bool = False,
        event: bool = True,
    ) -> int:
        """Record an activity for an athlete and (by default) queue its create event."""
        with self._lock:
            self._require_athlete(athlete_id)
            now = self.clock.now()
            if start_date is None:
                start_date = datetime.fromtimestamp(now - moving_time, UTC)
            self._last_activity_id += self._rng.randint(1, 9_999)
            activity = _Activity(
                id=self._last_activity_id,
                athlete_id=athlete_id,
                name=name,
                sport_type=sport_type,
                distance=float(distance),
                moving_time=int(moving_time),
                elapsed_time=int(moving_time if elapsed_time is None else elapsed_time),
                total_elevation_gain=float(total_elevation_gain),
                start_date=_utc(start_date),
                utc_offset=round(utc_offset_hours * 3600),
                private=private,
                created_at=now,
                manual=manual,
                trainer=trainer,
                commute=commute,
            )
            self._activities[activity.id] = activity
            if event and self._watching(activity):
                self._notify(activity, "create")
            return activity.id

    def update_activity(self, activity_id: int, *, event: bool = True, **changes) -> None:
        """Edit an activity; the event carries Strava's `updates` (title, type, private)."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)}; updatable: {sorted(_UPDATABLE)}")
        with self._lock:
            activity = self._activities[activity_id]
            was_visible = self._watching(activity)
            for key, value in changes.items():
                setattr(activity, key, _utc(value) if key == "start_date" else value)
            if not event:
                return
            # Without activity:read_all an app sees turning "Only You" as a delete and back as a
            # create, since it is never told about what it cannot read.
            if was_visible and self._watching(activity):
                self._notify(activity, "update", _event_updates(changes))
            elif was_visible:
                self._notify(activity, "delete")
            elif self._watching(activity):
                self._notify(activity, "create")

    def delete_activity(self, activity_id: int, *, event: bool = True) -> None:
        """Delete an activity and (by default) queue its delete event."""
        with self._lock:
            activity = self._activities[activity_id]
            del self._activities[activity_id]
            if event and self._watching(activity):
                self._notify(activity, "delete")

    def revoke(self, athlete_id: int, *, event: bool = True) -> None:
        """The athlete revokes the app: its tokens stop working; an athlete event is queued."""
        with self._lock:
            self._require_athlete(athlete_id)
            if self._grants.pop(athlete_id, None) is None:
                return
            if event:
                self._queue("athlete", athlete_id, "update", athlete_id, {"authorized": "false"})

    def activities(self, athlete_id: int) -> list[dict]:
        """The truth: the athlete's current activities in detail, newest first, private included."""
        with self._lock:
            own = [a for a in self._activities.values() if a.athlete_id == athlete_id]
            return [a.detail() for a in sorted(own, key=lambda a: (a.epoch, a.id), reverse=True)]

    def queue_event(self, **event) -> None:
        """Put an arbitrary (e.g. forged) event in the outbox, as given."""
        with self._lock:
            self.outbox.append(dict(event))

    # -- webhook push ----------------------------------------------------------------------

    def deliver_events(self) -> dict:
        """POST every outbox event to the subscription's callback, applying the faults."""
        counts = dict.fromkeys(
            ("sent", "delivered", "dropped", "duplicated", "failed", "attempts"), 0
        )
        with self._lock:
            if self.subscription is None:
                return counts
            url = self.subscription["callback_url"]
            _require_loopback(url)
            batch = self._plan_delivery(counts, self.subscription["id"])
        # Sent without the lock: the receiver may call this simulator while handling an event.
        with requests.Session() as session:
            for payload in batch:
                delivered, attempts = _post_event(session, url, payload)
                counts["sent"] += 1
                counts["attempts"] += attempts
                counts["delivered" if delivered else "failed"] += 1
        return counts

    def _plan_delivery(self, counts: dict, subscription_id: int) -> list[dict]:
        batch, self.outbox = self.outbox, []
        planned, repeats = [], []
        for event in batch:
            if self.faults.drop_rate and self._rng.random() < self.faults.drop_rate:
                counts["dropped"] += 1
                continue
            payload = dict(event)
            if payload.get("subscription_id") is None:
                payload["subscription_id"] = subscription_id
            planned.append(payload)
            if self.faults.duplicate_rate and self._rng.random() < self.faults.duplicate_rate:
                counts["duplicated"] += 1
                repeats.append(dict(payload))
        planned += repeats  # a repeat comes later, as a retry would
        if self.faults.shuffle:
            self._rng.shuffle(planned)
        return planned

    # -- counters --------------------------------------------------------------------------

    def window_usage(self) -> dict[float, int]:
        """15-minute window start -> API requests counted in it (read bucket)."""
        with self._lock:
            return dict(sorted(self._window_log.items()))

    def max_window_usage(self) -> int:
        """The most API requests counted in any one 15-minute window."""
        with self._lock:
            return max(self._window_log.values(), default=0)

    def reset_counters(self) -> None:
        """Zero the observation counters (Strava's own rate-limit usage is left as it is)."""
        with self._lock:
            self.requests.clear()
            self.requests_by_activity.clear()
            self.rate_limited = 0
            self._window_log.clear()

    # -- internals: world ------------------------------------------------------------------

    def _require_athlete(self, athlete_id: int) -> None:
        if athlete_id not in self._athletes:
            raise KeyError(f"no athlete {athlete_id}")

    def _watching(self, activity: _Activity) -> bool:
        """Whether the app hears about this activity: Strava only tells it what it can read."""
        grant = self._grants.get(activity.athlete_id)
        return grant is not None and grant.sees(activity)

    def _notify(self, activity: _Activity, aspect_type: str, updates: dict | None = None) -> None:
        self._queue("activity", activity.id, aspect_type, activity.athlete_id, updates or {})

    def _queue(self, object_type, object_id, aspect_type, owner_id, updates) -> None:
        self.outbox.append(
            {
                "aspect_type": aspect_type,
                "event_time": int(self.clock.now()),
                "object_id": object_id,
                "object_type": object_type,
                "owner_id": owner_id,
                "subscription_id": self.subscription["id"] if self.subscription else None,
                "updates": updates,
            }
        )

    def _hex(self, nbytes: int) -> str:
        return f"{self._rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def _authorize_athlete(self, athlete_id: int, scope: tuple[str, ...]) -> dict:
        grant = _Grant(
            athlete_id, scope, self._hex(20), self._hex(20), int(self.clock.now()) + TOKEN_LIFETIME
        )
        self._grants[athlete_id] = grant
        return self._token_json(grant, athlete=True)

    def _token_json(self, grant: _Grant, *, athlete: bool) -> dict:
        body = {
            "token_type": "Bearer",
            "expires_at": grant.expires_at,
            "expires_in": max(0, int(grant.expires_at - self.clock.now())),
            "refresh_token": grant.refresh_token,
            "access_token": grant.access_token,
        }
        if athlete:
            names = self._athletes[grant.athlete_id]
            body["athlete"] = {"id": grant.athlete_id, "resource_state": 2, **names}
        return body

    def _grant_for_access(self, token: str) -> _Grant | None:
        now = self.clock.now()
        for grant in self._grants.values():
            expires_at = (
                grant.expires_at
                if _same(grant.access_token, token)
                else grant.old_access.get(token)
            )
            if expires_at is not None:
                return grant if expires_at > now else None
        return None

    # -- internals: HTTP -------------------------------------------------------------------

    def _build_app(self) -> flask.Flask:
        app = flask.Flask(__name__)
        app.json.sort_keys = False
        routes = [  # (what the request counters call it, Flask rule, view)
            ("GET /oauth/authorize", "/oauth/authorize", self._authorize_view),
            ("POST /oauth/token", "/oauth/token", self._token_view),
            ("POST /oauth/deauthorize", "/oauth/deauthorize", self._deauthorize_view),
            ("GET /athlete/activities", API + "/athlete/activities", self._list_view),
            ("GET /activities/{id}", API + "/activities/<activity_id>", self._detail_view),
            ("POST /push_subscriptions", API + "/push_subscriptions", self._subscribe_view),
            ("GET /push_subscriptions", API + "/push_subscriptions", self._subscriptions_view),
            (
                "DELETE /push_subscriptions/{id}",
                API + "/push_subscriptions/<sub_id>",
                self._unsubscribe_view,
            ),
        ]
        for label, rule, view in routes:
            self._labels[view.__name__] = label
            app.add_url_rule(rule, view.__name__, view, methods=[label.split()[0]])
        app.before_request(self._before_request)
        app.register_error_handler(
            404, lambda e: _error(404, "Record Not Found", "resource", "path", "invalid")
        )
        app.register_error_handler(
            405, lambda e: _error(405, "Method Not Allowed", "resource", "method", "invalid")
        )
        return app

    def _before_request(self):
        request = flask.request
        label = self._labels.get(request.endpoint, f"{request.method} {request.path}")
        with self._lock:
            self.requests[label] += 1
            if request.endpoint == "_detail_view":
                activity_id = request.view_args["activity_id"]
                self.requests_by_activity[_int_or(activity_id, activity_id)] += 1
            if self.inactive:
                return _error(403, "Forbidden", "Application", "Status", "Inactive")
        return None

    def _client_ok(self, values) -> bool:
        return _same(values.get("client_id", ""), self.client_id) and _same(
            values.get("client_secret", ""), self.client_secret
        )

    def _authorize_view(self):
        args = flask.request.args
        if args.get("client_id") != self.client_id:
            return _bad_request("Application", "client_id")
        if not args.get("redirect_uri"):
            return _bad_request("Application", "redirect_uri")
        if args.get("response_type") != "code":
            return _bad_request("Application", "response_type")
        requested = _parse_scope(args.get("scope") or "read")
        if not requested or not set(requested) <= SCOPES:
            return _bad_request("Authorize", "scope")
        with self._lock:
            if self._login is None:
                return _bad_request("Athlete", "login", "call StravaSim.login_as() first")
            athlete_id, ticked, deny = self._login
            if deny:
                params = {"state": args.get("state", ""), "error": "access_denied"}
            else:
                granted = tuple(_ticked_scope(s, ticked) for s in requested)
                granted = tuple(s for s in granted if s)
                code = self._hex(20)
                self._codes[code] = (athlete_id, granted)
                params = {"state": args.get("state", ""), "code": code, "scope": ",".join(granted)}
        return flask.redirect(_with_query(args["redirect_uri"], params), 302)

    def _token_view(self):
        values = flask.request.values
        if not self._client_ok(values):
            return _bad_client()
        grant_type = values.get("grant_type")
        with self._lock:
            if grant_type == "authorization_code":
                entry = self._codes.pop(values.get("code", ""), None)
                if entry is None:
                    return _bad_request("AuthorizationCode", "code")
                return flask.jsonify(self._authorize_athlete(*entry))
            if grant_type == "refresh_token":
                return self._refresh(values.get("refresh_token", ""))
        return _bad_request("Application", "grant_type")

    def _refresh(self, refresh_token: str):
        grant = next(
            (g for g in self._grants.values() if _same(g.refresh_token, refresh_token)), None
        )
        if grant is None or not refresh_token:
            return _bad_request("RefreshToken", "refresh_token")
        now = self.clock.now()
        if grant.expires_at - now <= REFRESH_MARGIN:
            # The old refresh token dies at once; the old access token lives out its six hours.
            grant.old_access = {t: e for t, e in grant.old_access.items() if e > now}
            grant.old_access[grant.access_token] = grant.expires_at
            grant.access_token, grant.refresh_token = self._hex(20), self._hex(20)
            grant.expires_at = int(now) + TOKEN_LIFETIME
        return flask.jsonify(self._token_json(grant, athlete=False))

    def _deauthorize_view(self):
        token = flask.request.values.get("access_token") or _bearer(flask.request)
        with self._lock:
            grant = self._grant_for_access(token or "")
            if grant is None:
                return _unauthorized()
            self.revoke(grant.athlete_id)
        return flask.jsonify(access_token=token)

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
            return _error(429, "Rate Limit Exceeded", "Application", "rate limit", "exceeded")
        if self.faults.error_rate and self._rng.random() < self.faults.error_rate:
            return flask.jsonify(message="Internal Server Error"), 500
        grant = self._grant_for_access(_bearer(flask.request) or "")
        if grant is None:
            return _unauthorized()
        if not grant.can_read:
            return _error(
                401, "Authorization Error", "AccessToken", "activity:read_permission", "missing"
            )
        return handler(grant, *args)

    def _list_activities(self, grant: _Grant):
        args = flask.request.args
        try:
            before, after = _int_arg(args, "before"), _int_arg(args, "after")
            page = _int_arg(args, "page", 1, minimum=1)
            per_page = min(_int_arg(args, "per_page", 30, minimum=1), MAX_PER_PAGE)
        except ValueError as exc:
            return _bad_request("Activity", str(exc))
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

    def _get_activity(self, grant: _Grant, activity_id: str):
        activity = self._activities.get(_int_or(activity_id, None))
        if (
            activity is None
            or activity.athlete_id != grant.athlete_id
            or not grant.sees(activity)
            or self.clock.now() - activity.created_at < self.faults.not_found_after_create
        ):
            return _error(404, "Record Not Found", "Activity", "id", "invalid")
        return flask.jsonify(activity.detail())

    def _subscribe_view(self):
        values = flask.request.values
        if not self._client_ok(values):
            return _bad_client()
        callback_url = values.get("callback_url", "")
        verify_token = values.get("verify_token", "")
        with self._lock:
            if self.subscription is not None:
                return _already_exists()
            challenge = self._hex(16)
        if not callback_url or len(callback_url) > MAX_CALLBACK_URL:
            return _bad_request("PushSubscription", "callback_url")
        if not verify_token:
            return _bad_request("PushSubscription", "verify_token")
        # Validated outside the lock: the callback may be served by this very process.
        if not _callback_echoes(callback_url, challenge, verify_token):
            return _bad_request(
                "PushSubscription", "callback url", "GET to callback URL does not return 200"
            )
        with self._lock:
            if self.subscription is not None:
                return _already_exists()
            created = _iso(datetime.fromtimestamp(self.clock.now(), UTC))
            self.subscription = {
                "id": 100_000 + self._rng.randrange(900_000),
                "resource_state": 2,
                "application_id": _int_or(self.client_id, self.client_id),
                "callback_url": callback_url,
                "created_at": created,
                "updated_at": created,
            }
            return flask.jsonify(id=self.subscription["id"]), 201

    def _subscriptions_view(self):
        if not self._client_ok(flask.request.values):
            return _bad_client()
        with self._lock:
            return flask.jsonify([dict(self.subscription)] if self.subscription else [])

    def _unsubscribe_view(self, sub_id: str):
        if not self._client_ok(flask.request.values):
            return _bad_client()
        with self._lock:
            if self.subscription is None or str(self.subscription["id"]) != sub_id:
                return _error(404, "Record Not Found", "PushSubscription", "id", "invalid")
            self.subscription = None
        return "", 204


# -- helpers ------------------------------------------------------------------------------------


def _error(status: int, message: str, resource: str, field_name: str, code: str):
    errors = [{"resource": resource, "field": field_name, "code": code}]
    return flask.jsonify(message=message, errors=errors), status


def _bad_request(resource: str, field_name: str, code: str = "invalid"):
    return _error(400, "Bad Request", resource, field_name, code)


def _bad_client():
    return _error(401, "Bad Request", "Application", "client_id", "invalid")


def _unauthorized():
    return _error(401, "Authorization Error", "Athlete", "access_token", "invalid")


def _already_exists():
    return _bad_request("PushSubscription", "", "already exists")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _bearer(request) -> str | None:
    """The token from `Authorization: Bearer`; Strava refuses tokens in the query string."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def _int_or(value: str, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _int_arg(args, name: str, default: int | None = None, *, minimum: int | None = None):
    raw = args.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(name) from None
    if minimum is not None and value < minimum:
        raise ValueError(name)
    return value


def _parse_scope(scope: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.strip() for s in scope.replace(" ", ",").split(",") if s.strip()))


def _event_updates(changes: dict) -> dict:
    """Strava's `updates`: title and type as given, private as the string "true" or "false"."""
    updates = {}
    for key, value in changes.items():
        if key in _EVENT_UPDATES:
            updates[_EVENT_UPDATES[key]] = str(value).lower() if key == "private" else value
    return updates


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _timezone_name(offset_seconds: float) -> str:
    minutes = round(offset_seconds / 60)
    hours, rest = divmod(abs(minutes), 60)
    sign = "+" if minutes >= 0 else "-"
    # Etc/GMT zone names invert the sign (POSIX): UTC+1 is Etc/GMT-1.
    fallback = f"Etc/GMT{-minutes // 60:+d}" if rest == 0 else "Etc/Unknown"
    return f"(GMT{sign}{hours:02d}:{rest:02d}) {_ZONES.get(minutes, fallback)}"


def _with_query(url: str, params: dict) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _require_loopback(url: str) -> None:
    if urlsplit(url).hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"the simulator only calls loopback addresses, not {url!r}")


def _callback_echoes(url: str, challenge: str, verify_token: str) -> bool:
    """Strava's validation GET: 200, JSON, the challenge echoed, within two seconds."""
    try:
        _require_loopback(url)
        params = {
            "hub.mode": "subscribe",
            "hub.challenge": challenge,
            "hub.verify_token": verify_token,
        }
        response = requests.get(url, params=params, timeout=CALLBACK_TIMEOUT)
        body = response.json()
    except (ValueError, requests.RequestException):
        return False
    return (
        response.status_code == 200
        and "application/json" in response.headers.get("Content-Type", "")
        and isinstance(body, dict)
        and body.get("hub.challenge") == challenge
    )


def _post_event(session: requests.Session, url: str, payload: dict) -> tuple[bool, int]:
    """One event, retried like Strava: anything but a 200 within 2 s, up to three attempts."""
    for attempt in range(1, DELIVERY_ATTEMPTS + 1):
        try:
            with session.post(url, json=payload, timeout=CALLBACK_TIMEOUT) as response:
                if response.status_code == 200:
                    return True, attempt
        except requests.RequestException:
            pass
    return False, DELIVERY_ATTEMPTS
