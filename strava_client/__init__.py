"""The only code that speaks HTTP to Strava.

`StravaClient` wraps one `requests.Session`: a timeout on every call, the athlete's token only in
the `Authorization` header, every API request first taking a permit from the shared rate budget and
reporting Strava's rate-limit headers back to it. Strava's error answers become the exceptions
below, mapped in one place (`_raise_for`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import requests

TIMEOUT = (3.05, 20)  # (connect, read) seconds


class StravaError(Exception):
    """Strava refused or failed a request."""

    def __init__(self, message: str, status: int | None = None, errors: list | None = None):
        super().__init__(message)
        self.status = status
        self.errors = errors or []


class NotFound(StravaError):
    """The record does not exist, or the token may not see it (404)."""


class Unauthorized(StravaError):
    """The token or refresh token was refused: the athlete revoked access, or it is stale (401)."""


class RateLimited(StravaError):
    """Strava answered 429: a rate-limit window is spent."""


class ApplicationInactive(StravaError):
    """Strava's 403 for an application whose owner has no active subscription."""


class BadRequest(StravaError):
    """Strava refused the request's content (400), e.g. a push subscription it would not create."""


@dataclass(frozen=True)
class BucketUsage:
    """One bucket's limits and usage as Strava reported them: (15-minute, daily)."""

    limit_15min: int
    limit_day: int
    usage_15min: int
    usage_day: int


@dataclass(frozen=True)
class RateLimits:
    """Both buckets from one response; a bucket is None when its headers were absent or garbled.

    `retry_after` is Retry-After in seconds, when Strava sent it as a number.
    """

    overall: BucketUsage | None
    read: BucketUsage | None
    retry_after: int | None = None


def _pair(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    # isdigit() alone accepts '²' and other Unicode digits that int() refuses.
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _seconds(value: str | None) -> int | None:
    """Retry-After as delta-seconds; an HTTP date or anything odd is ignored (None)."""
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _bucket(headers: Mapping[str, str], prefix: str) -> BucketUsage | None:
    limit = _pair(headers.get(f"{prefix}-limit"))
    usage = _pair(headers.get(f"{prefix}-usage"))
    if limit is None or usage is None:
        return None
    return BucketUsage(limit[0], limit[1], usage[0], usage[1])


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimits:
    """Read X-RateLimit-* and X-ReadRateLimit-* (any casing, spaces allowed after the comma)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return RateLimits(
        overall=_bucket(lowered, "x-ratelimit"),
        read=_bucket(lowered, "x-readratelimit"),
        retry_after=_seconds(lowered.get("retry-after")),
    )


class Budget(Protocol):
    """What the client needs of the shared rate budget (see ratebudget.RateBudget)."""

    def take_permit(self, lane: str = "realtime") -> None: ...

    def record_response(self, status: int, rate_limits: RateLimits) -> None: ...


def _error_body(response: requests.Response) -> tuple[str, list]:
    try:
        body = response.json()
    except ValueError:
        return response.reason or "no body", []
    if not isinstance(body, dict):
        return str(body)[:200], []
    errors = body.get("errors") if isinstance(body.get("errors"), list) else []
    return str(body.get("message", "")), errors


def _describe(errors: list) -> str:
    return "; ".join(
        " ".join(str(e.get(k, "")) for k in ("resource", "field", "code")).strip()
        for e in errors
        if isinstance(e, dict)
    )


def _raise_for(response: requests.Response, what: str) -> None:
    """Turn a non-2xx answer into the matching StravaError; `what` names the call, never a token."""
    if response.ok:
        return
    status = response.status_code
    message, errors = _error_body(response)
    detail = _describe(errors)
    text = f"{what}: Strava answered {status} {message}" + (f" ({detail})" if detail else "")
    if status == 403 and any(e.get("code") == "Inactive" for e in errors if isinstance(e, dict)):
        raise ApplicationInactive(
            f"{what}: Strava says this application is inactive; nothing works until its owner "
            "renews the Strava subscription behind it",
            status,
            errors,
        )
    invalid_refresh = any(
        isinstance(e, dict) and e.get("resource") == "RefreshToken" for e in errors
    )
    cls = {401: Unauthorized, 404: NotFound, 429: RateLimited}.get(status)
    if cls is None and status == 400:
        cls = Unauthorized if invalid_refresh else BadRequest
    raise (cls or StravaError)(text, status, errors)


class Unreachable(StravaError):
    """Strava could not be reached, or its answer was cut off (a network error, no status)."""


def _where(url: str) -> str:
    """The host and path of a URL: never its query string, where credentials may travel."""
    parts = urlsplit(url)
    return f"{parts.hostname or ''}{parts.path}"


def _json(response: requests.Response, what: str):
    """The answer's JSON, or StravaError when Strava sent something else."""
    try:
        return response.json()
    except ValueError:
        raise StravaError(f"{what}: Strava answered something other than JSON") from None


class StravaClient:
    """Strava's API and OAuth endpoints, through one session and the shared rate budget."""

    def __init__(
        self,
        *,
        api_url: str,
        oauth_url: str,
        client_id: str | None,
        client_secret: str | None,
        budget: Budget | None = None,
        session: requests.Session | None = None,
        timeout=TIMEOUT,
    ):
        self.api_url = api_url.rstrip("/")
        self.oauth_url = oauth_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.budget = budget
        self._session = session
        self.timeout = timeout

    @property
    def session(self) -> requests.Session:
        """The HTTP session, made at the first call to Strava.

        `requests` loads only then: a serverless cold start that only stores a webhook event never
        pays for it.
        """
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    # -- athlete API (counted against the rate budget) --

    def get_activity(self, token: str, activity_id: int, lane: str = "realtime") -> dict:
        """One activity in detail; NotFound when it is gone or hidden from this token."""
        return self._api("GET", f"/activities/{int(activity_id)}", token, lane)

    def list_activities(
        self,
        token: str,
        *,
        after: int | None = None,
        before: int | None = None,
        page: int = 1,
        per_page: int = 200,
        lane: str = "bulk",
    ) -> list[dict]:
        """One page of the athlete's activity summaries between two epoch times."""
        params = {"page": page, "per_page": per_page}
        if after is not None:
            params["after"] = int(after)
        if before is not None:
            params["before"] = int(before)
        result = self._api("GET", "/athlete/activities", token, lane, params=params)
        if not isinstance(result, list):
            raise StravaError("list activities: Strava answered something other than a list")
        return result

    def _api(self, method: str, path: str, token: str, lane: str, params=None):
        if self.budget is not None:
            self.budget.take_permit(lane)
        what = f"{method} {path.split('?')[0]}"
        headers = {"Authorization": f"Bearer {token}"}
        response = self._send(what, method, self.api_url + path, params=params, headers=headers)
        if self.budget is not None:
            self.budget.record_response(response.status_code, parse_rate_limits(response.headers))
        _raise_for(response, what)
        return _json(response, what)

    def _send(self, what: str, method: str, url: str, **kwargs) -> requests.Response:
        """Make one request; a network error becomes Unreachable naming the call, host and path.

        The message never holds the query string or the body (client_secret, tokens) and the
        original exception is not chained, so no traceback repeats them either.
        """
        import requests  # loaded already, with the session

        kwargs.setdefault("timeout", self.timeout)
        session = self.session
        try:
            return session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise Unreachable(
                f"{what}: could not reach Strava at {_where(url)} ({type(exc).__name__})"
            ) from None

    # -- OAuth (not counted by Strava) --

    def exchange_code(self, code: str) -> dict:
        """Trade an authorization code for tokens and the athlete summary."""
        return self._token({"code": code, "grant_type": "authorization_code"}, "code exchange")

    def refresh(self, refresh_token: str) -> dict:
        """A fresh token pair; Strava invalidates the old refresh token once it issues a new one."""
        data = {"refresh_token": refresh_token, "grant_type": "refresh_token"}
        return self._token(data, "token refresh")

    def _token(self, data: dict, what: str) -> dict:
        data = dict(data, client_id=self.client_id, client_secret=self.client_secret)
        response = self._send(what, "POST", self.oauth_url + "/token", data=data)
        _raise_for(response, what)
        return _json(response, what)

    def deauthorize(self, access_token: str) -> None:
        """Revoke our access for the token's athlete (`/oauth/deauthorize`, retired June 2027)."""
        url = self.oauth_url + "/deauthorize"
        headers = {"Authorization": f"Bearer {access_token}"}
        response = self._send("deauthorize", "POST", url, headers=headers)
        _raise_for(response, "deauthorize")

    def revoke(self, token: str) -> None:
        """Revoke our access for the token's athlete (`/oauth/revoke`, client credentials)."""
        auth = (self.client_id or "", self.client_secret or "")
        url = self.oauth_url + "/revoke"
        response = self._send("revoke", "POST", url, data={"token": token}, auth=auth)
        _raise_for(response, "revoke")

    # -- push subscriptions (client credentials, no athlete token) --

    def _credentials(self) -> dict:
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    def list_subscriptions(self) -> list[dict]:
        """Our application's push subscriptions (Strava allows at most one)."""
        url = self.api_url + "/push_subscriptions"
        response = self._send("view subscription", "GET", url, params=self._credentials())
        _raise_for(response, "view subscription")
        return _json(response, "view subscription")

    def create_subscription(self, callback_url: str, verify_token: str) -> dict:
        """Ask Strava to create the subscription; Strava validates the callback before answering."""
        data = dict(self._credentials(), callback_url=callback_url, verify_token=verify_token)
        url = self.api_url + "/push_subscriptions"
        # Strava calls our callback before it answers, so allow for that round trip.
        what = "create subscription"
        response = self._send(what, "POST", url, data=data, timeout=(3.05, 30))
        _raise_for(response, what)
        return _json(response, what)

    def delete_subscription(self, subscription_id: int) -> None:
        """Delete a push subscription."""
        url = f"{self.api_url}/push_subscriptions/{int(subscription_id)}"
        response = self._send("delete subscription", "DELETE", url, params=self._credentials())
        _raise_for(response, "delete subscription")


def _timestamp(value, field: str, *, local: bool) -> datetime:
    if not isinstance(value, str):
        raise StravaError(f"activity {field} is missing")
    # start_date is UTC; start_date_local is wall-clock time that Strava also writes with a "Z".
    parsed = datetime.fromisoformat(value)
    if local or parsed.tzinfo is None:
        return parsed.replace(tzinfo=None if local else UTC)
    return parsed.astimezone(UTC)


def parse_activity(data: dict) -> dict:
    """Strava's activity JSON (summary or detail) as our strava_activity columns."""
    try:
        return {
            "id": int(data["id"]),
            "athlete_id": int(data["athlete"]["id"]),
            "name": data.get("name"),
            "sport_type": data.get("sport_type") or data.get("type"),
            "start_date": _timestamp(data.get("start_date"), "start_date", local=False),
            "start_date_local": _timestamp(
                data.get("start_date_local"), "start_date_local", local=True
            ),
            "timezone": data.get("timezone"),
            "distance": float(data.get("distance") or 0.0),
            "moving_time": data.get("moving_time"),
            "elapsed_time": data.get("elapsed_time"),
            "total_elevation_gain": data.get("total_elevation_gain"),
            "private": bool(data.get("private", False)),
            "manual": data.get("manual"),
            "trainer": data.get("trainer"),
            "commute": data.get("commute"),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise StravaError(f"Strava sent an activity we cannot read: {exc!r}") from None
