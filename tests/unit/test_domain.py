"""The pure core: phones, packages, order ids, transitions, the retry rule."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fulfillment.domain.order import (
    OrderStatus,
    build_request,
    can_transition,
    order_id_from_message,
    parse_order_id,
)
from fulfillment.domain.package import parse_package_size
from fulfillment.domain.phone import mask_phone, mask_phones_in_text, normalize_ghana_mobile
from fulfillment.domain.retry import DeadLetter, Retry, RetryPolicy, decide, decide_status_check
from fulfillment.errors import (
    InsufficientBalance,
    InvalidPackage,
    InvalidPhoneNumber,
    MalformedMessage,
    PermanentVendorError,
    RateLimited,
    UnsupportedNetwork,
    VendorServerError,
    VendorTimeout,
    VendorUnauthorized,
)

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
    with pytest.raises(UnsupportedNetwork, match="mtn orders are not fulfilled"):
        build_request(OID, phone_number="0241234567", network="mtn", size_gb=1, package_name=None)
    with pytest.raises(UnsupportedNetwork, match="unknown network"):
        build_request(
            OID, phone_number="0241234567", network="vodafone", size_gb=1, package_name=None
        )


def test_order_ids_from_messages() -> None:
    assert order_id_from_message((OID.upper(),), {}) == OID
    for args, kwargs in [
        ((), {}),
        ((OID, OID), {}),
        ((OID,), {"x": 1}),
        ((42,), {}),
        (("not-a-uuid",), {}),
        ((None,), {}),
    ]:
        with pytest.raises(MalformedMessage):
            order_id_from_message(args, kwargs)
    with pytest.raises(MalformedMessage):
        parse_order_id("x" * 10_000)


def test_transitions() -> None:
    assert can_transition(OrderStatus.PENDING, OrderStatus.PROCESSING)
    assert can_transition(OrderStatus.FAILED, OrderStatus.PROCESSING)
    assert not can_transition(OrderStatus.SUCCESS, OrderStatus.PROCESSING)
    assert not can_transition(OrderStatus.PENDING, OrderStatus.SUCCESS)


def test_transient_errors_follow_the_backoff_table_then_dead_letter() -> None:
    err = VendorServerError("503")
    assert decide(1, err, POLICY) == Retry(300, consumes_attempt=True)
    assert decide(2, err, POLICY) == Retry(900, consumes_attempt=True)
    assert isinstance(decide(3, err, POLICY), DeadLetter)
    four = RetryPolicy(
        delays=(300, 900, 3600),
        max_attempts=4,
        max_deferrals=5,
        max_status_checks=4,
        status_check_delay_s=60,
    )
    assert decide(3, VendorTimeout("t"), four) == Retry(3600, consumes_attempt=True)
    assert decide(9, VendorTimeout("t"), RetryPolicy((1,), 10, 1, 1, 1)).delay_s == 1


@pytest.mark.parametrize("err", [VendorUnauthorized("401"), InsufficientBalance("402")])
def test_alerting_errors_are_transient(err: Exception) -> None:
    assert isinstance(decide(1, err, POLICY), Retry)  # type: ignore[arg-type]


def test_permanent_errors_dead_letter_at_once() -> None:
    result = decide(1, PermanentVendorError("bad", code="INVALID_PHONE"), POLICY)
    assert result == DeadLetter("vendor rejected the order: INVALID_PHONE")


def test_rate_limits_honour_retry_after_and_keep_the_attempt() -> None:
    assert decide(3, RateLimited("429", retry_after_s=7), POLICY) == Retry(7, False)
    assert decide(1, RateLimited("429"), POLICY) == Retry(300, False)
    assert isinstance(decide(1, RateLimited("429"), POLICY, deferrals=5), DeadLetter)


def test_status_checks_are_capped() -> None:
    assert decide_status_check(1, POLICY) == Retry(60, consumes_attempt=False)
    assert isinstance(decide_status_check(4, POLICY), DeadLetter)
