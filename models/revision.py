"""Which schema revision a database is at, and which this code needs, without loading Alembic.

A serverless cold start checks the schema on its first request; Alembic (and its migration
scripts) load only where migrations run (`models.migrate`). The revision ids are the file names
of the scripts in migrations/versions (a test holds Alembic's own head to this one).
"""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"
VERSION_TABLE = "alembic_version"


class MigrationError(Exception):
    """The database's schema is not, or cannot be brought to, what this code needs."""


class SchemaAhead(MigrationError):
    """The database is at a revision this code does not know (newer code upgraded it)."""


class SchemaOutOfDate(MigrationError):
    """The database is not at the revision this code needs."""


class BadRollback(MigrationError):
    """A downgrade this code refuses to run."""


@functools.cache
def head() -> str:
    """The revision this code needs: the newest script's (its file name, numbered in order)."""
    return max(p.stem for p in VERSIONS.glob("[0-9]*.py"))


def current(engine: Engine) -> str | None:
    """The database's revision (None: empty, or made by the first landing's create_all)."""
    with engine.connect() as conn:
        return current_of(conn)


def current_of(conn: Connection) -> str | None:
    """The revision recorded in the version table, read on an open connection."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    query = sa.select(sa.column("version_num")).select_from(sa.table(VERSION_TABLE))
    return conn.execute(query).scalar()


def check_at_head(engine: Engine) -> None:
    """Raise SchemaOutOfDate unless the database is at the revision this code needs."""
    found, needed = current(engine), head()
    if found != needed:
        raise SchemaOutOfDate(
            f"the database is at revision {found or 'none'}, this code needs {needed}: "
            "run flask --app app init-db"
        )
