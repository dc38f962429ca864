"""A stateful simulator of the parts of Strava strava-sync uses, served over loopback.

It speaks Strava's OAuth, activity and push-subscription API with Strava's field names, error
bodies, rate-limit headers and quirks, counts every request it receives so tests can assert on
Strava's side of the conversation, and pushes webhook events on demand. It is deterministic given
a seed, and it only ever calls back to loopback addresses.

The package: `clock` (SimClock), `records` (an activity, a grant, Faults), `world` (the state),
`oauth` and `api` (the HTTP views), `push` (event delivery), `wire` (Strava's formats), `sim`
(StravaSim, which puts them together), `serve` (loopback serving), `scenario` (riders and their
activities for the demo and the benchmarks) and `control` (the HTTP control API that
`flask --app app simulate` adds).
"""

from strava_sim.clock import SimClock
from strava_sim.records import Faults
from strava_sim.sim import StravaSim

__all__ = ["Faults", "SimClock", "StravaSim"]
