"""The reference for bench/ingest.py: a bare Flask JSON endpoint at the webhook's path.

It parses the body as JSON and answers `{"status": "queued"}`, touching no database and no Redis,
so that served by the same gunicorn configuration, the gap between it and the real webhook is what
validating, storing and queueing an event costs. Served as `bench.bare_app:create_app()`.
"""

from __future__ import annotations

import json

from flask import Flask, jsonify, request


def create_app() -> Flask:
    """A Flask app with only the webhook's POST route and a health check."""
    app = Flask(__name__)

    @app.post("/api/strava/webhook")
    def receive_event():
        json.loads(request.get_data())
        return jsonify(status="queued")

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app
