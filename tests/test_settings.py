"""config.Settings: one frozen, typed object, one parser per kind of value, ASCII digits only."""

import base64
import dataclasses

import pytest
from conftest import ENV_NAMES, make_app
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

import config
from config import ConfigError, parse


def test_settings_are_frozen_and_typed():
    settings = config.from_environ({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.club_name = "other"  # type: ignore[misc]
    assert settings.create_fetch_delay_seconds == 120 and settings.reconcile_min_share == 0.25


def test_the_tests_use_the_variable_list_derived_from_settings():
    assert ENV_NAMES is config.ENV_NAMES and "INLINE_OK" in ENV_NAMES
    assert len(set(ENV_NAMES)) == len(ENV_NAMES) == 32


@pytest.mark.parametrize("digit", ["\u00b2", "\u0663", "\uff11", "1\u00b2"])
@pytest.mark.parametrize(
    "name",
    ["RECONCILE_LOOKBACK_DAYS", "CREATE_FETCH_DELAY_SECONDS", "STRAVA_SUBSCRIPTION_ID"],
)
def test_unusual_digits_are_an_error_naming_the_variable(name, digit):
    with pytest.raises(ConfigError, match=f"^{name} must be a whole number"):
        config.from_environ({name: digit})


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("STRAVA_RATE_LIMITS", "\u00b2,2000"),
        ("ADMIN_ATHLETE_IDS", "12,\u0663"),
        ("RECONCILE_RESERVE", "0.\u0663"),
        ("STRAVA_CLIENT_ID", "\u0664\u0662"),
    ],
)
def test_every_number_parser_refuses_unusual_digits(name, raw):
    with pytest.raises(ConfigError, match=f"^{name} "):
        config.from_environ({name: raw})


@pytest.mark.parametrize(
    "raw", ["club.example.org", "https://club.example.org/sync", "https://x.org/?a=1", "ftp://x"]
)
def test_public_url_without_a_scheme_or_with_a_path_is_refused(raw):
    with pytest.raises(ConfigError, match=r"^PUBLIC_URL must be"):
        config.from_environ({"PUBLIC_URL": raw})


def test_public_url_keeps_host_and_port_only():
    settings = config.from_environ({"PUBLIC_URL": "https://club.example.org:8443/"})
    assert settings.public_url == "https://club.example.org:8443"


@given(name=st.sampled_from(ENV_NAMES), raw=st.text(max_size=40))
def test_any_text_for_any_setting_is_a_value_or_one_sentence_naming_it(name, raw):
    try:
        config.from_environ({name: raw})
    except ConfigError as exc:
        message = str(exc)
        sentence = message.split(", got ")[0]  # what follows quotes the value given
        assert message.startswith(f"{name} ") and "\n" not in message and ". " not in sentence


@given(raw=st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=4))
def test_only_ascii_digits_are_numbers(raw):
    try:
        value = parse.whole("N", raw)
    except ConfigError:
        assert not (raw.isascii() and raw.isdigit())
    else:
        assert raw.isascii() and value == int(raw)


def test_tests_override_settings_by_variable_or_field_name(database_url):
    app = make_app(database_url, CREATE_FETCH_DELAY_SECONDS=5, club_name="Audax")
    settings = app.extensions["strava_sync"].settings
    assert (settings.create_fetch_delay_seconds, settings.club_name) == (5, "Audax")
    assert not settings.database_defaulted and app.config["SECRET_KEY"] == settings.secret_key


def test_secrets_and_urls_with_passwords_are_never_echoed():
    with pytest.raises(ConfigError) as raised:
        config.from_environ({"DATABASE_URL": "postgresql://u:hunter2@h:port/db"})
    assert "hunter2" not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        config.from_environ({"REDIS_URL": "redis://:hunter2@h:port/0"})
    assert "hunter2" not in str(raised.value)


def test_settings_describe_where_data_lives_without_a_password():
    settings = config.from_environ(
        {
            "DATABASE_URL": "postgresql://club:hunter2@db.example.org:5433/strava",
            "REDIS_URL": "redis://:hunter2@queue.example.org:6380/4",
        }
    )
    assert settings.describe_database() == "PostgreSQL database strava on db.example.org:5433"
    assert settings.describe_redis() == "Redis database 4 on queue.example.org:6380"


def _fernet_accepts(text: str) -> bool:
    try:
        Fernet(text)
    except (ValueError, TypeError):
        return False
    return True


@given(
    text=st.one_of(
        st.text(max_size=60),
        st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        st.binary(min_size=32, max_size=32).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    )
)
def test_the_start_up_key_check_agrees_with_fernet(text):
    """TOKEN_ENCRYPTION_KEY is checked without loading cryptography, and exactly as Fernet would."""
    try:
        parse.fernet_keys("TOKEN_ENCRYPTION_KEY", text)
    except ConfigError:
        accepted = False
    else:
        accepted = True
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    assert accepted == all(_fernet_accepts(p) for p in parts)
