"""Logs never carry a full phone number or a secret; settings parse the DESIGN.md env vars."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError
from redis.connection import parse_url

from fulfillment.runtime.settings import Settings
from fulfillment.telemetry.logs import passwords_in, redact, url_without_password


def test_redact_masks_phones_and_drops_secrets() -> None:
    event = redact(
        None,
        "info",
        {
            "event": "vendor.request_failed",
            "phone": "+233241234567",
            "api_secret": "s3cr3t",
            "AT_ISHARE_API_KEY": "k",
            "token": "t",
            "error": "vendor refused +233241234567",
        },
    )
    assert event["phone"] == "+23324*****67"
    assert event["api_secret"] == event["AT_ISHARE_API_KEY"] == event["token"] == "[redacted]"
    assert "241234567" not in event["error"]


def test_password_is_dropped_from_printed_urls() -> None:
    assert (
        url_without_password("postgresql://app:s3cret@db:5432/app?sslmode=require")
        == "postgresql://app@db:5432/app?sslmode=require"
    )
    assert url_without_password("redis://:p%40ss@cache:6379/0") == "redis://cache:6379/0"
    assert url_without_password("redis://127.0.0.1:1/0") == "redis://127.0.0.1:1/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "host=127.0.0.1 port=5432 user=postgres password=Kx9-very-secret dbname=x",
            "host=127.0.0.1 port=5432 user=postgres dbname=x",
        ),
        ("password=Kx9-very-secret host=db dbname=x", "host=db dbname=x"),
        ("host=db dbname=x password=Kx9-very-secret", "host=db dbname=x"),
        ("host=db password = 'Kx9 very secret' dbname=x", "host=db dbname=x"),
        (r"host=db password='it\'s a secret' dbname='my db'", "host=db dbname='my db'"),
        (r"host=db password=Kx9\ very\ secret dbname=x", "host=db dbname=x"),
        ("host=db password='' dbname=x", "host=db dbname=x"),
        ("host=db sslpassword=Kx9-key-phrase dbname=x", "host=db dbname=x"),
        # no password: as it was written
        (
            "host=db  port=5432 user=app dbname='my db'",
            "host=db  port=5432 user=app dbname='my db'",
        ),
        # libpq refuses it (an unterminated quote): cut before the password
        ("host=db password='Kx9 very secret dbname=x", "host=db [the rest not shown]"),
        ("/var/run/postgresql", "/var/run/postgresql"),
    ],
)
def test_password_is_dropped_from_key_value_strings(url: str, shown: str) -> None:
    assert url_without_password(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/db?password=Qp7-very-secret",
            "postgresql://postgres@127.0.0.1:5432/db",
        ),
        (
            "postgresql://app@db/app?sslmode=require&password=Qp7-very-secret&connect_timeout=3",
            "postgresql://app@db/app?sslmode=require&connect_timeout=3",
        ),
        (
            "postgresql://app:s3cret@db/app?application_name=x&password=Qp7-very-secret",
            "postgresql://app@db/app?application_name=x",
        ),
        ("redis://127.0.0.1:6379/0?password=Qp7-very-secret", "redis://127.0.0.1:6379/0"),
        ("rediss://cache:6380/1?%70assword=Qp7%2Bvery+secret", "rediss://cache:6380/1"),
        (
            "redis://cache:6379/0?socket_timeout=2&health_check_interval=5",
            "redis://cache:6379/0?socket_timeout=2&health_check_interval=5",
        ),
    ],
)
def test_password_is_dropped_from_the_query(url: str, shown: str) -> None:
    assert url_without_password(url) == shown


TRICKY_KEY_VALUE = [
    "host=127.0.0.1 port=5432 user=postgres password=Kx9-very-secret dbname=x",
    "password='Kx9 very secret' host=db",
    r"host=db password='it\'s \\ a secret' dbname=x",
    r"host=db password=Kx9\ very\'secret application_name='a b'",
    "host=db\tpassword=\tKx9-tabbed\ndbname=x",
    "host=db password= dbname=x",  # libpq reads the password as `dbname=x`
    "user=password password=Kx9-very-secret",
    "host=db password=first password=second",
]


@pytest.mark.parametrize("url", TRICKY_KEY_VALUE)
def test_key_value_strings_are_read_as_libpq_reads_them(url: str) -> None:
    """libpq's own parser is the judge: what is shown is the same string less its password,
    and the password it reads is among those scrubbed."""
    read = conninfo_to_dict(url)
    shown = url_without_password(url)
    assert conninfo_to_dict(shown) == {k: v for k, v in read.items() if k != "password"}
    assert read["password"] in passwords_in(url)


def test_passwords_are_found_in_every_form() -> None:
    assert "Kx9 very secret" in passwords_in("host=db password='Kx9 very secret' dbname=x")
    query = "redis://127.0.0.1:6379/0?db=0&password=Qp7%2Bvery+secret"
    assert parse_url(query)["password"] in passwords_in(query)
    postgres = "postgresql://postgres@127.0.0.1/db?password=Qp7%40secret"
    assert conninfo_to_dict(postgres)["password"] in passwords_in(postgres)
    assert "p@ss" in passwords_in("redis://:p%40ss@cache:6379/0")
    assert "Kx9 very" in passwords_in("host=db password='Kx9 very")  # libpq refuses it
    for url in ("host=db user=app", "postgresql://app@db/app?sslmode=require", ""):
        assert passwords_in(url) == []


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_DELAYS", "1, 2,3")
    monkeypatch.setenv("MAX_ATTEMPTS", "4")
    monkeypatch.setenv("FULFILLMENT_ENABLED", "false")
    monkeypatch.setenv("AT_ISHARE_API_SECRET", "shh")
    s = Settings()
    assert s.retry_delays == (1, 2, 3)
    assert s.max_attempts == 4
    assert s.fulfillment_enabled is False
    assert "shh" not in repr(s)


def test_defaults_match_the_design() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.retry_delays == (300, 900, 3600)
    assert s.max_attempts == 3
    assert s.fulfillment_enabled is True


@pytest.mark.parametrize("value", ["", "a,b", "-1"])
def test_bad_retry_delays_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RETRY_DELAYS", value)
    with pytest.raises(ValidationError):
        Settings()


def test_vendor_credentials_name_what_is_missing() -> None:
    with pytest.raises(RuntimeError, match="AT_ISHARE_API_URL"):
        Settings(_env_file=None).vendor_credentials()  # type: ignore[call-arg]
