"""The operator's commands: runs that wait for nobody, summaries for people, riders, leaderboard."""

import io
import json
import logging

import pytest
from conftest import connect_rider, event, make_app, run_jobs, stop_redis_client

import models
from cli.runs import Progress
from jobs import status
from services.diagnose import START_WORKER
from strava_sim.cli import simulate_command


def test_reconcile_with_no_worker_says_so_at_once_and_exits_1(app, runner, svc, sim):
    connect_rider(app, sim)
    result = runner.invoke(args=["strava", "reconcile", "--timeout", "3600"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Warning: no worker is listening on the reconcile queue: the work is queued and starts "
        f"when one does ({START_WORKER})"
    )
    assert result.stdout.startswith("Sweep #1: 1 riders planned, 0 deferred to later nights.")
    assert svc.queue("reconcile").count == 1  # queued, not lost


def test_no_wait_with_no_worker_warns_and_exits_0(app, runner, sim):
    connect_rider(app, sim)
    result = runner.invoke(args=["strava", "reconcile", "--no-wait"])
    assert result.exit_code == 0
    assert result.stderr.startswith("Warning: no worker is listening on the reconcile queue")


def test_reconcile_refuses_an_unknown_rider(runner, svc):
    result = runner.invoke(args=["strava", "reconcile", "--rider", "99"])
    assert (result.exit_code, result.stderr.strip()) == (
        1,
        "Error: rider 99 has no Strava connection",
    )
    with svc.engine.connect() as conn:
        assert models.recent_runs(conn) == []


def test_backfill_from_the_cli_records_trigger_command(app, runner, svc, sim):
    rider_id, _ = connect_rider(app, sim)
    result = runner.invoke(args=["strava", "backfill", str(rider_id), "--no-wait", "--json"])
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    with svc.engine.connect() as conn:
        run = models.get_run(conn, run_id)
    assert (run.kind, run.trigger) == ("backfill", "command")


def test_a_dry_run_lists_the_activities_that_differ(database_url, sim):
    app = make_app(database_url, sim, REDIS_URL=None, INLINE_WORKER=True)
    rider_id, athlete = connect_rider(app, sim)
    missing = sim.create_activity(athlete, event=False)
    try:
        result = app.test_cli_runner().invoke(args=["strava", "reconcile", "--dry-run"])
    finally:
        app.extensions["strava_sync"].runner.stop()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Sweep #1 (dry run): 1 riders planned, 0 deferred to later nights."
    assert lines[1].startswith("Run #1 done (dry run): 1/1 riders, 1 created")
    assert f"  rider {rider_id}: activity {missing} created" in lines
    assert lines[-1].startswith("Budget left: ")
    with app.extensions["strava_sync"].engine.connect() as conn:
        assert models.rider_activities(conn, rider_id) == []  # a dry run writes nothing


def test_progress_without_a_terminal_prints_a_line_per_tenth():
    stream = io.StringIO()
    progress = Progress("riders", 20, stream=stream)
    for done in range(21):
        progress.update(done)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == [f"riders: {2 * i}/20 ({10 * i} %)" for i in range(1, 11)]


@pytest.mark.parametrize("command", [["reconcile"], ["backfill"], ["leaderboard"]])
def test_help_shows_defaults(runner, command):
    text = runner.invoke(args=["strava", *command, "--help"]).output
    assert "[default: " in text


def test_simulate_help_shows_its_port(runner):
    assert "[default: 8765" in runner.invoke(simulate_command, ["--help"]).output


def test_riders_and_leaderboard(app, runner, svc, sim):
    ada, _ = connect_rider(app, sim, name=("Ada", "Lovelace"))
    bob, _ = connect_rider(app, sim, name=("Bob", "Brown"))
    gone, _ = connect_rider(app, sim, name=("Gone", "Rider"))
    with svc.engine.begin() as conn:
        models.update_connection(conn, ada, eddington_number_km=12, eddington_number_miles=8)
        models.update_connection(conn, bob, eddington_number_km=9, eddington_number_miles=9)
        models.deauthorize(conn, gone)
    riders = json.loads(runner.invoke(args=["strava", "riders", "--json"]).stdout)
    assert [(r["id"], r["state"], r["eddington_km"]) for r in riders] == [
        (ada, "current", 12),
        (bob, "current", 9),
        (gone, "deauthorized", None),
    ]
    text = runner.invoke(args=["strava", "riders"]).stdout.splitlines()
    assert text[0].split() == ["id", "name", "athlete", "state", "last", "sync", "km", "mi"]
    assert "Ada Lovelace" in text[1] and "current" in text[1]

    km = runner.invoke(args=["strava", "leaderboard", "--km"]).stdout.splitlines()
    assert km[1].split() == ["1.", "Ada", "Lovelace", "12", "km"]
    assert km[2].split() == ["2.", "Bob", "Brown", "9", "km"]
    assert len(km) == 3  # the deauthorized rider is not on the board
    miles = json.loads(runner.invoke(args=["strava", "leaderboard", "--json"]).stdout)
    assert [(r["name"], r["eddington"]) for r in miles["riders"]] == [
        ("Bob Brown", 9),
        ("Ada Lovelace", 8),
    ]


def test_status_separates_nightly_and_manual_runs_and_marks_dry_runs(app, client, runner, sim):
    from conftest import CRON_SECRET

    connect_rider(app, sim)
    auth = {"Authorization": f"Bearer {CRON_SECRET}"}
    assert client.post("/api/cron/reconcile", headers=auth, json={}).status_code == 200
    run_jobs(app)
    runner.invoke(args=["strava", "reconcile", "--no-wait", "--dry-run", "--max-riders", "0"])
    data = json.loads(runner.invoke(args=["strava", "status", "--json"]).stdout)
    assert (data["last_nightly_sweep"]["trigger"], data["last_nightly_sweep"]["dry_run"]) == (
        "cron",
        False,
    )
    assert data["last_manual_run"]["dry_run"] is True
    text = runner.invoke(args=["strava", "status"]).stdout
    assert "last manual run: #2 partial at " in text and "(dry run: nothing written)" in text
    assert "last nightly sweep: #1 done at " in text


def test_status_counts_riders_once_each_and_a_new_rider_is_current(app, runner, svc, sim):
    new, _ = connect_rider(app, sim, name=("New", "Rider"))
    old, _ = connect_rider(app, sim, name=("Old", "Rider"))
    lost, _ = connect_rider(app, sim, name=("Lost", "Grant"))
    long_ago = models.now().replace(year=2020)
    with svc.engine.begin() as conn:
        models.update_connection(conn, old, connected_at=long_ago, last_reconciled_at=long_ago)
        models.update_connection(conn, lost, connected_at=long_ago, needs_reconnect_since=long_ago)
    data = json.loads(runner.invoke(args=["strava", "status", "--json"]).stdout)
    assert data["riders"] == {
        "current": 1, "stale": 1, "needs reconnect": 1, "deauthorized": 0, "not connected": 0
    }  # fmt: skip
    assert data["riders_by_state"]["current"] == [new]
    assert (data["stale_riders"], data["deauthorized_riders"]) == ([old], [])  # older keys


def test_status_warns_about_no_worker_and_a_quiet_subscription(app, client, runner, sim):
    _, athlete = connect_rider(app, sim)
    text = runner.invoke(args=["strava", "status"]).stdout.splitlines()
    assert (
        "WARNING: no webhook event for 24 h while 1 riders are connected: the subscription may be "
        "gone; check it with flask --app app strava subscription show"
    ) in text
    assert f"WARNING: no worker is listening on queue strava: start one with {START_WORKER}" in text
    client.post("/api/strava/webhook", json=event(athlete, sim.create_activity(athlete)))
    text = runner.invoke(args=["strava", "status"]).stdout
    assert "no webhook event for 24 h" not in text
    assert "last event received: 0 min ago" in text


def test_workers_log_one_line_per_job_outcome(app, client, sim, caplog):
    _, athlete = connect_rider(app, sim)
    activity = sim.create_activity(athlete)
    client.post("/api/strava/webhook", json=event(athlete, activity))
    with caplog.at_level(logging.INFO, logger="jobs"):
        run_jobs(app)
    lines = [r.getMessage() for r in caplog.records if r.name == "jobs"]
    assert lines == [f"activity {activity} of athlete {athlete}: created"]
    svc = app.extensions["strava_sync"]
    with svc.engine.connect() as conn:
        token = svc.cipher.decrypt(models.get_connection_by_athlete(conn, athlete).access_token)
    assert token not in caplog.text


def test_status_gives_the_operator_the_full_sentence_for_a_redis_that_is_down(database_url, sim):
    app = make_app(database_url, sim, REDIS_URL="redis://127.0.0.1:1/0")
    svc = app.extensions["strava_sync"]
    stop_redis_client(svc)
    found = status.collect_status(svc)["redis"]
    assert (
        found == "down: REDIS_URL: cannot reach Redis on 127.0.0.1:1: start Redis or fix REDIS_URL"
    )
