"""The simulator's control API, for `flask --app app simulate`: drive the world over HTTP.

Everything a rehearsal needs to play Strava's side, as JSON under `/_sim`:

| method, path | does |
|---|---|
| `POST /_sim/athletes` `{"firstname", "lastname"}` | makes an athlete: `{"id": ...}` |
| `POST /_sim/login` `{"athlete_id", "scope"?, "deny"?}` | the authorize page now logs in as them |
| `POST /_sim/athletes/<id>/activities` `{"name", "distance", ...}` | uploads: `{"id": ...}` |
| `PATCH /_sim/activities/<id>` `{"name", "private", ...}` | edits it (an update event) |
| `DELETE /_sim/activities/<id>` | deletes it (a delete event) |
| `POST /_sim/athletes/<id>/revoke` | the athlete revokes the app (an athlete event) |
| `GET /_sim/events` | the events waiting to be delivered |
| `POST /_sim/events/deliver` | POSTs them to the subscription's callback: the delivery counts |
| `POST /_sim/events/drop` | drops them, as Strava sometimes does: `{"dropped": n}` |
| `GET /_sim/state` | the subscription, athletes and the requests counted so far |

An upload queues a create event; fields: name, sport_type, distance (metres), moving_time,
total_elevation_gain, private, commute, trainer, start_date (ISO 8601).
Add `"event": false` to an upload, edit or delete to change the world without telling anyone.
Errors answer 400 or 404 with `{"error": "..."}`.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, jsonify, request

ACTIVITY_FIELDS = {
    "name": str,
    "sport_type": str,
    "distance": float,
    "moving_time": int,
    "total_elevation_gain": float,
    "private": bool,
    "commute": bool,
    "trainer": bool,
}


def _fields(body: dict) -> dict:
    values = {}
    for key, kind in ACTIVITY_FIELDS.items():
        if key in body:
            value = body[key]
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
            values[key] = kind(value)
    if "start_date" in body:
        values["start_date"] = datetime.fromisoformat(body["start_date"].replace("Z", "+00:00"))
    return values


def _body() -> dict:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def make_blueprint(sim) -> Blueprint:
    """The control API over one StravaSim (register it before the first request)."""
    bp = Blueprint("sim_control", __name__, url_prefix="/_sim")

    @bp.errorhandler(KeyError)
    def _unknown(exc):
        return jsonify(error=f"unknown: {exc.args[0]}"), 404

    @bp.errorhandler(ValueError)
    @bp.errorhandler(TypeError)
    def _bad(exc):
        return jsonify(error=str(exc)), 400

    _add_world_routes(bp, sim)
    _add_event_routes(bp, sim)
    return bp


def _add_world_routes(bp: Blueprint, sim) -> None:
    """Athletes, logins and activities: what riders do on Strava."""

    @bp.post("/athletes")
    def add_athlete():
        body = _body()
        athlete_id = sim.add_athlete(body.get("firstname", "Sim"), body.get("lastname", "Rider"))
        return jsonify(id=athlete_id), 201

    @bp.post("/login")
    def login():
        body = _body()
        sim.login_as(int(body["athlete_id"]), body.get("scope"), bool(body.get("deny", False)))
        return jsonify(athlete_id=int(body["athlete_id"]))

    @bp.post("/athletes/<int:athlete_id>/activities")
    def upload(athlete_id: int):
        body = _body()
        activity_id = sim.create_activity(
            athlete_id, event=bool(body.get("event", True)), **_fields(body)
        )
        return jsonify(id=activity_id), 201

    @bp.patch("/activities/<int:activity_id>")
    def edit(activity_id: int):
        body = _body()
        sim.update_activity(activity_id, event=bool(body.get("event", True)), **_fields(body))
        return jsonify(id=activity_id)

    @bp.delete("/activities/<int:activity_id>")
    def delete(activity_id: int):
        sim.delete_activity(activity_id, event=request.args.get("event", "1") != "0")
        return jsonify(id=activity_id)

    @bp.post("/athletes/<int:athlete_id>/revoke")
    def revoke(athlete_id: int):
        sim.revoke(athlete_id, event=bool(_body().get("event", True)))
        return jsonify(athlete_id=athlete_id)


def _add_event_routes(bp: Blueprint, sim) -> None:
    """The event outbox and the simulator's state: what Strava does about it."""

    @bp.get("/events")
    def events():
        return jsonify(events=list(sim.outbox))

    @bp.post("/events/deliver")
    def deliver():
        return jsonify(sim.deliver_events())

    @bp.post("/events/drop")
    def drop():
        with sim._lock:
            dropped, sim.outbox = len(sim.outbox), []
        return jsonify(dropped=dropped)

    @bp.get("/state")
    def state():
        return jsonify(
            subscription=sim.subscription,
            athletes=len(sim._athletes),
            requests=dict(sim.requests),
            client_id=sim.client_id,
        )
