"""`flask --app app simulate [--port N]`: the Strava simulator as a long-running process.

Rehearse a deployment on a laptop: point STRAVA_API_URL and STRAVA_OAUTH_URL at it, use its
client id and secret, and drive Strava's side with the control API (`strava_sim.control`).
"""

from __future__ import annotations

import click
from werkzeug.serving import make_server

from cli.plain import plain_command
from strava_sim import StravaSim
from strava_sim.control import make_blueprint
from strava_sim.serve import QuietHandler


@plain_command
@click.command("simulate", short_help="Serve the Strava simulator on 127.0.0.1.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--seed", default=1, show_default=True, help="Seed of the simulated world.")
@click.option("--client-id", default="4242", show_default=True, help="The app's client id.")
@click.option(
    "--client-secret",
    default="sim-client-secret",
    show_default=True,
    help="The app's client secret.",
)
def simulate_command(port, seed, client_id, client_secret):
    """Serve the Strava simulator on 127.0.0.1 until interrupted (Ctrl-C)."""
    sim = StravaSim(seed=seed, client_id=client_id, client_secret=client_secret)
    sim.app.register_blueprint(make_blueprint(sim))
    server = make_server("127.0.0.1", port, sim.app, threaded=True, request_handler=QuietHandler)
    base = f"http://127.0.0.1:{server.server_port}"
    for line in (
        f"Strava simulator on {base} (control API: {base}/_sim, see strava_sim/control.py)",
        "Point the app at it:",
        f"  STRAVA_API_URL={base}/api/v3",
        f"  STRAVA_OAUTH_URL={base}/oauth",
        f"  STRAVA_CLIENT_ID={client_id}",
        "  STRAVA_CLIENT_SECRET=<the --client-secret given; default in --help>",
    ):
        click.echo(line)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
