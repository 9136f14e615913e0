"""The notifier's settings: a clear error for what cannot work, nothing required when unset."""

from __future__ import annotations

import pytest

from fulfillment.domain.errors import ConfigurationError
from fulfillment.runtime.settings import Settings


def test_unset_means_skipped_sms_and_stored_events() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.sms_credentials() is None and s.platform_webhook() is None
    assert s.sms_enabled is True


def test_a_sender_id_longer_than_eleven_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="SMS_SENDER_ID must be 1 to 11 characters"):
        Settings(sms_sender_id="DataShopGhana")
    assert Settings(sms_sender_id="DataShopGH1").sms_sender_id == "DataShopGH1"


def test_a_url_without_its_credentials_names_what_is_missing() -> None:
    s = Settings(sms_api_url="http://sms.example/v1", sms_client_id="id")
    with pytest.raises(ConfigurationError, match="SMS_CLIENT_SECRET, SMS_SENDER_ID"):
        s.sms_credentials()
    with pytest.raises(ConfigurationError, match="PLATFORM_WEBHOOK_SECRET"):
        Settings(platform_webhook_url="http://platform.example/events").platform_webhook()


def test_complete_settings_give_the_clients_their_parts() -> None:
    s = Settings(
        sms_api_url="http://sms.example/v1/",
        sms_client_id="id",
        sms_client_secret="secret",
        sms_sender_id="DataShop",
        platform_webhook_url="http://platform.example/events",
        platform_webhook_secret="shh",
        notify_retry_delays="1, 2",
    )
    assert s.sms_credentials() == ("http://sms.example/v1", "id", "secret", "DataShop")
    assert s.platform_webhook() == ("http://platform.example/events", "shh")
    assert s.notify_retry_delays == (1.0, 2.0)
    with pytest.raises(ValueError, match="at least one number"):
        Settings(notify_retry_delays=" , ")
