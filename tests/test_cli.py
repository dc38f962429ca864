"""The command line against the simulator: subscription lifecycle, sweeps, status."""

import json
import re

import pytest
from clocks import mid_window_clock
from conftest import LiveServer, configure, connect_rider, event, make_app, run_jobs

import models


def callback(live):
    return f"{live.url}/api/strava/webhook"


def test_init_db_is_safe_to_run_twice(runner):
    for _ in range(2):
        result = runner.invoke(args=["init-db"])
        assert result.exit_code == 0 and "ready" in result.output


def test_subscription_lifecycle(app, runner, svc, sim, live):
    assert runner.invoke(args=["strava", "subscription", "show"]).output.strip() == "none"

    created = runner.invoke(
        args=["strava", "subscription", "create", "--callback-url", callback(live)]
    )
    assert created.exit_code == 0, created.output
    assert sim.subscription["callback_url"] == callback(live)
    assert f"id {sim.subscription['id']}" in created.output
    assert svc.subscription_id() == sim.subscription["id"]

    shown = runner.invoke(args=["strava", "subscription", "show"])
    assert shown.exit_code == 0
    assert str(sim.subscription["id"]) in shown.output and callback(live) in shown.output

    again = runner.invoke(
        args=["strava", "subscription", "create", "--callback-url", callback(live)]
    )
    assert again.exit_code == 1
    assert "already exists" in again.output and str(sim.subscription["id"]) in again.output
    assert sim.requests["POST /push_subscriptions"] == 1

    kept = runner.invoke(args=["strava", "subscription", "delete"], input="n\n")
    assert kept.exit_code == 1 and sim.subscription is not None
    deleted = runner.invoke(args=["strava", "subscription", "delete", "--yes"])
    assert deleted.exit_code == 0 and sim.subscription is None
    assert svc.subscription_id() is None
    assert runner.invoke(args=["strava", "subscription", "show"]).output.strip() == "none"


def test_events_of_another_subscription_are_refused_after_create(app, client, runner, sim, live):
    _, athlete = connect_rider(app, sim)
    runner.invoke(args=["strava", "subscription", "create", "--callback-url", callback(live)])
    ours = sim.subscription["id"]
    assert (
        client.post(
            "/api/strava/webhook", json=event(athlete, 1, subscription_id=ours + 1)
        ).status_code
        == 403
    )
    assert (
        client.post("/api/strava/webhook", json=event(athlete, 1, subscription_id=ours)).status_code
        == 200
    )


def test_create_diagnoses_a_wrong_verify_token_before_asking_strava(database_url, sim, live):
    # Our CLI holds one verify token; the deployed app (served by `live`) holds another.
    other = make_app(database_url, sim, STRAVA_VERIFY_TOKEN="a-different-token")
    result = other.test_cli_runner().invoke(
        args=["strava", "subscription", "create", "--callback-url", callback(live)]
    )
    assert result.exit_code == 1
    assert "verify token" in result.output and "Strava was not asked" in result.output
    assert sim.requests["POST /push_subscriptions"] == 0


def test_create_diagnoses_an_unreachable_callback(runner, sim):
    result = runner.invoke(
        args=[
            "strava",
            "subscription",
            "create",
            "--callback-url",
            "http://127.0.0.1:9/api/strava/webhook",
        ]
    )
    assert result.exit_code == 1
    assert "not reachable" in result.output
    assert sim.requests["POST /push_subscriptions"] == 0


def test_create_diagnoses_a_callback_that_does_not_echo(database_url, sim):
    import flask

    wrong = flask.Flask("wrong")
    wrong.get("/cb")(lambda: {"hub.challenge": "something else"})
    server = LiveServer(wrong)
    try:
        app = make_app(database_url, sim)
        result = app.test_cli_runner().invoke(
            args=["strava", "subscription", "create", "--callback-url", f"{server.url}/cb"]
        )
    finally:
        server.close()
    assert result.exit_code == 1 and "did not echo" in result.output


def test_create_explains_bad_credentials(database_url, sim, live):
    app = make_app(database_url, sim, STRAVA_CLIENT_SECRET="wrong")
    result = app.test_cli_runner().invoke(
        args=["strava", "subscription", "create", "--callback-url", callback(live)]
    )
    assert result.exit_code == 1
    assert "STRAVA_CLIENT_ID" in result.output
    assert "wrong" not in result.output


def test_create_explains_an_inactive_application(runner, sim, live):
    sim.inactive = True
    result = runner.invoke(
        args=["strava", "subscription", "create", "--callback-url", callback(live)]
    )
    assert result.exit_code == 1
    assert "inactive" in result.output


def test_create_needs_a_callback_url_and_credentials(database_url, runner):
    result = runner.invoke(args=["strava", "subscription", "create"])
    assert result.exit_code == 1 and "STRAVA_CALLBACK_URL" in result.output
    bare = make_app(database_url, None)
    result = bare.test_cli_runner().invoke(args=["strava", "subscription", "show"])
    assert result.exit_code == 1 and "must be set" in result.output


def test_show_warns_when_the_callback_differs_from_the_configured_one(database_url, sim, live):
    app = make_app(database_url, sim)
    app.test_cli_runner().invoke(
        args=["strava", "subscription", "create", "--callback-url", callback(live)]
    )
    configure(app, strava_callback_url="https://club.example/api/strava/webhook")
    result = app.test_cli_runner().invoke(args=["strava", "subscription", "show"])
    assert result.exit_code == 0 and "Warning" in result.output


def test_delete_when_there_is_none_says_so(runner):
    result = runner.invoke(args=["strava", "subscription", "delete", "--yes"])
    assert result.exit_code == 1 and "no subscription" in result.output


def test_reconcile_command_plans_and_reports(app, runner, svc, sim):
    for i in range(2):
        connect_rider(app, sim, name=("R", str(i)))
    args = ["strava", "reconcile", "--no-wait", "--max-riders", "1", "--json"]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["planned"], summary["deferred"]) == (1, 1)
    assert svc.queue("reconcile").count == 1


def test_backfill_command_refuses_an_unknown_rider(runner):
    result = runner.invoke(args=["strava", "backfill", "42"])
    assert result.exit_code == 1 and "there is no rider or Strava athlete 42" in result.output


@pytest.fixture
def frozen_app(database_url, sim):
    """An app and the simulator on one clock frozen mid-window: no reset empties the window."""
    sim.clock = mid_window_clock()
    return make_app(database_url, sim, CLOCK=sim.clock.now)


@pytest.fixture
def frozen_live(frozen_app):
    server = LiveServer(frozen_app)
    yield server
    server.close()


def test_status_after_some_work_in_text_and_json(frozen_app, frozen_live, sim):
    app, live = frozen_app, frozen_live
    client, runner = app.test_client(), app.test_cli_runner()
    _, athlete = connect_rider(app, sim)
    runner.invoke(args=["strava", "subscription", "create", "--callback-url", callback(live)])
    ours = sim.subscription["id"]
    for _ in range(3):
        activity = sim.create_activity(athlete)
        client.post("/api/strava/webhook", json=event(athlete, activity, subscription_id=ours))
    client.post("/api/strava/webhook", json=event(12345, 1, subscription_id=ours))
    run_jobs(app)
    svc = app.extensions["strava_sync"]
    with svc.engine.begin() as conn:
        models.deauthorize(conn, connect_rider(app, sim, name=("Gone", "Rider"))[0], now=svc.now())
    runner.invoke(args=["strava", "reconcile", "--no-wait"])
    run_jobs(app)

    data = json.loads(runner.invoke(args=["strava", "status", "--json"]).output)
    assert data["subscription_id"] == sim.subscription["id"]
    assert data["events_24h"] == {"done": 3, "ignored": 1}
    assert data["queues"]["strava"]["queued"] == 0
    assert data["budget"]["read"]["used_15min"] >= 2  # a list of the rider's 3 uploads, a sweep
    assert data["last_nightly_sweep"] is None
    run = data["last_manual_run"]
    assert (run["status"], run["riders_done"], run["trigger"]) == ("done", 1, "command")
    assert data["riders"] == {
        "current": 1, "stale": 0, "needs reconnect": 0, "deauthorized": 1, "not connected": 0
    }  # fmt: skip

    text = runner.invoke(args=["strava", "status"]).output
    assert f"subscription: {sim.subscription['id']}" in text
    assert "webhook events in the last 24 hours: 3 done, 1 ignored" in text
    assert re.search(r"queue strava: 0 workers listening, [a-z ]+; 0 queued", text)
    assert "last nightly sweep: never" in text and "last manual run: #" in text
    assert "riders: 1 current, 0 stale, 0 needs reconnect, 1 deauthorized" in text


@pytest.mark.parametrize("as_json", [True, False])
def test_status_names_failed_jobs(app, client, runner, sim, as_json):
    _, athlete = connect_rider(app, sim)
    sim.faults.error_rate = 1.0
    client.post("/api/strava/webhook", json=event(athlete, sim.create_activity(athlete)))
    for _ in range(4):
        run_jobs(app, due_too=True)
    output = runner.invoke(args=["strava", "status"] + (["--json"] if as_json else [])).output
    if as_json:
        [failure] = json.loads(output)["queues"]["strava"]["latest_failures"]
        assert failure["func"] == "jobs.fetch.sync_activity" and "500" in failure["reason"]
    else:
        assert "1 failed" in output and "failed jobs.fetch.sync_activity" in output


def test_status_names_an_inactive_application(app, client, runner, sim):
    _, athlete = connect_rider(app, sim)
    sim.inactive = True
    client.post("/api/strava/webhook", json=event(athlete, sim.create_activity(athlete)))
    run_jobs(app)
    text = runner.invoke(args=["strava", "status"]).output
    assert text.startswith("WARNING: Strava answered 'application inactive'")
    assert json.loads(runner.invoke(args=["strava", "status", "--json"]).output)[
        "application_inactive_at"
    ]


def test_reconcile_command_waits_for_the_sweep_in_inline_mode(database_url, sim):
    app = make_app(database_url, sim, REDIS_URL=None, INLINE_WORKER=True)
    _, athlete = connect_rider(app, sim)
    sim.create_activity(athlete, event=False)
    try:
        args = ["strava", "reconcile", "--timeout", "60", "--json"]
        result = app.test_cli_runner().invoke(args=args)
    finally:
        app.extensions["strava_sync"].runner.stop()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run"]["status"] == "done"
    assert summary["run"]["activities_created"] == 1
