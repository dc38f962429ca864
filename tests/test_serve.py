"""strava_sim.serve: one WSGI app on a loopback thread, quiet, and gone after close()."""

import logging
import threading

import flask
import pytest
import requests

from strava_sim.serve import LoopbackServer, serve_in_thread


def _app() -> flask.Flask:
    app = flask.Flask("served")
    app.get("/ping")(lambda: {"pong": True})
    return app


def test_loopback_server_answers_on_its_url_and_stops_on_close():
    server = LoopbackServer(_app(), name="served-app")
    try:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert requests.get(f"{server.url}/ping", timeout=5).json() == {"pong": True}
        assert "served-app" in {t.name for t in threading.enumerate()}
    finally:
        server.close()
    assert "served-app" not in {t.name for t in threading.enumerate()}
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/ping", timeout=5)


def test_serve_in_thread_logs_no_line_per_request(caplog):
    caplog.set_level(logging.INFO, logger="werkzeug")
    with serve_in_thread(_app()) as url:
        assert requests.get(f"{url}/ping", timeout=5).status_code == 200
    assert not [r for r in caplog.records if "/ping" in r.getMessage()]
