"""What the benchmarks share: the project on sys.path, services reserved for them, servers, figures.

The benchmarks run as `.venv/bin/python bench/<name>.py`, so Python puts `bench/` first on sys.path
and the project's flat top-level modules (app, models, jobs...) out of reach: importing this module
puts the repository root there too. That is its one side effect, and the reason it is imported
before any project module.

Benchmarks that need real services use Redis database 11 and the PostgreSQL database `bench`,
reserved for them: their keys and tables are wiped at the start and the end of each run, under a
lock so two benchmarks never share them at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent  # gunicorn of the interpreter running the benchmark
BENCH_REDIS_URL = "redis://127.0.0.1:6379/11"
BENCH_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/bench"
LOCK_KEY = "strava-sync-bench:lock"
OUR_KEYS = ("rq:*", "strava-sync*")  # what the app and RQ write; the lock is among them
STOP_TIMEOUT = 10  # seconds a server gets to stop warmly before SIGKILL


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop servers even when we are killed."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# -- figures --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """The value below which `share` (0..1) of the values fall, interpolated; nan if none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine() -> str:
    """nproc, CPU model, RAM and current load of this machine, on one line."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = "unknown RAM"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    load = os.getloadavg()[0]  # other work on the machine skews every figure: say how much
    return (
        f"{os.cpu_count()} CPUs ({model}), {ram}, Python {sys.version.split()[0]}; "
        f"load average {load:.2f} at the start"
    )


def heading(title: str) -> None:
    """Print a section title."""
    print(f"\n{title}\n{'-' * len(title)}")


# -- reserved services ----------------------------------------------------------------------------


def _wipe(conn) -> int:
    wiped = 0
    for pattern in OUR_KEYS:
        for key in conn.scan_iter(pattern, count=1000):
            wiped += conn.delete(key)
    return wiped


@contextlib.contextmanager
def reserved_redis(url: str = BENCH_REDIS_URL) -> Iterator:
    """A Redis client on the benchmarks' database, wiped before and after, held under a lock."""
    import redis  # late: importing this module must stay cheap for --help

    conn = redis.Redis.from_url(url)
    token = uuid.uuid4().hex
    if not conn.set(LOCK_KEY, token, nx=True, ex=3600):
        conn.close()
        raise SystemExit(
            f"another benchmark holds {LOCK_KEY} in {url} (delete the key if none is running)"
        )
    try:
        _wipe(conn)
        conn.set(LOCK_KEY, token, ex=3600)  # the wipe took the lock with everything else
        yield conn
    finally:
        _wipe(conn)
        conn.close()


@contextlib.contextmanager
def fresh_tables(url: str = BENCH_DATABASE_URL) -> Iterator:
    """An engine on the benchmarks' database with the app's tables created empty, dropped after."""
    import config
    import models

    engine = models.make_engine(config.database_url(url, ""))
    try:
        drop_tables(engine)
        models.init_db(engine)
        yield engine
    finally:
        drop_tables(engine)
        engine.dispose()


def drop_tables(engine) -> None:
    """Drop the app's tables and Alembic's record of them, so init-db creates them again."""
    import sqlalchemy as sa

    import models

    models.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))


# -- round trips -----------------------------------------------------------------------------------


@contextlib.contextmanager
def counting_round_trips(engine) -> Iterator[Counter]:
    """Count SQL statements, transactions and pool checkouts (each a pre-ping), and Redis traffic.

    "redis" counts round trips (one command, or one whole pipeline); "redis_commands" counts
    commands as a managed Redis bills them (each command of a pipeline, MULTI and EXEC too).
    """
    import redis
    import sqlalchemy as sa

    counts = Counter()
    listeners = [
        (engine, "before_cursor_execute", lambda *a: counts.update(["sql"])),
        (engine, "begin", lambda *a: counts.update(["transactions"])),
        (engine, "checkout", lambda *a: counts.update(["checkouts"])),
    ]
    for target, name, listener in listeners:
        sa.event.listen(target, name, listener)
    connection = redis.connection.AbstractConnection
    originals = {
        name: getattr(connection, name)
        for name in ("send_packed_command", "send_command", "pack_commands")
    }

    def send_packed_command(self, *args, **kwargs):
        counts["redis"] += 1
        return originals["send_packed_command"](self, *args, **kwargs)

    def send_command(self, *args, **kwargs):
        counts["redis_commands"] += 1
        return originals["send_command"](self, *args, **kwargs)

    def pack_commands(self, commands):
        commands = list(commands)
        counts["redis_commands"] += len(commands)
        return originals["pack_commands"](self, commands)

    patches = (send_packed_command, send_command, pack_commands)
    for name, patched in zip(originals, patches, strict=True):
        setattr(connection, name, patched)
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(connection, name, original)
        for target, name, listener in listeners:
            sa.event.remove(target, name, listener)


# -- servers --------------------------------------------------------------------------------------


SERVERS: dict[str, int] = {}  # base URL -> the server's process group (its session leader's pid)


def peak_memory_mib(url: str) -> float:
    """The largest peak RSS (VmHWM) among the processes of the server at `url`, in MiB."""
    group, peak = SERVERS[url], 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    import requests

    try:
        with requests.get(url, timeout=2) as response:
            return response.status_code < 500
    except (requests.ConnectionError, requests.Timeout):
        return False  # not up yet, or too busy starting to answer in time


def _stop(popen: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (it and its workers), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


@contextlib.contextmanager
def gunicorn(
    app_spec: str, env: dict, *, workers: int = 2, threads: int = 1, ready_path: str = "/"
) -> Iterator[str]:
    """Serve `app_spec` with gunicorn on a free loopback port; yields its base URL, stops it after.

    One thread a worker is gunicorn's default sync worker; more make it a gthread worker. The
    server runs in its own session, so stopping it reaches its workers too and nothing else.
    """
    port = free_port()
    argv = [str(BIN / "gunicorn"), "-w", str(workers), "--threads", str(threads)]
    argv += ["-b", f"127.0.0.1:{port}", "--chdir", str(ROOT), app_spec]
    with tempfile.TemporaryDirectory(prefix="strava-sync-bench-") as home:
        log_path = Path(home) / "gunicorn.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                # Gunicorn 27 keeps a control socket in ~/.gunicorn: keep it out of the real home.
                env=dict(env, HOME=home),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        SERVERS[url] = popen.pid
        try:
            deadline = time.monotonic() + 30
            while not _answers(url + ready_path):
                if popen.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"gunicorn {app_spec} did not start:\n{tail}")
                time.sleep(0.2)
            yield url
        finally:
            _stop(popen)
