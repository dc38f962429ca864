"""The operator's dashboard: who may see it, what it shows, the budget chart, invites."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from conftest import connect_rider, make_app
from pages_support import post, sign_in

import models
from jobs import status
from web import admin

NOW = 1_780_000_000 - 1_780_000_000 % 900 + 120  # two minutes into a 15-minute window


def text(response) -> str:
    return response.get_data(as_text=True)


@pytest.fixture
def clock():
    return [float(NOW)]


@pytest.fixture
def board(database_url, sim, clock):
    """(app, client) with a signed-in admin."""
    app = make_app(database_url, sim, CLOCK=lambda: clock[0])
    rider, athlete = connect_rider(app, sim, name=("Oper", "Ator"))
    app.config["ADMIN_ATHLETE_IDS"] = frozenset({athlete})
    client = app.test_client()
    sign_in(client, rider)
    return app, client


def invites_of(svc, rider_id):
    with svc.engine.connect() as conn:
        query = sa.select(models.strava_invite).where(models.strava_invite.c.rider_id == rider_id)
        return conn.execute(query).all()


def test_admin_refuses_visitors_with_a_403_page(client):
    response = client.get("/admin")
    assert response.status_code == 403
    assert "<h1>Forbidden</h1>" in text(response) and "ADMIN_ATHLETE_IDS" in text(response)


def test_admin_refuses_a_rider_not_listed(app, client, sim):
    rider, _ = connect_rider(app, sim)
    app.config["ADMIN_ATHLETE_IDS"] = frozenset({1})
    sign_in(client, rider)
    assert client.get("/admin").status_code == 403
    assert "Operator dashboard" not in text(client.get("/me"))


def test_admin_shows_status_by_its_keys(board):
    _, client = board
    page = client.get("/admin")
    assert page.status_code == 200
    body = text(page)
    for key in status.collect_status(client.application.extensions["strava_sync"]):
        assert f"<h3>{key.replace('_', ' ').capitalize()}</h3>" in body
    assert 'href="/admin"' in text(client.get("/me"))


def test_admin_renders_status_keys_it_has_never_seen(board, monkeypatch):
    _, client = board
    extra = {"workers": [{"name": "w1", "queues": ["strava"]}], "odd_value": None, "empty": {}}
    monkeypatch.setattr(status, "collect_status", lambda svc: extra)
    body = text(client.get("/admin"))
    assert "<h3>Workers</h3>" in body and "<dt>name</dt><dd>w1</dd>" in body
    assert "<h3>Odd value</h3>" in body and body.count('<span class="muted">none</span>') == 2


def test_admin_chart_shows_permits_per_window_against_the_limit(board, clock):
    app, client = board
    budget = app.extensions["strava_sync"].budget
    for _ in range(3):
        budget.take_permit()
    clock[0] -= 900  # one window earlier
    budget.take_permit()
    clock[0] += 900
    body = text(client.get("/admin"))
    bars = re.findall(r'<rect [^>]*class="bar[^"]*"><title>(\d\d:\d\d) UTC: (\d+)</title>', body)
    assert len(bars) == 96
    assert [int(n) for _, n in bars[-2:]] == [1, 3] and sum(int(n) for _, n in bars) == 4
    assert 'role="img"' in body and "the busiest window used 3 of the 100 allowed" in body


def test_budget_chart_scales_to_the_limit_and_flags_overruns():
    history = [(0, 10), (900, 120), (1800, 0)]
    chart = admin.budget_chart(history, limit=100)
    assert chart["peak"] == 120 and chart["total"] == 130
    assert [b["over"] for b in chart["bars"]] == [False, True, False]
    tallest = chart["bars"][1]
    assert tallest["y"] == chart["top"] and tallest["y"] + tallest["height"] == chart["base_y"]
    assert chart["bars"][2]["height"] == 0
    assert chart["top"] < chart["limit_y"] < chart["base_y"]


def test_invite_form_issues_a_link_for_a_rider(board, sim):
    app, client = board
    svc = app.extensions["strava_sync"]
    with svc.engine.begin() as conn:
        member = models.create_rider(conn, "Club Member")
    form = text(client.get("/admin"))
    assert '<label for="rider_id">Rider</label>' in form and '<label for="hours">' in form
    response = post(client, "/admin/invites", {"rider_id": str(member), "hours": "48"})
    assert response.status_code == 200
    [invite] = invites_of(svc, member)  # what invites.issue_invite stored
    assert re.search(
        r'id="invite-url">http://localhost/strava/connect\?invite=[^<"]+<', text(response)
    )
    assert (invite.expires_at - invite.created_at).total_seconds() == 48 * 3600


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"rider_id": "999999", "hours": "72"}, 400),
        ({"rider_id": "abc", "hours": "72"}, 400),
        ({"rider_id": "RIDER", "hours": "0"}, 400),
        ({"rider_id": "RIDER", "hours": "100000"}, 400),
    ],
)
def test_invite_form_refuses_bad_input(board, form, code):
    app, client = board
    svc = app.extensions["strava_sync"]
    with svc.engine.begin() as conn:
        member = models.create_rider(conn, "Club Member")
    form = {k: v.replace("RIDER", str(member)) for k, v in form.items()}
    response = post(client, "/admin/invites", form)
    assert response.status_code == code and "<!doctype html>" in text(response)
    assert invites_of(svc, member) == []


def test_invite_needs_the_csrf_token_and_an_admin(board, database_url, sim):
    app, client = board
    svc = app.extensions["strava_sync"]
    with svc.engine.begin() as conn:
        member = models.create_rider(conn, "Club Member")
    assert post(client, "/admin/invites", {"rider_id": str(member)}, csrf="x").status_code == 403
    outsider = app.test_client()
    sign_in(outsider, member)
    assert post(outsider, "/admin/invites", {"rider_id": str(member)}).status_code == 403
    assert invites_of(svc, member) == []


def test_invite_form_creates_a_named_rider_for_invite_only_clubs(board, sim):
    app, client = board
    svc = app.extensions["strava_sync"]
    assert 'action="/admin/invites/new"' in text(client.get("/admin"))
    response = post(client, "/admin/invites/new", {"name": "Grace Hopper", "hours": "24"})
    assert response.status_code == 200
    with svc.engine.connect() as conn:
        [rider] = conn.execute(
            sa.select(models.riders).where(models.riders.c.name == "Grace Hopper")
        )
    [invite] = invites_of(svc, rider.id)
    assert (invite.expires_at - invite.created_at).total_seconds() == 24 * 3600
    assert re.search(r'id="invite-url">http://localhost/strava/connect\?invite=', text(response))
    assert post(client, "/admin/invites/new", {"name": " ", "hours": "24"}).status_code == 400
