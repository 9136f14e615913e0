"""Ghana mobile numbers: parse what a person types, normalise to E.164, mask for logs."""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from fulfillment.domain.errors import InvalidPhoneNumber

_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
# A run of 9+ digits (spaces, dashes, brackets allowed) not glued to letters, digits or
# dashes on either side, so UUIDs and hashes are left alone.
_E164_LIKE = re.compile(r"(?<![\w-])\+?\d[\d\s\-()]{7,}\d(?![\w-])")


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
    """'+233241234567' -> '+23324*****67', '0241234567' -> '024*****67': at least five digits
    hidden, enough left to tell numbers apart in a log, not to dial one."""
    if phone is None:
        return None
    text = re.sub(r"[^\d+]", "", phone)
    if len(text) <= 7:
        return "*" * len(text)
    keep = max(0, min(6, len(text) - 7))
    return text[:keep] + "*" * (len(text) - keep - 2) + text[-2:]


def mask_phones_in_text(text: str) -> str:
    """Mask anything that looks like a phone number inside free text (error messages)."""
    return _E164_LIKE.sub(lambda m: mask_phone(re.sub(r"[\s\-()]", "", m.group(0))) or "", text)
