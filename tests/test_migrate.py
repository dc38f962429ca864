"""Schema migrations: first-landing databases upgrade without loss, models match migrations."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import make_app
from fixtures import first_landing_schema as first

import models
from models import migrate

T0 = datetime(2026, 3, 1, 7, 30, tzinfo=UTC)
HEAD = migrate.head()
TO_BASELINE = len(migrate.history()) - 1  # revisions above the baseline
BEHIND = (
    f"the database is at revision 0001_baseline, this code needs {HEAD}: "
    "run flask --app app init-db"
)


@pytest.fixture
def engine(database_url):
    engine = models.make_engine(database_url)
    yield engine
    engine.dispose()


def fill_first_landing(engine) -> None:
    """Riders, connections, activities, events, runs and a setting, as the first landing wrote."""
    first.metadata.create_all(engine)
    with engine.begin() as conn:
        # Ids from the database (1 and 2 in a new one), so its sequence has counted them.
        conn.execute(first.riders.insert(), [
            {"name": "Ada Lovelace", "created_at": T0}, {"name": "Alan Turing", "created_at": T0},
        ])  # fmt: skip
        conn.execute(first.strava_connection.insert().values(
            rider_id=1, athlete_id=1001, access_token="fernet:a", refresh_token="r",
            expires_at=1772350200, scope="read,activity:read_all", connected_at=T0, last_sync=T0,
            last_reconciled_at=T0, eddington_number_miles=12, eddington_number_km=20,
            backfill_before=0,
        ))  # fmt: skip
        conn.execute(
            first.strava_connection.insert().values(rider_id=2, athlete_id=1002, deauthorized_at=T0)
        )
        conn.execute(first.strava_activity.insert(), [
            {"id": 9000 + i, "rider_id": 1, "athlete_id": 1001, "name": f"Ride {i}",
             "sport_type": "Ride", "start_date": T0, "start_date_local": T0.replace(tzinfo=None),
             "timezone": "Europe/London", "distance": 1000.5 * i, "moving_time": 60 * i,
             "elapsed_time": 70 * i, "total_elevation_gain": 3.5, "private": i % 2 == 0,
             "manual": False, "trainer": None, "commute": True, "fetched_at": T0}
            for i in range(1, 4)
        ])  # fmt: skip
        conn.execute(first.webhook_event.insert(), [
            {"received_at": T0, "subscription_id": 120475, "object_type": "activity",
             "object_id": 9001, "aspect_type": "create", "owner_id": 1001, "event_time": 1772350200,
             "updates": "{}", "status": status, "attempts": 1, "identity": f"{status:0<64}"}
            for status in ("done", "queued", "failed")
        ])  # fmt: skip
        conn.execute(first.sync_run.insert(), [
            {"kind": "reconcile", "trigger": "cron", "started_at": T0, "finished_at": T0,
             "status": "ok", "dry_run": False, "riders_planned": 2, "riders_deferred": 0,
             "riders_done": 2, "riders_rescheduled": 0, "requests_used": 7,
             "activities_created": 3, "activities_updated": 1, "activities_deleted": 0,
             "activities_unannounced": 1},
        ])  # fmt: skip
        conn.execute(first.kv.insert(), [{"key": "subscription_id", "value": "120475"}])


def first_landing_rows(engine) -> dict[str, list]:
    """Every row of every first-landing table, read through the first landing's columns."""
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(t).order_by(*t.primary_key.columns)).all()
            for t in first.metadata.sorted_tables
        }


def schema_differences(engine, metadata) -> list:
    """What Alembic's autogenerate would change to make the database match `metadata`."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, metadata)


def test_init_db_upgrades_a_first_landing_database_without_losing_a_row(database_url, engine):
    fill_first_landing(engine)
    before = first_landing_rows(engine)
    app = make_app(database_url, init_db=False)

    result = app.test_cli_runner().invoke(args=["init-db"])

    assert result.exit_code == 0, result.output
    assert f"at revision {HEAD} (was 0001_baseline)" in result.output
    assert first_landing_rows(engine) == before
    assert sum(len(rows) for rows in before.values()) == 12
    assert migrate.current(engine) == migrate.head()


def test_init_db_gives_old_rows_the_new_columns_defaults(database_url, engine):
    fill_first_landing(engine)
    make_app(database_url, init_db=False).test_cli_runner().invoke(args=["init-db"])

    with engine.begin() as conn:
        connections = conn.execute(sa.select(models.strava_connection)).all()
        assert [
            (c.needs_reconnect_since, c.leaderboard_hidden, c.history_verified_at)
            for c in connections
        ] == [(None, False, None)] * 2
        assert conn.execute(sa.select(models.webhook_event.c.job_id)).scalars().all() == [None] * 3
        assert conn.execute(sa.select(models.sync_run.c.progress_at)).scalars().all() == [None]
        generations = sa.select(models.riders.c.session_generation)
        assert conn.execute(generations).scalars().all() == [0, 0]
        conn.execute(
            models.strava_invite.insert().values(
                id="nonce", rider_id=1, created_at=T0, expires_at=T0, used_at=None
            )
        )
        # Ids keep counting after the upgrade (PostgreSQL sequences, SQLite rowids).
        assert models.create_rider(conn, "Grace Hopper") == 3


@pytest.mark.parametrize("start", ["empty", "first landing"])
def test_migrations_build_what_the_models_describe(engine, start):
    if start == "first landing":
        fill_first_landing(engine)

    migrate.upgrade(engine)

    assert schema_differences(engine, models.metadata) == []


def test_baseline_is_the_first_landings_schema(engine):
    migrate.upgrade(engine, migrate.BASELINE)

    assert schema_differences(engine, first.metadata) == []


def test_init_db_twice_is_harmless(database_url, engine):
    runner = make_app(database_url, init_db=False).test_cli_runner()

    outputs = [runner.invoke(args=["init-db"]) for _ in range(2)]

    assert [r.exit_code for r in outputs] == [0, 0]
    assert "(was empty)" in outputs[0].output
    assert f"(was {HEAD})" in outputs[1].output
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    assert schema_differences(engine, models.metadata) == []


def stamp(engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_init_db_refuses_a_database_ahead_of_the_code(database_url, engine):
    migrate.upgrade(engine)
    stamp(engine, "0099_future")
    app = make_app(database_url, init_db=False)

    result = app.test_cli_runner().invoke(args=["init-db"])

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: the database is at revision 0099_future, which this code does not know: "
        "newer code upgraded it, so deploy that code (or restore a backup)"
    )
    assert "Traceback" not in result.output
    assert migrate.current(engine) == "0099_future"
    assert app.test_client().get("/healthz").status_code == 503


def test_app_answers_503_with_the_fix_while_the_database_is_behind(database_url, engine):
    migrate.upgrade(engine, migrate.BASELINE)
    app = make_app(database_url, init_db=False)
    client = app.test_client()

    for path in ("/healthz", "/api/strava/webhook"):
        response = client.get(path)
        assert (response.status_code, response.get_json()) == (503, {"error": BEHIND})
    assert app.test_cli_runner().invoke(args=["init-db"]).exit_code == 0
    assert client.get("/healthz").status_code == 200


def test_app_names_no_revision_for_a_first_landing_database(database_url, engine):
    fill_first_landing(engine)
    response = make_app(database_url, init_db=False).test_client().get("/healthz")

    assert response.status_code == 503
    assert response.get_json()["error"].startswith("the database is at revision none,")


def test_app_skips_the_check_when_told(database_url, engine):
    migrate.upgrade(engine, migrate.BASELINE)
    app = make_app(database_url, init_db=False, CHECK_SCHEMA=False)

    assert app.test_client().get("/healthz").status_code == 200


def test_check_at_head_tells_a_worker_what_to_run(engine):
    migrate.upgrade(engine, migrate.BASELINE)

    with pytest.raises(migrate.SchemaOutOfDate) as raised:
        migrate.check_at_head(engine)
    assert str(raised.value) == BEHIND
    assert isinstance(raised.value, migrate.MigrationError)
    migrate.upgrade(engine)
    migrate.check_at_head(engine)


def test_downgrade_one_revision_then_upgrade(database_url, engine):
    fill_first_landing(engine)
    runner = make_app(database_url, init_db=False).test_cli_runner()
    assert runner.invoke(args=["init-db"]).exit_code == 0
    before = first_landing_rows(engine)

    down = runner.invoke(args=["db", "downgrade", f"-{TO_BASELINE}"])

    assert down.exit_code == 0, down.output
    assert "Database at revision 0001_baseline." in down.output
    assert schema_differences(engine, first.metadata) == []
    assert first_landing_rows(engine) == before
    up = runner.invoke(args=["db", "upgrade"])
    assert up.exit_code == 0, up.output
    assert migrate.current(engine) == migrate.head()
    assert first_landing_rows(engine) == before


@pytest.mark.parametrize(
    "revision, sentence",
    [
        (
            f"-{TO_BASELINE + 1}",
            "rolling back past 0001_baseline would drop every table: restore a backup instead",
        ),
        ("nonsense", "there is no revision nonsense: see flask --app app db history"),
    ],
)
def test_downgrade_refuses_to_leave_the_baseline_or_guess(database_url, engine, revision, sentence):
    runner = make_app(database_url).test_cli_runner()

    result = runner.invoke(args=["db", "downgrade", revision])

    assert (result.exit_code, result.stderr.strip()) == (1, f"Error: {sentence}")
    assert migrate.current(engine) == migrate.head()


def test_db_current_and_history_name_the_revisions(database_url):
    runner = make_app(database_url).test_cli_runner()

    current = runner.invoke(args=["db", "current"])
    history = runner.invoke(args=["db", "history"])

    assert current.output == f"database: {HEAD}, this code needs: {HEAD}\n"
    assert [line.split(":")[0] for line in history.output.splitlines()] == [
        "0001_baseline",
        "0002_round_two",
        "0003_pages",
        "0004_trust",
    ]


def test_init_db_says_one_sentence_when_the_database_is_down():
    app = make_app("postgresql://postgres@127.0.0.1:1/nothing", init_db=False)

    result = app.test_cli_runner().invoke(args=["init-db"])

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: the migration failed: DATABASE_URL: connection refused on 127.0.0.1:1: "
        "start PostgreSQL or fix the host and port"
    )
    assert len(result.stderr.strip().splitlines()) == 1
