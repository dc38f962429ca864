"""The pages' settings in config.py."""

from __future__ import annotations

import pytest

from config import ConfigError, from_environ


def test_pages_defaults():
    cfg = from_environ({})
    assert cfg.club_name == "strava-sync"
    assert cfg.leaderboard_public is True
    assert cfg.admin_athlete_ids == frozenset()
    assert cfg.strava_revoke_endpoint == "deauthorize"


def test_pages_settings_are_parsed():
    cfg = from_environ(
        {
            "CLUB_NAME": " Audax ",
            "LEADERBOARD_PUBLIC": "0",
            "ADMIN_ATHLETE_IDS": "12, 34,",
            "STRAVA_REVOKE_ENDPOINT": "Revoke",
        }
    )
    assert cfg.club_name == "Audax" and cfg.leaderboard_public is False
    assert cfg.admin_athlete_ids == frozenset({12, 34})
    assert cfg.strava_revoke_endpoint == "revoke"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ADMIN_ATHLETE_IDS", "12,bob"),
        ("LEADERBOARD_PUBLIC", "maybe"),
        ("STRAVA_REVOKE_ENDPOINT", "delete"),
    ],
)
def test_bad_pages_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        from_environ({name: value})
