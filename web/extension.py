"""The web side's handle on the services: one `Services` per Flask app, in `app.extensions`."""

from __future__ import annotations

from flask import Flask, current_app

from services import Services

KEY = "strava_sync"


def init_app(app: Flask, svc: Services) -> None:
    """Attach the services to the app."""
    app.extensions[KEY] = svc


def current_services() -> Services:
    """The current app's services (inside a request or a CLI command)."""
    return current_app.extensions[KEY]
