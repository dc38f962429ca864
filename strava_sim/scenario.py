"""Scenarios: a cast of simulated riders, a year of history, a day's uploads and changes.

The demo and the day benchmark build their worlds with these, so both ride the same way.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import product

from strava_client import parse_activity
from strava_sim.sim import StravaSim

FULL_SCOPE, READ_SCOPE = "read,activity:read_all", "read,activity:read"
FIRST = ("Ada", "Bea", "Cass", "Dev", "Edda", "Fen", "Gus", "Hana", "Ivo", "Jo", "Kit", "Lior")
LAST = ("Alder", "Birch", "Cole", "Drake", "Ellis", "Frost", "Grey", "Hale", "Ives", "Juniper")
ZONES = (0, 1, 1, 2, -5, -8, 10)  # riders' UTC offsets in hours: local days are not UTC days
SPORTS = {  # sport type: (weight, km range, km/h, titles)
    "Ride": (50, (15, 200), 25, ("Morning Ride", "Coffee loop", "Club run", "Brevet", "Hills")),
    "GravelRide": (15, (20, 120), 19, ("Gravel grind", "Forest tracks")),
    "MountainBikeRide": (5, (15, 60), 14, ("Trail centre",)),
    "Run": (18, (5, 21), 11, ("Morning Run", "Parkrun")),
    "Walk": (12, (2, 10), 5, ("Dog walk", "Afternoon Walk")),
}
NEW_TITLES = ("Windy!", "PR on the climb", "Rain, again", "Cafe stop at km 60", "Flat tyre")
NEW_TYPES = ("GravelRide", "EBikeRide", "MountainBikeRide")  # an e-bike ride does not count
HOUR = 3600


@dataclass
class DemoRider:
    """A simulated athlete and, once connected, our rider."""

    name: str
    athlete_id: int
    scope: str = FULL_SCOPE
    utc_offset: float = 0
    rider_id: int | None = None


def sim_now(sim: StravaSim) -> datetime:
    """The simulator's clock as an aware datetime."""
    return datetime.fromtimestamp(sim.clock.now(), UTC)


def make_cast(sim: StravaSim, rng: random.Random, count: int) -> list[DemoRider]:
    """Create the athletes; one or two of them will grant only activity:read."""
    names = [f"{first} {last}" for first, last in product(FIRST, LAST)]
    rng.shuffle(names)
    names += [f"Rider {n}" for n in range(len(names) + 1, count + 1)]
    limited = set(rng.sample(range(count), 2 if count >= 8 else min(1, count - 1)))
    cast = []
    for i, name in enumerate(names[:count]):
        athlete_id = sim.add_athlete(*name.split(" ", 1))
        scope = READ_SCOPE if i in limited else FULL_SCOPE
        cast.append(DemoRider(name, athlete_id, scope, rng.choice(ZONES)))
    return cast


def record_activity(sim, rng, rider: DemoRider, ended: datetime, private=False, event=True) -> int:
    """Upload one activity of a random sport with a plausible distance, duration and climb."""
    sport = rng.choices(list(SPORTS), weights=[s[0] for s in SPORTS.values()])[0]
    _, (low, high), speed, titles = SPORTS[sport]
    km = rng.triangular(low, high, low + (high - low) * 0.15)
    seconds = int(km / speed * 3600)
    return sim.create_activity(
        rider.athlete_id,
        name=rng.choice(titles),
        sport_type=sport,
        distance=round(km * 1000, 1),
        moving_time=seconds,
        elapsed_time=int(seconds * rng.uniform(1.05, 1.4)),
        total_elevation_gain=round(km * rng.uniform(3, 15), 1),
        start_date=ended - timedelta(seconds=seconds),
        utc_offset_hours=rider.utc_offset,
        private=private,
        event=event,
    )


def give_history(sim: StravaSim, rng: random.Random, cast: list[DemoRider]) -> int:
    """Record 20 to 80 activities over the past year for each rider; returns how many in all."""
    now, total = sim_now(sim), 0
    for rider in cast:
        for _ in range(rng.randint(20, 80)):
            ended = now - timedelta(days=rng.uniform(1, 365))
            record_activity(sim, rng, rider, ended, private=rng.random() < 0.08, event=False)
            total += 1
    return total


def upload_rides(sim: StravaSim, cast: list[DemoRider], rng: random.Random) -> list[tuple]:
    """Most riders upload 0 to 2 activities; returns (activity id, private, rider has read_all)."""
    uploads = []
    for rider in cast:
        for _ in range(rng.choices((0, 1, 2), weights=(30, 45, 25))[0]):
            ended = sim_now(sim) - timedelta(seconds=rng.uniform(0, 10 * HOUR))
            private = rng.random() < 0.1
            activity_id = record_activity(sim, rng, rider, ended, private)
            uploads.append((activity_id, private, rider.scope == FULL_SCOPE))
    return uploads


def change_some(sim: StravaSim, rng: random.Random, uploads: list[tuple]) -> Counter:
    """Retitle or retype about a third of the uploads, then flip privacy on a few, delete a few."""
    done = Counter()
    for activity_id, _, _ in uploads:
        if rng.random() < 0.35:
            done["edits"] += 1
            if rng.random() < 0.6:
                sim.update_activity(activity_id, name=rng.choice(NEW_TITLES))
            else:
                sim.update_activity(activity_id, sport_type=rng.choice(NEW_TYPES))
    sim.clock.advance(HOUR)  # so event_time orders these events however they are delivered
    uploads = rng.sample(uploads, len(uploads))
    # Riders without read_all first: for them, turning an activity private looks like a delete.
    uploads.sort(key=lambda upload: upload[2])
    few = len(uploads) // 8 + 1 if len(uploads) >= 2 else 0
    for activity_id, private, _ in uploads[:few]:
        sim.update_activity(activity_id, private=not private)
    for activity_id, _, _ in uploads[len(uploads) - few :]:
        sim.delete_activity(activity_id)
    done.update(flips=few, deletions=few)
    return done


def visible_truth(sim: StravaSim, rider: DemoRider) -> dict[int, dict]:
    """The rider's activities on Strava as their granted scope lets us see them, as our columns."""
    read_all = "activity:read_all" in rider.scope.split(",")
    return {
        a["id"]: parse_activity(a)
        for a in sim.activities(rider.athlete_id)
        if read_all or not a["private"]
    }
