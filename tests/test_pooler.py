"""End-to-end through a real PgBouncer in transaction mode, as Supabase's transaction pooler runs.

The migration (`flask init-db`), gunicorn's webhook, the rq workers' fetches and the nightly sweep
all reach PostgreSQL only through PgBouncer; the test reads the outcome directly. psycopg 3 must
not keep server-side prepared statements there (models.make_engine turns them off): a statement
prepared on one server connection is unknown on the next transaction's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import REAL_DATABASE, REAL_REDIS
from e2e_support import wait_until
from pgbouncer_support import BINARY, PgBouncer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (REAL_REDIS and REAL_DATABASE),
        reason="the pooler test needs TEST_REDIS_URL and TEST_DATABASE_URL",
    ),
    pytest.mark.skipif(
        BINARY is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
    ),
]


@pytest.fixture
def pooler(tmp_path):
    bouncer = PgBouncer(REAL_DATABASE, tmp_path).start()
    yield bouncer
    bouncer.stop()


def test_webhook_fetch_sweep_and_migration_pass_through_pgbouncer(start_stack, pooler):
    after_start = pooler.transactions()
    stack = start_stack(pooler=pooler)
    migrated = pooler.transactions()
    assert migrated > after_start  # init-db and the start-up checks went through it
    sim = stack.sim
    rider_id, athlete_id = stack.connect_rider("Pooled")
    now = datetime.now(UTC)
    unannounced = sim.create_activity(athlete_id, start_date=now - timedelta(days=1), event=False)
    announced = sim.create_activity(athlete_id, name="Announced")

    stack.deliver()  # the webhook stores the event through the pooler
    stack.wait_idle(timeout=120)
    assert stack.event_statuses_of(announced) == ["done"]
    sweep = stack.start_sweep()
    run = wait_until(
        lambda: (row := stack.run_row(sweep["run_id"])).status != "running" and row,
        timeout=120,
        what="the sweep to finish",
    )

    assert (run.status, run.riders_done) == ("done", 1)
    assert set(stack.stored_activities(rider_id)) == {announced, unannounced}
    assert stack.stored_activities(rider_id) == stack.sim_activities(athlete_id)
    assert pooler.transactions() > migrated
