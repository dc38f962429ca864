"""Deployment files: Vercel's entry and config, the GitHub workflows, the Procfile."""

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import models

ROOT = Path(__file__).resolve().parent.parent


def test_vercel_routes_every_path_to_the_wsgi_entry():
    config = json.loads((ROOT / "vercel.json").read_text())
    assert config["$schema"] == "https://openapi.vercel.sh/vercel.json"
    assert set(config) <= {"$schema", "rewrites", "functions", "crons"}
    [rule] = config["rewrites"]
    assert rule == {"source": "/(.*)", "destination": "/api/index"}
    assert (ROOT / "api" / "index.py").read_text().count("\n") <= 5


def test_vercel_entry_exposes_the_app(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/vercel.sqlite")
    monkeypatch.setenv("INLINE_OK", "1")  # this test's deployment runs inline on purpose
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(32))
    monkeypatch.setenv("PUBLIC_URL", "https://club.example.org")
    monkeypatch.setenv("STRAVA_CLIENT_ID", "4242")
    monkeypatch.setenv("STRAVA_CLIENT_SECRET", "client-secret")
    spec = importlib.util.spec_from_file_location("vercel_entry", ROOT / "api" / "index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        models.init_db(module.app.extensions["strava_sync"].engine)  # a deploy runs init-db first
        assert module.app.test_client().get("/healthz").status_code == 200
    finally:
        module.app.extensions["strava_sync"].engine.dispose()


def test_workflows_match_githubs_schema_and_have_timeouts():
    pytest.importorskip("check_jsonschema")
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    for schema in ("vendor.github-workflows", "custom.github-workflows-require-timeout"):
        result = subprocess.run(
            [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *workflows],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_nightly_workflow_is_scheduled_and_manual_with_its_inputs():
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "reconcile.yml").read_text())
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"].split()[0] not in ("0", "*")  # off the busy hour mark
    assert set(triggers["workflow_dispatch"]["inputs"]) == {"dry_run", "max_riders"}
    assert flow["permissions"] == {"contents": "read"}
    script = flow["jobs"]["sweep"]["steps"][0]["run"]
    assert "/api/cron/reconcile" in script and "GITHUB_STEP_SUMMARY" in script


def test_procfile_runs_workers_with_the_scheduler_on_both_queues():
    procfile = (ROOT / "Procfile").read_text()
    assert "rq worker" in procfile and "--with-scheduler strava reconcile" in procfile


@pytest.mark.parametrize(
    ("max_riders", "refused"), [("abc", True), ("-1", True), ("2.5", True), ("25", False)]
)
def test_nightly_workflow_refuses_a_bad_max_riders_before_calling(tmp_path, max_riders, refused):
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "reconcile.yml").read_text())
    script = flow["jobs"]["sweep"]["steps"][0]["run"]
    guard = script[: script.index("body=")]  # the checks before anything is sent
    env = {"PATH": "/usr/bin:/bin", "MAX_RIDERS": max_riders, "APP_URL": "http://127.0.0.1:9"}
    env["CRON_SECRET"] = "x"
    result = subprocess.run(
        ["bash", "-c", guard], env=env, capture_output=True, text=True, check=False
    )
    if refused:
        assert result.returncode == 1
        assert result.stdout.strip() == (
            f"::error::max_riders must be empty or a whole number such as 25, not '{max_riders}'"
        )
    else:
        assert (result.returncode, result.stdout) == (0, "")
