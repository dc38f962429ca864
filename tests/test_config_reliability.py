"""The fault-handling settings: defaults, and one sentence naming the variable when refused."""

import pytest

import config


def test_reliability_defaults():
    settings = config.from_environ({})
    assert settings.reconnect_grace_days == 30
    assert settings.event_retention_days == 30
    assert settings.reconcile_min_interval_hours == 12


def test_minimum_interval_may_be_zero():
    assert (
        config.from_environ({"RECONCILE_MIN_INTERVAL_HOURS": "0"}).reconcile_min_interval_hours == 0
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("RECONNECT_GRACE_DAYS", "0"), ("EVENT_RETENTION_DAYS", "soon"),
     ("EVENT_RETENTION_DAYS", "\u00b3"), ("RECONCILE_MIN_INTERVAL_HOURS", "-1"),
     ("RECONCILE_MIN_INTERVAL_HOURS", "\u00b2")],
)  # fmt: skip
def test_bad_reliability_values_are_refused_naming_the_variable(name, value):
    with pytest.raises(config.ConfigError, match=name):
        config.from_environ({name: value})
