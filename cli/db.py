"""`flask --app app init-db` and `flask --app app db ...`: the migrations, for operators."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import click
from alembic.util import CommandError
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from cli.plain import say_where
from models.migrate import MigrationError, current, downgrade, head, history, upgrade
from services.diagnose import explain
from web.extension import current_services

log = logging.getLogger(__name__)


@contextmanager
def plainly() -> Iterator[None]:
    """Turn a refusal into one sentence on stderr and exit status 1; the traceback goes to debug."""
    try:
        yield
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    except CommandError as exc:
        raise click.ClickException(f"Alembic refused: {exc}") from None
    except SQLAlchemyError as exc:
        log.debug("migration failed", exc_info=True)
        raise click.ClickException(f"the migration failed: {explain(exc)}") from None


@click.command("init-db", short_help="Create or upgrade the database tables (safe to repeat).")
@with_appcontext
def init_db_command():
    """Create the database at the newest schema, or upgrade it (safe to run again)."""
    say_where(current_services().settings)
    with plainly():
        before = upgrade(current_services().engine)
    click.echo(f"Database ready at revision {head()} (was {before or 'empty'}).")


db = AppGroup("db", help="Schema migrations (Alembic); a deploy only needs `init-db`.")


def _engine() -> Engine:
    return current_services().engine


@db.command("upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision):
    """Upgrade the database to REVISION (default: the newest)."""
    with plainly():
        before = upgrade(_engine(), revision)
        click.echo(f"Database at revision {current(_engine())} (was {before or 'empty'}).")


@db.command(
    "downgrade",
    context_settings={"ignore_unknown_options": True},
    short_help="Roll back to REVISION (an id, or -1 for one step).",
)
@click.argument("revision")
def downgrade_command(revision):
    """Roll back to REVISION (an id, or -1 for one step); columns it added are dropped."""
    with plainly():
        click.echo(f"Database at revision {downgrade(_engine(), revision)}.")


@db.command("current")
def current_command():
    """Print the database's revision and the one this code needs."""
    with plainly():
        click.echo(f"database: {current(_engine()) or 'none'}, this code needs: {head()}")


@db.command("history")
def history_command():
    """List the revisions, oldest first."""
    for line in history():
        click.echo(line)
