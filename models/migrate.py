"""Schema migrations with Alembic, configured in code (no alembic.ini), and the `db` commands.

`upgrade` brings any database to the newest revision: an empty one is built by the revisions, one
the first landing's `create_all` made (tables but no `alembic_version`) is first stamped with the
baseline. The web app and the workers call `check_at_head` (models/revision.py, no Alembic)
before they touch the database.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from models.revision import (  # re-exported: the CLI and diagnose name them from here too
    VERSION_TABLE,
    BadRollback,
    MigrationError,
    SchemaAhead,
    SchemaOutOfDate,
    check_at_head,
    current,
)

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001_baseline"
FIRST_LANDING_TABLE = "riders"  # every database the first landing's create_all made has it
STEPS_BACK = re.compile(r"-(\d+)")


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The revision this code needs."""
    return _scripts().get_current_head()


def history() -> list[str]:
    """The revisions, oldest first, one line each: id and first line of its docstring."""
    return [f"{s.revision}: {s.doc}" for s in reversed(list(_scripts().walk_revisions()))]


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _is_first_landing(conn: Connection) -> bool:
    inspector = sa.inspect(conn)
    return not inspector.has_table(VERSION_TABLE) and inspector.has_table(FIRST_LANDING_TABLE)


def _refuse_unknown(revision: str | None) -> None:
    if revision is not None and revision not in {s.revision for s in _scripts().walk_revisions()}:
        raise SchemaAhead(
            f"the database is at revision {revision}, which this code does not know: "
            "newer code upgraded it, so deploy that code (or restore a backup)"
        )


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database to `revision` (default the newest); returns the revision it was at."""
    with engine.begin() as conn:
        if _is_first_landing(conn):
            command.stamp(_config(conn), BASELINE)
        before = _current(conn)
        _refuse_unknown(before)
        command.upgrade(_config(conn), revision)
    return before


def downgrade(engine: Engine, revision: str) -> str:
    """Roll back to `revision` (an id, or `-1` for one step); returns the revision now current."""
    with engine.begin() as conn:
        before = _current(conn)
        _refuse_unknown(before)
        target = _target(before, revision)
        command.downgrade(_config(conn), target)
    return target


def _target(before: str | None, revision: str) -> str:
    """The revision a downgrade ends at, refusing to leave the baseline (that drops every table)."""
    scripts = _scripts()
    steps = STEPS_BACK.fullmatch(revision)
    target = before
    if steps:
        for _ in range(int(steps.group(1))):
            target = scripts.get_revision(target).down_revision if target else None
    elif revision not in {s.revision for s in scripts.walk_revisions()}:
        raise BadRollback(f"there is no revision {revision}: see flask --app app db history")
    else:
        target = revision
    if target is None:
        raise BadRollback(
            f"rolling back past {BASELINE} would drop every table: restore a backup instead"
        )
    return target


__all__ = [
    "VERSION_TABLE",
    "BadRollback",
    "MigrationError",
    "SchemaAhead",
    "SchemaOutOfDate",
    "check_at_head",
    "current",
    "downgrade",
    "head",
    "history",
    "upgrade",
]
