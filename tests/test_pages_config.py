"""The pages' settings in config.py."""

from __future__ import annotations

import pytest

from config import ConfigError, from_environ


def test_pages_defaults():
    cfg = from_environ({})
    assert cfg["CLUB_NAME"] == "strava-sync"
    assert cfg["LEADERBOARD_PUBLIC"] is True
    assert cfg["ADMIN_ATHLETE_IDS"] == frozenset()
    assert cfg["STRAVA_REVOKE_ENDPOINT"] == "deauthorize"


def test_pages_settings_are_parsed():
    cfg = from_environ(
        {
            "CLUB_NAME": " Audax ",
            "LEADERBOARD_PUBLIC": "0",
            "ADMIN_ATHLETE_IDS": "12, 34,",
            "STRAVA_REVOKE_ENDPOINT": "Revoke",
        }
    )
    assert cfg["CLUB_NAME"] == "Audax" and cfg["LEADERBOARD_PUBLIC"] is False
    assert cfg["ADMIN_ATHLETE_IDS"] == frozenset({12, 34})
    assert cfg["STRAVA_REVOKE_ENDPOINT"] == "revoke"


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
