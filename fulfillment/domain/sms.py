"""The customer's SMS: its text, from templates, in GSM-7 and at most two segments.

Each final outcome of an order sends one SMS (DESIGN.md "Customer SMS"): kind `delivered`,
or kind `failed` with a refund advised (template `failed_refund`) or not (`failed_support`).
The texts are templates, sms_templates.toml beside this module or an operator's file of the
same shape: a [default] table with all three, and per-network tables ([mtn], [at-ishare],
...) overriding any of them. Placeholders, str.format style: {size}, {network_name},
{phone}, {ref}, {package}.

A template is checked when it is loaded, so a bad one stops the fleet at start-up, not an
SMS at send time: known placeholders only, with no format spec or conversion; plain GSM-7
text; at most MAX_SEGMENTS segments with every placeholder at its longest (FIELD_MAX_CHARS).
Rendering keeps that promise for any order: each field value is cut to its bound, and a
character outside GSM-7's basic set becomes '?'.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import ConfigurationError, InvalidOrder
from fulfillment.domain.networks import DISPLAY_NAMES
from fulfillment.domain.package import parse_size
from fulfillment.domain.phone import mask_phone, normalize_ghana_mobile

# -- GSM 03.38 ----------------------------------------------------------------------------

#: the basic character set, one septet each, in code order (0x1B, the escape to the
#: extension table, is not a character)
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: the extension table: ESC and a code, two septets each
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")

SINGLE_SEGMENT_SEPTETS: Final = 160
#: a concatenated SMS spends 7 of each segment's 160 septets on its header
CONCAT_SEGMENT_SEPTETS: Final = 153
SINGLE_SEGMENT_UCS2: Final = 70
CONCAT_SEGMENT_UCS2: Final = 67
#: the most segments a customer SMS may take (each segment is billed)
MAX_SEGMENTS: Final = 2


def gsm7_septets(text: str) -> int | None:
    """The septets `text` takes in the GSM 7-bit alphabet (an extension character takes
    two); None when a character is not in it (the SMS would go as UCS-2)."""
    total = 0
    for char in text:
        if char in GSM7_BASIC:
            total += 1
        elif char in GSM7_EXTENSION:
            total += 2
        else:
            return None
    return total


def sms_segments(text: str) -> int:
    """How many SMS segments `text` is sent as: GSM-7 when it can be (160 septets alone,
    153 per segment concatenated), else UCS-2 (70 UTF-16 units alone, 67 concatenated). An
    escape pair or a surrogate pair is never split across segments; '' is one segment."""
    if gsm7_septets(text) is not None:
        units = [1 if char in GSM7_BASIC else 2 for char in text]
        single, per_segment = SINGLE_SEGMENT_SEPTETS, CONCAT_SEGMENT_SEPTETS
    else:
        units = [len(char.encode("utf-16-le")) // 2 for char in text]
        single, per_segment = SINGLE_SEGMENT_UCS2, CONCAT_SEGMENT_UCS2
    if sum(units) <= single:
        return 1
    segments, used = 1, 0
    for unit in units:
        if used + unit > per_segment:
            segments, used = segments + 1, 0
        used += unit
    return segments


# -- fields ---------------------------------------------------------------------------------

#: the longest each placeholder's value is rendered; the load-time check assumes each at
#: this length (one septet a character: field values keep only basic-set characters)
FIELD_MAX_CHARS: Final[Mapping[str, int]] = {
    # a size label parse_size allows (up to 100 GB): '1000MB', '100GB', '99999MB', '1.25GB';
    # a longer label ('1.23456GB') is not shown
    "size": 8,
    # the longest display name: 'AT-BigTime'
    "network_name": max(len(name) for name in DISPLAY_NAMES.values()),
    # '024*****67'
    "phone": 10,
    # the order id's first 8 hex digits
    "ref": 8,
    # orders.package_name is free text: a documented bound ('AT iShare 100GB' is 15)
    "package": 30,
}
PLACEHOLDERS: Final = frozenset(FIELD_MAX_CHARS)
#: what a field value may carry into a text: GSM-7's basic set, no line breaks
_FIELD_CHARS: Final = GSM7_BASIC - {"\n", "\r"}


@dataclass(frozen=True, slots=True)
class SmsFields:
    """The values an SMS template is filled with."""

    size: str  # '2GB', '500MB'; '' when unknown
    network_name: str  # 'AT-iShare', 'MTN'; '' for an unknown network
    phone: str  # the local form masked as logs mask it: '024*****67'; '' when not valid
    ref: str  # the order id's first 8 hex digits: '3f8a1c2e'
    package: str  # the package name as stored

    @classmethod
    def for_order(
        cls,
        *,
        order_id: str,
        network: str | None,
        phone_number: str | None,
        package: str | None,
        size_gb: object = None,
    ) -> SmsFields:
        """The fields of one order's SMS. The size is read as the order's is (parse_size:
        size_gb when set, else the package name); anything that cannot be read leaves its
        field empty rather than failing: a failed order may be failed for exactly that."""
        return cls(
            size=_size_label(size_gb, package),
            network_name=DISPLAY_NAMES.get(network or "", ""),
            phone=_masked_local(phone_number),
            ref=order_id.replace("-", "").lower()[: FIELD_MAX_CHARS["ref"]],
            package=package or "",
        )

    def values(self) -> dict[str, str]:
        """Each field as rendered: cut to FIELD_MAX_CHARS, a character outside GSM-7's basic
        set (or a line break) replaced by '?'."""
        return {name: _field_text(getattr(self, name), n) for name, n in FIELD_MAX_CHARS.items()}


def _size_label(size_gb: object, package: str | None) -> str:
    try:
        label = parse_size(size_gb, package).label
    except InvalidOrder:
        return ""
    return label if len(label) <= FIELD_MAX_CHARS["size"] else ""


def _masked_local(phone_number: str | None) -> str:
    if phone_number is None:
        return ""
    try:
        e164 = normalize_ghana_mobile(phone_number)
    except InvalidOrder:
        return ""
    return mask_phone("0" + e164.removeprefix("+233")) or ""


def _field_text(value: str, limit: int) -> str:
    return "".join(char if char in _FIELD_CHARS else "?" for char in value[:limit])


# -- templates ------------------------------------------------------------------------------

DEFAULT_TABLE: Final = "default"
TEMPLATE_KEYS: Final = ("delivered", "failed_refund", "failed_support")
KINDS: Final = ("delivered", "failed")
_DEFAULT_FILE: Final = "sms_templates.toml"
_FORMATTER: Final = string.Formatter()
_SPACES: Final = re.compile(" {2,}")
#: every placeholder at its longest, one septet a character
_WORST_CASE: Final = {name: "X" * limit for name, limit in FIELD_MAX_CHARS.items()}


def worst_case_septets(template: str) -> int | None:
    """The septets of a checked template's longest rendering (every placeholder at its
    longest); None when its text is not GSM-7."""
    return gsm7_septets(template.format_map(_WORST_CASE))


def template_key(kind: str, *, refund_advised: bool) -> str:
    """'delivered' -> delivered; 'failed' -> failed_refund or failed_support."""
    if kind == "delivered":
        return "delivered"
    if kind == "failed":
        return "failed_refund" if refund_advised else "failed_support"
    raise ValueError(f"unknown SMS kind {kind!r}; expected one of {', '.join(KINDS)}")


class SmsTemplates:
    """Checked templates: [default] and per-network overrides (load or from_mapping)."""

    def __init__(self, templates: Mapping[tuple[str, str], str]) -> None:
        """Use load or from_mapping: they check what this is given."""
        self._templates = dict(templates)

    @classmethod
    def load(cls, path: str | Path | None = None) -> SmsTemplates:
        """The templates of a TOML file; None: the shipped sms_templates.toml.
        ConfigurationError naming the file, the table, the key and what is wrong."""
        if path is None:
            source = f"embedded {_DEFAULT_FILE}"
            text = resources.files("fulfillment.domain").joinpath(_DEFAULT_FILE).read_text("utf-8")
        else:
            source = str(path)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"{source}: cannot read the SMS templates ({exc.strerror or exc})"
                ) from exc
            except UnicodeDecodeError as exc:
                raise ConfigurationError(f"{source}: SMS templates are not UTF-8 text") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{source}: not valid TOML ({exc})") from exc
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, object], *, source: str = "SMS templates"
    ) -> SmsTemplates:
        """Templates from parsed TOML ({table: {key: text}}), checked as load checks them;
        `source` names them in errors."""
        templates: dict[tuple[str, str], str] = {}
        for table, entries in mapping.items():
            if not isinstance(entries, Mapping):
                raise ConfigurationError(
                    f"{source}: {table!r} must be a table ([{DEFAULT_TABLE}] or a network's)"
                )
            if table != DEFAULT_TABLE and table not in KNOWN_NETWORKS:
                raise ConfigurationError(
                    f"{source}: [{table}]: unknown table; expected [{DEFAULT_TABLE}] or a "
                    f"network: {', '.join(sorted(KNOWN_NETWORKS))}"
                )
            for key, value in entries.items():
                if key not in TEMPLATE_KEYS:
                    raise ConfigurationError(
                        f"{source}: [{table}] {key}: unknown key; expected "
                        f"{', '.join(TEMPLATE_KEYS)}"
                    )
                templates[(table, key)] = _checked(f"{source}: [{table}] {key}", value)
        missing = [key for key in TEMPLATE_KEYS if (DEFAULT_TABLE, key) not in templates]
        if missing:
            raise ConfigurationError(
                f"{source}: [{DEFAULT_TABLE}] {', '.join(missing)}: missing; "
                f"[{DEFAULT_TABLE}] needs every one of {', '.join(TEMPLATE_KEYS)}"
            )
        return cls(templates)

    def template(self, kind: str, network: str | None, *, refund_advised: bool) -> str:
        """The template an SMS of this kind and network is rendered from."""
        key = template_key(kind, refund_advised=refund_advised)
        if network is not None and (own := self._templates.get((network, key))) is not None:
            return own
        return self._templates[(DEFAULT_TABLE, key)]

    def render(
        self, kind: str, network: str | None, *, refund_advised: bool, fields: SmsFields
    ) -> str:
        """The SMS text: GSM-7, at most MAX_SEGMENTS segments. Runs of spaces (an empty
        field's) become one and the ends are trimmed. ValueError for an unknown kind."""
        text = self.template(kind, network, refund_advised=refund_advised)
        return _SPACES.sub(" ", text.format_map(fields.values())).strip(" ")


def _checked(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}: must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ConfigurationError(f"{where}: is empty")
    try:
        parts = list(_FORMATTER.parse(value))
    except ValueError as exc:
        raise ConfigurationError(
            f"{where}: {exc} (write {{{{ and }}}} for a literal brace)"
        ) from exc
    known = ", ".join(f"{{{name}}}" for name in FIELD_MAX_CHARS)
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ConfigurationError(f"{where}: positional field {{{name}}}; name one of {known}")
        if name not in PLACEHOLDERS:
            raise ConfigurationError(f"{where}: unknown placeholder {{{name}}}; known: {known}")
        if conversion is not None or spec:
            raise ConfigurationError(
                f"{where}: {{{name}}} has a conversion or format spec; write {{{name}}} alone"
            )
    literal = "".join(text for text, _, _, _ in parts)
    for char in literal:
        if gsm7_septets(char) is None:
            raise ConfigurationError(
                f"{where}: {char!r} (U+{ord(char):04X}) is not in the GSM-7 alphabet "
                "(GSM 03.38 basic set and extension table)"
            )
    worst = value.format_map(_WORST_CASE)
    segments = sms_segments(worst)
    if segments > MAX_SEGMENTS:
        raise ConfigurationError(
            f"{where}: needs {segments} SMS segments ({gsm7_septets(worst)} septets) with "
            f"every placeholder at its longest; at most {MAX_SEGMENTS} "
            f"({MAX_SEGMENTS * CONCAT_SEGMENT_SEPTETS} septets)"
        )
    return value


# -- client reference -----------------------------------------------------------------------

MAX_CLIENT_REFERENCE: Final = 64


def client_reference(order_id: str, generation: int, kind: str) -> str:
    """The provider's ClientReference of one SMS: '<order id>:<generation>:<kind>'. The one
    Python spelling of what fulfillment_record_outcome builds with format('%s:%s:%s') (the
    DB's customer_sms.client_reference). ValueError for an unknown kind or a reference over
    64 characters."""
    if kind not in KINDS:
        raise ValueError(f"unknown SMS kind {kind!r}; expected one of {', '.join(KINDS)}")
    reference = f"{order_id}:{generation}:{kind}"
    if len(reference) > MAX_CLIENT_REFERENCE:
        raise ValueError(
            f"client reference {reference[:80]!r} is {len(reference)} characters; the "
            f"provider takes at most {MAX_CLIENT_REFERENCE}"
        )
    return reference
