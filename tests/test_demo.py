"""The demo: the whole system against the simulator, ending in a consistency check that can fail."""

import re
import tempfile
import threading

import pytest
import redis
from conftest import REAL_REDIS, connect_rider, make_app

import demo
import models
from app import create_app
from strava_client import parse_activity
from sync import eddington


def test_run_demo_ends_consistent_and_reports_the_figures(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert demo.run_demo(create_app, riders=3, days=1, seed=11, drop_rate=0.3) is True
    assert list(tmp_path.iterdir()) == []  # the temporary database is gone
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {"demo-worker", "strava-sync-demo", "strava-sim"}
    captured = capsys.readouterr()
    assert "Connected 3 riders through /strava/connect (1 granted only activity:read)" in (
        captured.err
    )
    out = captured.out
    assert re.search(r"Webhook events +\d+ received: \d+ queued \(\d+ done", out)
    assert re.search(r"\d+ duplicate, 1 ignored", out)  # the event for an unknown athlete
    assert re.search(r"never delivered: \d+ dropped by Strava", out)
    assert re.search(r"Strava requests +\d+ API calls: .*GET /athlete/activities \d+", out)
    assert re.search(r"Rate budget .* of 100 read requests", out)
    assert re.search(r"429 answers +0\n", out)
    # The operator's view, as `flask strava status` prints it.
    assert "subscription: " in out and "subscription: none" not in out
    assert re.search(r"queue strava: .*; 0 queued, 0 running, \d+ scheduled, 0 failed", out)
    assert re.search(r"last nightly sweep: #\d+ done, started [^;]+; 3/3 riders, ", out)
    activities = re.search(r"Activities +ours (\d+), Strava's (\d+), of which (\d+) visible", out)
    assert activities and activities[1] == activities[3]
    assert re.search(r"Nightly sweep +run \d+ done: 3 riders .* repaired \d+ created", out)
    assert len(re.findall(r"^ +\d\. .* \d+ km +\d+ mi$", out, re.MULTILINE)) == 3
    assert "Consistency check: PASS" in out


def test_demo_command_exits_zero_and_prints_pass(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'outer.sqlite'}")  # the app `flask` loads for commands
    result = app.test_cli_runner().invoke(demo.demo_command, ["--riders", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "Consistency check: PASS" in result.output


@pytest.mark.skipif(not REAL_REDIS, reason="needs real Redis (TEST_REDIS_URL)")
def test_run_demo_on_real_redis_leaves_no_scheduled_jobs(monkeypatch, capsys):
    connection = redis.Redis.from_url(REAL_REDIS)
    connection.flushdb()
    monkeypatch.setenv("REDIS_URL", REAL_REDIS)
    assert demo.run_demo(create_app, riders=2, days=2, seed=5, drop_rate=0.3) is True
    assert "Redis at REDIS_URL" in capsys.readouterr().err
    assert not any(connection.zcard(f"rq:scheduled:{name}") for name in ("strava", "reconcile"))
    assert not list(connection.scan_iter("strava-sync-demo:*"))
    connection.close()


def _hold_truth(svc, sim, rider_id, athlete_id):
    """Copy the simulator's activities into our table, as a perfect sync would."""
    with svc.engine.begin() as conn:
        for activity in sim.activities(athlete_id):
            models.upsert_activity(conn, rider_id, parse_activity(activity), now=svc.now())
        eddington.store_numbers(conn, rider_id, svc.settings.eddington_sport_types)


def _world(app, sim, scope=demo.FULL_SCOPE):
    """One connected rider with a few rides, one of them private; returns (rider, activity ids)."""
    rider_id, athlete_id = connect_rider(app, sim, scope=scope)
    ids = [
        sim.create_activity(athlete_id, distance=40_000.0 + n * 10_000, event=False)
        for n in range(3)
    ]
    ids.append(sim.create_activity(athlete_id, distance=80_000.0, private=True, event=False))
    return demo.DemoRider("Ada Lovelace", athlete_id, scope, rider_id=rider_id), ids


def test_check_consistency_agrees_when_we_hold_the_truth(app, svc, sim):
    rider, _ = _world(app, sim)
    _hold_truth(svc, sim, rider.rider_id, rider.athlete_id)
    assert demo.check_consistency(svc, sim, [rider]) == []


def test_check_consistency_finds_a_deleted_row(app, svc, sim):
    rider, ids = _world(app, sim)
    _hold_truth(svc, sim, rider.rider_id, rider.athlete_id)
    with svc.engine.begin() as conn:
        models.delete_activity(conn, ids[0], rider.athlete_id)
    differences = demo.check_consistency(svc, sim, [rider])
    assert f"Ada Lovelace: activity {ids[0]} is missing from our database" in differences


def test_check_consistency_finds_a_changed_field_and_eddington(app, svc, sim):
    rider, ids = _world(app, sim)
    _hold_truth(svc, sim, rider.rider_id, rider.athlete_id)
    renamed = dict(parse_activity(sim.activities(rider.athlete_id)[-1]), name="Tampered")
    assert renamed["id"] in ids
    with svc.engine.begin() as conn:
        models.upsert_activity(conn, rider.rider_id, renamed, now=svc.now())
        models.update_connection(conn, rider.rider_id, eddington_number_km=99)
    differences = demo.check_consistency(svc, sim, [rider])
    assert any(f"activity {renamed['id']} name is 'Tampered'" in d for d in differences)
    assert any("Eddington" in d for d in differences)


def test_check_consistency_counts_private_rows_as_extra_without_read_all(app, svc, sim):
    rider, ids = _world(app, sim, scope=demo.READ_SCOPE)
    _hold_truth(svc, sim, rider.rider_id, rider.athlete_id)  # includes the private one
    differences = demo.check_consistency(svc, sim, [rider])
    assert f"Ada Lovelace: we hold activity {ids[-1]}, Strava does not show it" in differences


def test_run_demo_fails_and_names_the_difference_when_our_database_differs(monkeypatch, capsys):
    real_check = demo.check_consistency

    def check_after_losing_a_row(svc, sim, riders):
        with svc.engine.begin() as conn:
            lost = models.rider_activities(conn, riders[0].rider_id)[0]
            models.delete_activity(conn, lost.id, lost.athlete_id)
        return real_check(svc, sim, riders)

    monkeypatch.setattr(demo, "check_consistency", check_after_losing_a_row)
    assert demo.run_demo(create_app, riders=2, days=1, seed=4, drop_rate=0.0) is False
    out = capsys.readouterr().out
    assert "Consistency check: FAIL" in out
    assert "is missing from our database" in out
