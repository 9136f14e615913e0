"""Logs never carry a full phone number or a secret; settings parse the DESIGN.md env vars."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fulfillment.runtime.settings import Settings
from fulfillment.telemetry.logs import redact, url_without_password


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
