"""The pure core: phones, packages, order ids, transitions, the retry rule."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fulfillment.domain.decision import (
    Answer,
    Asker,
    Facts,
    Human,
    Step,
    Wait,
    after_lookup,
    after_purchase,
    answer_of_error,
)
from fulfillment.domain.errors import (
    InsufficientBalance,
    InvalidPackage,
    InvalidPhoneNumber,
    MalformedMessage,
    PermanentVendorError,
    RateLimited,
    UnsupportedNetwork,
    VendorError,
    VendorUnauthorized,
)
from fulfillment.domain.order import (
    build_request,
    order_id_from_message,
    parse_order_id,
)
from fulfillment.domain.package import parse_package_size
from fulfillment.domain.phone import mask_phone, mask_phones_in_text, normalize_ghana_mobile
from fulfillment.domain.retry import RetryPolicy

OID = "3f1c0a52-8a53-4d8e-9a43-3e6f0c2b8f11"
POLICY = RetryPolicy(
    delays=(300, 900, 3600),
    max_attempts=3,
    max_deferrals=5,
    max_status_checks=4,
    status_check_delay_s=60,
)


@pytest.mark.parametrize(
    "raw",
    [
        "0241234567",
        "024 123 4567",
        "+233241234567",
        "233241234567",
        "+233 24 123 4567",
        "00233241234567",
        "(024) 123-4567",
    ],
)
def test_ghana_mobile_numbers_normalise_to_e164(raw: str) -> None:
    assert normalize_ghana_mobile(raw) == "+233241234567"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "12345",
        "+2332412345",
        "+4915112345678",
        "0302123456",
        "not a number",
        "+233000000000",
        None,
        233241234567,
    ],
)
def test_invalid_numbers_raise_a_typed_error_naming_the_field(raw: object) -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        normalize_ghana_mobile(raw)
    assert info.value.field == "phone_number"


def test_masking_keeps_numbers_apart_but_undialable() -> None:
    assert mask_phone("+233241234567") == "+23324*****67"
    assert "1234" not in mask_phones_in_text("failed for +233241234567 today")
    assert "4567" not in mask_phones_in_text("number 024 123 4567 refused")
    uuid_text = "order cd264faf-c63d-4644-9184-e88406ec36aa failed"
    assert mask_phones_in_text(uuid_text) == uuid_text


@pytest.mark.parametrize(
    ("size", "name", "expected"),
    [
        (2, None, Decimal(2)),
        ("1.5", None, Decimal("1.5")),
        (None, "AT iShare 2GB", Decimal(2)),
        (None, "500MB", Decimal("0.5")),
        (None, "AT iShare 10 GB bundle", Decimal(10)),
        (Decimal("3"), "500MB", Decimal(3)),  # size_gb wins
    ],
)
def test_package_sizes(size: object, name: str | None, expected: Decimal) -> None:
    assert parse_package_size(size, name) == expected


@pytest.mark.parametrize(
    ("size", "name"),
    [
        (None, None),
        (0, None),
        (-1, None),
        ("abc", None),
        (None, "Unlimited"),
        (101, None),
        (True, None),
        ("nan", None),
        ([2], None),
    ],
)
def test_invalid_packages_name_size_gb(size: object, name: str | None) -> None:
    with pytest.raises(InvalidPackage) as info:
        parse_package_size(size, name)
    assert info.value.field == "size_gb"


def test_build_request_validates_every_field() -> None:
    req = build_request(
        OID,
        phone_number="0241234567",
        network="at-ishare",
        size_gb=None,
        package_name="AT iShare 2GB",
    )
    assert (req.phone_number, req.size_gb) == ("+233241234567", Decimal(2))
    mtn = build_request(OID, phone_number="0241234567", network="mtn", size_gb=1, package_name=None)
    assert (mtn.network, mtn.volume_mb, mtn.package, mtn.issued_by) == (
        "mtn",
        1024,
        "MTN 1GB",
        None,
    )
    with pytest.raises(UnsupportedNetwork, match="unknown network"):
        build_request(
            OID, phone_number="0241234567", network="vodafone", size_gb=1, package_name=None
        )


def test_order_ids_from_messages() -> None:
    assert order_id_from_message((OID.upper(),), {}) == OID
    # a field a later release adds to the message is ignored, not a reason to dead-letter
    assert order_id_from_message((OID,), {"network": "mtn", "priority": 2}) == OID
    for args, kwargs in [
        ((), {}),
        ((), {"order_id": OID}),
        ((OID, OID), {}),
        ((42,), {}),
        (("not-a-uuid",), {}),
        ((None,), {}),
    ]:
        with pytest.raises(MalformedMessage):
            order_id_from_message(args, kwargs)
    with pytest.raises(MalformedMessage):
        parse_order_id("x" * 10_000)


def _after(
    attempt: int, err: VendorError, policy: RetryPolicy = POLICY, deferrals: int = 0
) -> Step:
    """The decision after purchase attempt N failed with err (the retry rule's old shape)."""
    bought = Facts(attempt, attempt, 0, deferrals, False, policy.max_attempts)
    retry_after = err.retry_after_s if isinstance(err, RateLimited) else None
    return after_purchase(
        bought, answer_of_error(err), policy, error_code=err.code, retry_after_s=retry_after
    ).step


def test_failed_attempts_follow_the_backoff_table_then_dead_letter() -> None:
    assert after_purchase(Facts(1, 1, 0, 0, False, 3), Answer.FAILED, POLICY).step == Wait(
        300, open=False, why="backoff"
    )
    assert after_purchase(Facts(2, 2, 0, 0, False, 3), Answer.FAILED, POLICY).step == Wait(
        900, open=False, why="backoff"
    )
    assert isinstance(
        after_purchase(Facts(3, 3, 0, 0, False, 3), Answer.FAILED, POLICY).step, Human
    )
    four = RetryPolicy(
        delays=(300, 900, 3600),
        max_attempts=4,
        max_deferrals=5,
        max_status_checks=4,
        status_check_delay_s=60,
    )
    third = after_purchase(Facts(3, 3, 0, 0, False, 4), Answer.FAILED, four).step
    assert third == Wait(3600, open=False, why="backoff")
    assert RetryPolicy((1,), 10, 1, 1, 1).delay_after(9) == 1


@pytest.mark.parametrize("err", [VendorUnauthorized("401"), InsufficientBalance("402")])
def test_alerting_errors_are_retried_without_spending_the_attempt(err: VendorError) -> None:
    assert _after(1, err) == Wait(300, open=False, why="held")


def test_permanent_errors_dead_letter_at_once() -> None:
    result = _after(1, PermanentVendorError("bad", code="INVALID_PHONE"))
    assert result == Human("vendor rejected the order: INVALID_PHONE", False)


def test_rate_limits_honour_retry_after_and_keep_the_attempt() -> None:
    assert _after(3, RateLimited("429", retry_after_s=7)) == Wait(7, open=False, why="held")
    assert _after(1, RateLimited("429")) == Wait(300, open=False, why="held")
    assert isinstance(_after(1, RateLimited("429"), deferrals=5), Human)


def test_status_checks_are_capped() -> None:
    pending = Facts(1, None, 0, 0, True, 3)
    assert after_lookup(pending, Answer.PENDING, POLICY, Asker.WORKER).step == Wait(
        60, open=True, why="status_check"
    )
    spent = Facts(1, None, 3, 0, True, 3)
    assert isinstance(after_lookup(spent, Answer.PENDING, POLICY, Asker.WORKER).step, Human)
