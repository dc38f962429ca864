"""Strava's OAuth views: the consent page, token exchange and refresh, and deauthorization."""

from __future__ import annotations

import flask

from strava_sim.records import ticked_scope
from strava_sim.wire import (
    bad_client,
    bad_request,
    bearer_token,
    parse_scope,
    same_secret,
    unauthorized,
    with_query,
)
from strava_sim.world import TOKEN_LIFETIME

REFRESH_MARGIN = 60 * 60
SCOPES = frozenset(
    {"read", "read_all", "profile:read_all", "profile:write"}
    | {"activity:read", "activity:read_all", "activity:write"}
)


class OAuthViews:
    """The OAuth endpoints; mixed into StravaSim over its World state and app credentials."""

    def _client_ok(self, values) -> bool:
        return same_secret(values.get("client_id", ""), self.client_id) and same_secret(
            values.get("client_secret", ""), self.client_secret
        )

    def _authorize_view(self):
        args = flask.request.args
        if args.get("client_id") != self.client_id:
            return bad_request("Application", "client_id")
        if not args.get("redirect_uri"):
            return bad_request("Application", "redirect_uri")
        if args.get("response_type") != "code":
            return bad_request("Application", "response_type")
        requested = parse_scope(args.get("scope") or "read")
        if not requested or not set(requested) <= SCOPES:
            return bad_request("Authorize", "scope")
        with self._lock:
            if self._login is None:
                return bad_request("Athlete", "login", "call StravaSim.login_as() first")
            athlete_id, ticked, deny = self._login
            if deny:
                params = {"state": args.get("state", ""), "error": "access_denied"}
            else:
                granted = tuple(ticked_scope(s, ticked) for s in requested)
                granted = tuple(s for s in granted if s)
                code = self._secret()
                self._codes[code] = (athlete_id, granted)
                params = {"state": args.get("state", ""), "code": code, "scope": ",".join(granted)}
        return flask.redirect(with_query(args["redirect_uri"], params), 302)

    def _token_view(self):
        values = flask.request.values
        if not self._client_ok(values):
            return bad_client()
        grant_type = values.get("grant_type")
        with self._lock:
            if grant_type == "authorization_code":
                entry = self._codes.pop(values.get("code", ""), None)
                if entry is None:
                    return bad_request("AuthorizationCode", "code")
                return flask.jsonify(self._authorize_athlete(*entry))
            if grant_type == "refresh_token":
                return self._refresh(values.get("refresh_token", ""))
        return bad_request("Application", "grant_type")

    def _refresh(self, refresh_token: str):
        grant = next(
            (g for g in self._grants.values() if same_secret(g.refresh_token, refresh_token)), None
        )
        if grant is None or not refresh_token:
            return bad_request("RefreshToken", "refresh_token")
        now = self.clock.now()
        if grant.expires_at - now <= REFRESH_MARGIN:
            # The old refresh token dies at once; the old access token lives out its six hours.
            grant.old_access = {t: e for t, e in grant.old_access.items() if e > now}
            grant.old_access[grant.access_token] = grant.expires_at
            grant.access_token, grant.refresh_token = self._secret(), self._secret()
            grant.expires_at = int(now) + TOKEN_LIFETIME
        return flask.jsonify(self._token_json(grant, athlete=False))

    def _deauthorize_view(self):
        token = flask.request.values.get("access_token") or bearer_token(flask.request)
        with self._lock:
            grant = self._grant_for_access(token or "")
            if grant is None:
                return unauthorized()
            self.revoke(grant.athlete_id)
        return flask.jsonify(access_token=token)

    def _revoke_view(self):
        # The 2027 endpoint: HTTP Basic client credentials, and `token` (access or refresh token).
        auth = flask.request.authorization
        values = {"client_id": auth.username, "client_secret": auth.password} if auth else {}
        if not self._client_ok(values):
            return bad_client()
        token = flask.request.values.get("token", "")
        with self._lock:
            grant = self._grant_for_access(token) or next(
                (g for g in self._grants.values() if same_secret(g.refresh_token, token)), None
            )
            if grant is None or not token:
                return bad_request("Token", "token")
            self.revoke(grant.athlete_id)
        return flask.jsonify(revoked=True)
