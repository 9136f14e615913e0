"""Ghana mobile numbers: parse what a person types, normalise to E.164, mask for logs."""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from fulfillment.errors import InvalidPhoneNumber

_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_E164_LIKE = re.compile(r"\+?\d[\d\s\-()]{7,}\d")


def normalize_ghana_mobile(raw: object) -> str:
    """'024 123 4567', '+233241234567', '233241234567' -> '+233241234567'.

    Raises InvalidPhoneNumber (field phone_number) for anything that is not a valid
    Ghanaian mobile number.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhoneNumber("a phone number is required")
    text = raw.strip()
    digits = re.sub(r"[\s\-().]", "", text)
    if digits.startswith("233") and not text.startswith("+"):
        digits = "+" + digits
    elif digits.startswith("00233"):
        digits = "+" + digits[2:]
    try:
        number = phonenumbers.parse(digits, "GH")
    except NumberParseException as exc:
        raise InvalidPhoneNumber(f"not a phone number ({exc.error_type})") from exc
    if number.country_code != 233:
        raise InvalidPhoneNumber("not a Ghanaian number (+233)")
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber("not a valid Ghanaian number")
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise InvalidPhoneNumber("not a mobile number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(phone: str | None) -> str | None:
    """'+233241234567' -> '+23324*****67': enough to tell numbers apart, not to dial one."""
    if phone is None:
        return None
    digits = phone.strip()
    if len(digits) <= 6:
        return "*" * len(digits)
    return digits[:6] + "*" * (len(digits) - 8) + digits[-2:]


def mask_phones_in_text(text: str) -> str:
    """Mask anything that looks like a phone number inside free text (error messages)."""
    return _E164_LIKE.sub(lambda m: mask_phone(re.sub(r"[\s\-()]", "", m.group(0))) or "", text)
