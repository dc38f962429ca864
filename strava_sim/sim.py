"""StravaSim: the world, its OAuth and API views and webhook push, served on loopback."""

from __future__ import annotations

import collections

import flask

from strava_sim.api import ApiViews
from strava_sim.clock import SimClock
from strava_sim.oauth import OAuthViews
from strava_sim.push import PushDelivery
from strava_sim.records import Faults
from strava_sim.serve import LoopbackServer
from strava_sim.wire import error, int_or
from strava_sim.world import World

API = "/api/v3"


class StravaSim(World, OAuthViews, ApiViews, PushDelivery):
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
        super().__init__(clock=clock, seed=seed, faults=faults)
        self.client_id = client_id
        self.client_secret = client_secret
        self.limits = tuple(limits)
        self.read_limits = tuple(read_limits)
        self.inactive = False
        self.requests: collections.Counter = collections.Counter()
        self.requests_by_activity: collections.Counter = collections.Counter()
        self.rate_limited = 0
        self._usage_window: collections.Counter = collections.Counter()
        self._usage_day: collections.Counter = collections.Counter()
        self._window_log: collections.Counter = collections.Counter()
        self._server: LoopbackServer | None = None
        self._labels: dict[str, str] = {}
        self.app = self._build_app()

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> StravaSim:
        """Serve on 127.0.0.1 on an ephemeral port, in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._server = LoopbackServer(self.app, name="strava-sim")
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is None:
            return
        self._server.close()
        self._server = None

    def __enter__(self) -> StravaSim:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The root URL, e.g. http://127.0.0.1:PORT."""
        if self._server is None:
            raise RuntimeError("start() the simulator first")
        return self._server.url

    @property
    def api_url(self) -> str:
        """What STRAVA_API_URL should be."""
        return self.base_url + API

    @property
    def oauth_url(self) -> str:
        """What STRAVA_OAUTH_URL should be."""
        return self.base_url + "/oauth"

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

    # -- HTTP ------------------------------------------------------------------------------

    def _build_app(self) -> flask.Flask:
        app = flask.Flask(__name__)
        app.json.sort_keys = False
        routes = [  # (what the request counters call it, Flask rule, view)
            ("GET /oauth/authorize", "/oauth/authorize", self._authorize_view),
            ("POST /oauth/token", "/oauth/token", self._token_view),
            ("POST /oauth/deauthorize", "/oauth/deauthorize", self._deauthorize_view),
            ("POST /oauth/revoke", "/oauth/revoke", self._revoke_view),
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
            404, lambda e: error(404, "Record Not Found", "resource", "path", "invalid")
        )
        app.register_error_handler(
            405, lambda e: error(405, "Method Not Allowed", "resource", "method", "invalid")
        )
        return app

    def _before_request(self):
        request = flask.request
        label = self._labels.get(request.endpoint, f"{request.method} {request.path}")
        with self._lock:
            self.requests[label] += 1
            if request.endpoint == "_detail_view":
                activity_id = request.view_args["activity_id"]
                self.requests_by_activity[int_or(activity_id, activity_id)] += 1
            if self.inactive:
                return error(403, "Forbidden", "Application", "Status", "Inactive")
        return None
