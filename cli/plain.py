"""Command groups whose known failures end in `Error: <one sentence>` and exit status 1."""

from __future__ import annotations

import logging

import click
from flask.cli import AppGroup, ScriptInfo

from services import diagnose

log = logging.getLogger(__name__)


def _settings(ctx: click.Context) -> dict:
    try:
        return ctx.ensure_object(ScriptInfo).load_app().config
    except Exception:  # the sentence can do without the URLs
        return {}


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
