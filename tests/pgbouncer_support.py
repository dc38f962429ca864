"""A real PgBouncer in transaction mode in front of the test PostgreSQL, as Supabase's pooler is.

Started by the end-to-end harness when Debian's `pgbouncer` is installed (`.ci/run` installs it),
on a loopback port, with its configuration in a folder of its own. PgBouncer refuses to run as
root, so as root it runs as the `postgres` user, which must be able to read that folder.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import psycopg
from e2e_support import Process, free_port, start_process, wait_until
from sqlalchemy.engine import make_url

BINARY = shutil.which("pgbouncer", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/userlist.txt
admin_users = {user}
pool_mode = transaction
max_client_conn = 200
default_pool_size = 10
ignore_startup_parameters = extra_float_digits,options
"""


class PgBouncer:
    """One PgBouncer process; `url` is the database URL that goes through it."""

    def __init__(self, database_url: str, log_dir: Path):
        self.target = make_url(database_url)
        self.port = free_port()
        self.url = self.target.set(host="127.0.0.1", port=self.port).render_as_string(False)
        self.folder = Path(tempfile.mkdtemp(prefix="strava-sync-pgbouncer-"))
        self.log_dir = log_dir
        self.process: Process | None = None

    def start(self) -> PgBouncer:
        """Write the configuration, start PgBouncer and wait until it answers."""
        user = self.target.username or "postgres"
        ini = self.folder / "pgbouncer.ini"
        target = {"host": self.target.host or "127.0.0.1", "port": self.target.port or 5432}
        ini.write_text(CONFIG.format(**target, listen=self.port, folder=self.folder, user=user))
        (self.folder / "userlist.txt").write_text(f'"{user}" ""\n')
        readable = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        self.folder.chmod(readable | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IWUSR)
        for path in self.folder.iterdir():
            path.chmod(readable | stat.S_IWUSR)
        argv = [BINARY, *(["-u", "postgres"] if os.getuid() == 0 else []), str(ini)]
        self.process = start_process("pgbouncer", argv, dict(os.environ), self.log_dir)
        wait_until(self._answers, timeout=30, what="pgbouncer to accept connections")
        return self

    def _answers(self) -> bool:
        if not self.process.running():
            raise AssertionError(f"pgbouncer exited:\n{self.process.tail()}")
        try:
            self.transactions()
        except psycopg.OperationalError:
            return False
        return True

    def transactions(self) -> int:
        """Transactions PgBouncer has passed to the database so far (its SHOW STATS)."""
        admin = self.target.set(database="pgbouncer", host="127.0.0.1", port=self.port)
        dsn = admin.render_as_string(False).replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
            rows = conn.execute("SHOW STATS").fetchall()
            columns = [c.name for c in conn.execute("SHOW STATS").description]
        by_name = {r[columns.index("database")]: r for r in rows}
        row = by_name.get(self.target.database)
        return row[columns.index("total_xact_count")] if row else 0

    def stop(self) -> None:
        """Stop PgBouncer and remove its folder."""
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
