"""Command groups whose known failures end in `Error: <one sentence>` and exit status 1."""

from __future__ import annotations

import logging

import click
from flask.cli import AppGroup, ScriptInfo

from config import ConfigError, Settings, parse
from services import diagnose

log = logging.getLogger(__name__)


def _settings(ctx: click.Context) -> Settings | None:
    try:
        return ctx.ensure_object(ScriptInfo).load_app().extensions["strava_sync"].settings
    except Exception:  # the sentence can do without the URLs
        return None


def say_where(settings: Settings) -> None:
    """Which `.env` was read and where the data and queues are; each likely typo in `.env`.

    A mistyped variable must not silently change the mode: the typo goes to stderr.
    """
    click.echo(f"settings: {settings.dotenv_path or 'no .env file'} and the environment")
    click.echo(f"database: {settings.describe_database()}")
    click.echo(f"queues: {settings.describe_redis()}")
    for note in settings.notes:
        click.echo(f"Warning: {note}", err=True)


class WholeNumber(click.ParamType):
    """A command-line number, read by the settings' parser: ASCII digits, at least `minimum`."""

    name = "integer"

    def __init__(self, minimum: int = 0):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        """The number, or click's usage error naming the option (never a traceback)."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value  # a default given in code
        try:
            return parse.whole(param.human_readable_name if param else "value", value, self.minimum)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class PlainGroup(AppGroup):
    """An AppGroup that turns database, Redis and configuration failures into one sentence."""

    def invoke(self, ctx: click.Context):
        """Run the subcommand; a known failure becomes a ClickException (traceback at debug)."""
        try:
            return super().invoke(ctx)
        except diagnose.KNOWN as exc:
            log.debug("the command failed", exc_info=True)
            raise click.ClickException(diagnose.explain(exc, _settings(ctx))) from None


def plain_command(command: click.Command) -> click.Command:
    """Wrap a top-level command's callback the same way (for commands outside a PlainGroup)."""
    callback = command.callback

    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except diagnose.KNOWN as exc:
            log.debug("the command failed", exc_info=True)
            raise click.ClickException(diagnose.explain(exc)) from None

    command.callback = run
    return command
