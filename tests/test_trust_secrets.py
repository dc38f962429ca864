"""No log line, HTTP answer or command output of a full run holds a secret or a token."""

import logging
import os
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa
from conftest import configure, event, make_app, run_jobs
from cryptography.fernet import Fernet
from e2e_support import BIN, free_port, start_process, wait_until

import models
from app import RedactSecrets
from strava_client import Unreachable
from strava_sim.serve import LoopbackServer

SECRET_KEY = "scan-secret-key-5b1f0c6e9d"
VERIFY = "scan-verify-token-8c2d"
CRON = "scan-cron-secret-41aa"


class Recorder:
    """Everything a person or a log file would see: HTTP answers, CLI output."""

    def __init__(self, app):
        self.client = app.test_client()
        self.runner = app.test_cli_runner()
        self.seen: list[str] = []

    def http(self, method, url, **kw):
        answer = getattr(self.client, method)(url, **kw)
        self.seen += [answer.get_data(as_text=True), str(answer.headers)]
        return answer

    def cli(self, *args, input=None):
        result = self.runner.invoke(args=list(args), input=input)
        self.seen += [result.output, result.stderr]
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            self.seen.append(repr(result.exception))
        return result


def connect_through_invite(rec, sim, svc, rider_id, athlete):
    url = rec.cli("strava", "invite", str(rider_id)).output.strip().splitlines()[-1]
    start = rec.http("get", f"/strava/connect?{urlsplit(url).query}")
    sim.login_as(athlete)
    at_strava = requests.get(start.location, allow_redirects=False, timeout=5)
    back = urlsplit(at_strava.headers["Location"])
    assert rec.http("get", f"{back.path}?{back.query}", follow_redirects=True).status_code == 200


def full_run(app, svc, sim, rec):
    """Subscription, connect, events, sweep, a refresh, then everything again with Strava down."""
    assert rec.cli("strava", "subscription", "create").exit_code == 0
    rec.cli("strava", "subscription", "show")
    with svc.engine.begin() as conn:
        rider = models.create_rider(conn, "Scanned Rider", now=svc.now())
    athlete = sim.add_athlete("Scanned", "Rider")
    old = sim.create_activity(athlete, event=False)
    connect_through_invite(rec, sim, svc, rider, athlete)
    run_jobs(app)
    ride = sim.create_activity(athlete, name="Scan ride")
    for body in (event(athlete, ride), event(athlete, old, "update", event_time=9)):
        rec.http("post", "/api/strava/webhook", json=body)
    rec.http(
        "get", f"/api/strava/webhook?hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=c"
    )
    rec.http("get", "/api/strava/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=c")
    run_jobs(app)
    with svc.engine.begin() as conn:  # the next job must refresh the token pair
        models.update_connection(conn, rider, expires_at=0)
    sim.clock.advance(5.5 * 3600)  # and Strava then issues a new pair
    rec.http("post", "/api/cron/reconcile", headers={"Authorization": f"Bearer {CRON}"}, json={})
    rec.http("post", "/api/cron/reconcile", headers={"Authorization": "Bearer wrong"})
    run_jobs(app)
    sim.delete_activity(ride)
    rec.http("post", "/api/strava/webhook", json=event(athlete, ride, "delete", event_time=20))
    run_jobs(app)
    rec.cli("strava", "status")
    rec.cli("strava", "reconcile", "--dry-run", "--no-wait")
    run_jobs(app)
    rec.http("get", "/healthz")
    sim.stop()  # Strava unreachable from here on
    rec.cli("strava", "subscription", "show")
    rec.cli("strava", "subscription", "delete", "--yes")
    rec.cli("strava", "subscription", "delete", "--id", "1", "--yes")
    rec.cli("strava", "subscription", "create")
    rec.cli("strava", "status")
    rec.http("post", "/api/strava/webhook", json=event(athlete, ride + 1, event_time=30))
    with svc.engine.begin() as conn:
        models.update_connection(conn, rider, expires_at=0)
    run_jobs(app)
    start = rec.http("get", "/strava/connect")
    state = dict(p.split("=", 1) for p in urlsplit(start.location).query.split("&"))["state"]
    rec.http("get", f"/strava/callback?state={state}&code=abc&scope=activity:read_all")
    with svc.engine.connect() as conn:
        table = models.webhook_event
        rec.seen += [str(r.error) for r in conn.execute(sa.select(table.c.error))]
        rec.seen += [str(r.error) for r in conn.execute(sa.select(models.sync_run.c.error))]


def test_attack_no_secret_reaches_a_log_an_answer_or_a_cli_output(database_url, sim, caplog):
    caplog.set_level(logging.DEBUG)
    key = Fernet.generate_key().decode()
    app = make_app(
        database_url,
        sim,
        SECRET_KEY=SECRET_KEY,
        STRAVA_VERIFY_TOKEN=VERIFY,
        CRON_SECRET=CRON,
        TOKEN_ENCRYPTION_KEY=key,
        PUBLIC_URL="http://club.test",
    )
    svc = app.extensions["strava_sync"]
    with LoopbackServer(app) as live:
        configure(app, strava_callback_url=live.url + "/api/strava/webhook")
        rec = Recorder(app)
        full_run(app, svc, sim, rec)
    issued = sim.issued_secrets()
    assert len(issued) >= 5  # a code and two token pairs at least: the scan covers them
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logs = [formatter.format(r) for r in caplog.records]
    assert any("Unreachable" in line or "could not reach" in line for line in logs + rec.seen)
    secrets = {
        "client secret": sim.client_secret,
        "verify token": VERIFY,
        "cron secret": CRON,
        "encryption key": key,
        "SECRET_KEY": SECRET_KEY,
        **{f"issued token or code {i}": s for i, s in enumerate(issued)},
    }
    leaks = {
        name: text[max(0, text.find(value) - 80) : text.find(value) + 80]
        for name, value in secrets.items()
        for text in logs + rec.seen
        if value in text
    }
    assert leaks == {}


def test_werkzeug_and_urllib3_request_lines_are_redacted(app, caplog):
    caplog.set_level(logging.DEBUG)
    line = "GET /api/strava/webhook?hub.mode=subscribe&hub.verify_token=tok1&hub.challenge=c"
    logging.getLogger("werkzeug").info('%s - - "%s" %s %s', "127.0.0.1", line, 200, "-")
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s',
        "https", "www.strava.com", 443, "GET",
        "/api/v3/push_subscriptions?client_id=1&client_secret=sec2", "HTTP/1.1", 200, 2,
    )  # fmt: skip
    logging.getLogger("werkzeug").info("GET /strava/callback?state=st3&code=cod4 200")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not {"tok1", "sec2", "st3", "cod4"} & set(text.replace("=", " ").split())
    assert text.count("[redacted]") == 4


def test_redaction_handles_gunicorns_dict_arguments():
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, '%(h)s "%(r)s" %(s)s %(q)s',
        ({"h": "127.0.0.1", "r": "GET /w?hub.verify_token=zz9 HTTP/1.1", "s": "200",
          "q": "hub.verify_token=zz9&hub.challenge=c"},), None,
    )  # fmt: skip
    RedactSecrets().filter(record)
    message = record.getMessage()
    assert "zz9" not in message and message.count("[redacted]") == 2


def test_attack_verify_token_stays_out_of_gunicorns_access_log(database_url, sim, tmp_path):
    app = make_app(database_url, sim)  # brings the database to the newest schema
    app.extensions["strava_sync"].close()
    port = free_port()
    access_log = tmp_path / "access.log"
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        STRAVA_VERIFY_TOKEN=VERIFY,
        SECRET_KEY=SECRET_KEY,
        INLINE_WORKER="0",
        HOME=str(tmp_path),  # gunicorn 27 keeps a control socket under ~/.gunicorn
    )
    env.pop("REDIS_URL", None)
    argv = [str(BIN / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}"]
    argv += ["--access-logfile", str(access_log), "app:create_app()"]
    web = start_process("gunicorn-access", argv, env, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:

        def answers():
            try:
                return requests.get(url + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:  # not listening yet, or a worker still booting
                return False

        wait_until(answers, timeout=30, what="gunicorn to answer /healthz")
        query = f"hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=c1"
        assert requests.get(f"{url}/api/strava/webhook?{query}", timeout=5).status_code == 200
        requests.get(f"{url}/strava/callback?state=st9&code=onetimecode9", timeout=5)
        # Gunicorn writes the line after the answer is sent.
        wait_until(lambda: "/strava/callback" in access_log.read_text(), timeout=10, what="log")
    finally:
        web.stop()
    text = access_log.read_text()
    assert "/api/strava/webhook" in text and "[redacted]" in text
    assert VERIFY not in text
    assert "onetimecode9" not in text and "st9" not in text


def test_attack_strava_unreachable_prints_no_client_secret(app, runner, sim):
    sim.stop()
    for args in (["show"], ["delete", "--yes"], ["delete", "--id", "7", "--yes"]):
        result = runner.invoke(args=["strava", "subscription", *args])
        assert result.exit_code == 1, result.output
        assert "could not reach Strava at 127.0.0.1/api/v3/push_subscriptions" in result.stderr
        assert sim.client_secret not in result.output and "Traceback" not in result.output


def test_network_error_names_the_call_and_host_never_the_query(app):
    client = app.extensions["strava_sync"].client
    client.api_url = "http://127.0.0.1:1/api/v3"  # nothing listens there
    try:
        client.list_subscriptions()
    except Unreachable as exc:
        assert str(exc) == (
            "view subscription: could not reach Strava at 127.0.0.1/api/v3/push_subscriptions "
            "(ConnectionError)"
        )
        assert exc.__cause__ is None and exc.__suppress_context__
    else:
        raise AssertionError("no Unreachable raised")


@pytest.mark.parametrize("call", ["revoke", "deauthorize"])
def test_a_revocation_that_cannot_reach_strava_is_unreachable_without_the_secret(app, call):
    """Disconnect's calls take the client's one send path: a network error is Unreachable."""
    client = app.extensions["strava_sync"].client
    client.oauth_url = "http://127.0.0.1:1/oauth"  # nothing listens there
    with pytest.raises(Unreachable) as caught:
        getattr(client, call)("a-token-9f")
    assert str(caught.value) == (
        f"{call}: could not reach Strava at 127.0.0.1/oauth/{call} (ConnectionError)"
    )
    assert "a-token-9f" not in str(caught.value) and caught.value.__cause__ is None


def test_attack_redaction_keeps_gunicorns_header_atoms_working():
    from gunicorn.glogging import SafeAtoms

    atoms = SafeAtoms({"r": "GET /w?code=zz8 HTTP/1.1", "{x-forwarded-for}i": "10.0.0.9"})
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1,
        '%(r)s %({X-Forwarded-For}i)s %({referer}i)s', (atoms,), None,
    )  # fmt: skip
    RedactSecrets().filter(record)
    assert record.getMessage() == "GET /w?code=[redacted] HTTP/1.1 10.0.0.9 -"
