"""What the fault suite injects faults into: its own Redis, a cuttable database link, the stack.

`OwnRedis` is a `redis-server` on a free loopback port that the suite may stop, pause (SIGSTOP)
and restart empty; the shared Redis on 6379 is never touched. `CuttableProxy` forwards a local
port to PostgreSQL and can cut every connection and refuse new ones until restored. `FaultStack`
is the end-to-end `Stack` with its workers supervised (`supervise.py`, Restart=always) and run with
RQ's maintenance knobs, and its processes reaching the database only through the proxy.
`Scoreboard` holds one row per fault for the table printed at the end of the suite.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
import requests
import sqlalchemy as sa
from e2e_support import BIN, WORKERS, Stack, free_port, start_process, wait_until
from rq import Worker

import config
import models
from strava_sim.push import post_event


def procfile_worker(redis_url: str) -> list[str]:
    """The Procfile's worker command, on `redis_url`.

    The faults meet the workers as deployed: our worker class (its maintenance runs the recovery
    pass, which queues events stored while Redis was away; a stock `rq worker` never does) and
    RQ's knobs (the loop comes round at least every worker_ttl - 15 s, and then restarts a crashed
    scheduler once maintenance is due; together they bound how long a retry can be stuck).
    """
    procfile = (Path(__file__).resolve().parents[2] / "Procfile").read_text()
    line = next(ln for ln in procfile.splitlines() if ln.startswith("worker:"))
    command = shlex.split(line.removeprefix("worker:"))
    assert command[:2] == ["rq", "worker"], line
    return [str(BIN / "rq"), *(redis_url if a == "$REDIS_URL" else a for a in command[1:])]


class OwnRedis:
    """A redis-server of the suite's own; its append-only file keeps data across a stop."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = log_dir / "redis-data"
        self.dir.mkdir(exist_ok=True)
        self.popen: subprocess.Popen | None = None

    def start(self) -> OwnRedis:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        wait_until(lambda: _pings(client), timeout=10, what="our redis-server")
        client.close()
        return self

    def stop(self) -> None:
        """Shut down as an operator's restart does (the data stays on disk)."""
        if self.popen is not None and self.popen.poll() is None:
            self.resume()
            self.popen.terminate()
            self.popen.wait(timeout=30)

    def restart_empty(self) -> None:
        """Stop, lose every key (a new host, or a Redis without persistence), start again."""
        self.stop()
        shutil.rmtree(self.dir)
        self.dir.mkdir()
        self.start()

    def pause(self) -> None:
        os.kill(self.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGCONT)


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


class CuttableProxy:
    """A TCP forwarder on loopback whose link can be cut (every connection reset) and restored."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_now = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_now.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                self._close(s)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones, as a dropped network link does."""
        self.cut_now.set()
        with self._lock:
            victims = list(self._open)
        for sock in victims:
            self._close(sock)

    def restore(self) -> None:
        self.cut_now.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def via_proxy(database_url: str, port: int) -> str:
    """The same database URL, reached through the proxy's port."""
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


class FaultStack(Stack):
    """The end-to-end stack on our own Redis and the proxied database, workers supervised."""

    def __init__(self, sim, database_url: str, own_redis: OwnRedis, proxy: CuttableProxy, tmp):
        super().__init__(sim, via_proxy(database_url, proxy.port), own_redis.url, tmp)
        self.engine.dispose()
        self.engine = models.make_engine(config.database_url(database_url, ""))  # direct
        self.own_redis, self.proxy = own_redis, proxy
        self.env["RECONCILE_MIN_INTERVAL_HOURS"] = "0"  # sweeps by hand, back to back

    def start(self) -> FaultStack:
        self.start_web()
        supervisor = [str(BIN / "python"), str(Path(__file__).with_name("supervise.py"))]
        worker = procfile_worker(self.env["REDIS_URL"])
        for i in range(WORKERS):
            argv = [*supervisor, *worker]
            self.workers.append(start_process(f"worker-{i}", argv, self.env, self.tmp_path))
        wait_until(self._healthy, timeout=30, what="gunicorn to answer /healthz")
        wait_until(self._workers_registered, timeout=30, what=f"{WORKERS} rq workers to register")
        self.create_subscription()
        return self

    def _check_alone(self) -> None:
        """Our own redis-server: no other worker can be on it."""

    def _workers_registered(self) -> bool:
        self._check_running()
        return _count_workers(self.redis) == WORKERS

    def post_outbox(self) -> list[dict]:
        """Deliver the sim's outbox as Strava does (three quick tries); returns what got a 200."""
        with self.sim._lock:
            batch, self.sim.outbox = self.sim.outbox, []
        accepted = []
        with requests.Session() as session:
            for payload in batch:
                payload = dict(payload, subscription_id=self.sim.subscription["id"])
                if post_event(session, self.callback_url, payload)[0]:
                    accepted.append(payload)
        return accepted


def _count_workers(conn: redis.Redis) -> int:
    try:
        return Worker.count(connection=conn)
    except redis.RedisError:
        return -1


@dataclass
class Outcome:
    """One fault's row in the table."""

    fault: str
    lost: int = 0
    wrong: int = 0
    false_revocations: int = 0
    stuck: int = 0
    recover_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def clean(self) -> bool:
        return not (self.lost or self.wrong or self.false_revocations or self.stuck)


class Scoreboard:
    """Rows collected by the suite's tests, printed as a table when the suite ends."""

    def __init__(self):
        self.rows: list[Outcome] = []

    def table(self) -> list[str]:
        head = "| fault | events lost | rows wrong | false revocations | stuck | time to recover |"
        lines = [head, "|---|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(
                f"| {r.fault} | {r.lost} | {r.wrong} | {r.false_revocations} | {r.stuck} "
                f"| {r.recover_s:.0f} s |"
            )
        return lines


def assess(stack: FaultStack, accepted: list[dict], riders: list[tuple[int, int]], fault: str):
    """Count what the fault did to the outcome: lost events, wrong rows, revocations, stuck."""
    outcome = Outcome(fault)
    table = models.webhook_event
    with stack.engine.connect() as conn:
        stored = conn.execute(
            sa.select(table.c.object_id, table.c.aspect_type, table.c.event_time, table.c.status)
        ).all()
        connections = [models.get_connection(conn, r) for r, _ in riders]
        running = len(models.running_runs(conn))
    final = {(r.object_id, r.aspect_type, r.event_time) for r in stored if r.status in FINAL}
    outcome.lost = sum(
        (p["object_id"], p["aspect_type"], p["event_time"]) not in final for p in accepted
    )
    for rider_id, athlete_id in riders:
        ours, truth = stack.stored_activities(rider_id), stack.sim_activities(athlete_id)
        outcome.wrong += len(ours.keys() ^ truth.keys())
        outcome.wrong += sum(ours[i] != truth[i] for i in ours.keys() & truth.keys())
    outcome.false_revocations = sum(c.deauthorized_at is not None for c in connections)
    outcome.stuck = sum(r.status in ("pending", "queued") for r in stored) + running
    return outcome


FINAL = ("done", "ignored", "failed")
