"""The customer's SMS text: fields from an order, templates checked at load, GSM-7 segment
counting, and the provider's ClientReference."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.errors import ConfigurationError
from fulfillment.domain.sms import (
    FIELD_MAX_CHARS,
    GSM7_BASIC,
    GSM7_EXTENSION,
    KINDS,
    MAX_SEGMENTS,
    TEMPLATE_KEYS,
    SmsFields,
    SmsTemplates,
    client_reference,
    gsm7_septets,
    sms_segments,
    worst_case_septets,
)

ORDER_ID = "3f8a1c2e-9b7d-4e21-8c3a-0d5f6e7a8b9c"
DEFAULT = SmsTemplates.load(None)
VALID = {
    "default": {
        "delivered": "Delivered {size} to {phone}. Ref {ref}",
        "failed_refund": "Failed {ref}: refund",
        "failed_support": "Failed {ref}: support",
    }
}


def fields(**overrides: str) -> SmsFields:
    values = {
        "size": "2GB",
        "network_name": "AT-iShare",
        "phone": "024*****67",
        "ref": "3f8a1c2e",
        "package": "AT iShare 2GB",
    }
    values.update(overrides)
    return SmsFields(**values)


def with_default(**entries: object) -> dict[str, object]:
    return {"default": {**VALID["default"], **entries}}


# -- fields ---------------------------------------------------------------------------------


def test_the_design_example_renders_exactly() -> None:
    sms = SmsFields.for_order(
        order_id=ORDER_ID, network="at-ishare", phone_number="0241234567", package="AT iShare 2GB"
    )
    assert sms == fields()
    text = DEFAULT.render("delivered", "at-ishare", refund_advised=False, fields=sms)
    assert text == "Your 2GB AT-iShare bundle has been delivered to 024*****67. Ref 3f8a1c2e"


def test_fields_from_other_spellings_of_an_order() -> None:
    sms = SmsFields.for_order(
        order_id=ORDER_ID.upper(), network="mtn", phone_number="+233 24 123 4567", package="500MB"
    )
    assert (sms.size, sms.network_name, sms.phone, sms.ref) == (
        "500MB",
        "MTN",
        "024*****67",
        "3f8a1c2e",
    )
    # size_gb wins over the package name, as in parse_size
    by_gb = SmsFields.for_order(
        order_id=ORDER_ID, network="telecel", phone_number="233201234567", package="1GB", size_gb=5
    )
    assert (by_gb.size, by_gb.network_name, by_gb.phone) == ("5GB", "Telecel", "020*****67")


def test_what_cannot_be_read_is_left_out_of_the_text() -> None:
    sms = SmsFields.for_order(
        order_id=ORDER_ID, network="vodafone", phone_number="12345", package="1000GB"
    )
    assert (sms.size, sms.network_name, sms.phone, sms.package) == ("", "", "", "1000GB")
    text = DEFAULT.render("failed", "vodafone", refund_advised=True, fields=sms)
    assert text == (
        "Sorry, your bundle for could not be delivered. Your wallet will be refunded. Ref 3f8a1c2e"
    )
    none = SmsFields.for_order(order_id=ORDER_ID, network=None, phone_number=None, package=None)
    assert (none.size, none.network_name, none.phone, none.package) == ("", "", "", "")


def test_field_values_are_cut_and_kept_to_the_basic_set() -> None:
    templates = SmsTemplates.from_mapping(with_default(delivered="{package}|{phone}"))
    sms = fields(package="Bundle ✓ {x}\n" + "y" * 100, phone="€0241234567")
    text = templates.render("delivered", None, refund_advised=False, fields=sms)
    assert text == "Bundle ? ?x??" + "y" * 17 + "|?024123456"
    assert len(text.split("|")[0]) == FIELD_MAX_CHARS["package"]


# -- choosing a template ----------------------------------------------------------------------


def test_a_network_table_overrides_only_what_it_names() -> None:
    templates = SmsTemplates.from_mapping(
        {**VALID, "mtn": {"delivered": "MTN got {size} to {phone}"}}
    )
    sms = fields(size="1GB")
    assert (
        templates.render("delivered", "mtn", refund_advised=False, fields=sms)
        == "MTN got 1GB to 024*****67"
    )
    assert (
        templates.render("delivered", "telecel", refund_advised=False, fields=sms)
        == "Delivered 1GB to 024*****67. Ref 3f8a1c2e"
    )
    assert (
        templates.render("delivered", None, refund_advised=False, fields=sms)
        == "Delivered 1GB to 024*****67. Ref 3f8a1c2e"
    )
    assert (
        templates.render("failed", "mtn", refund_advised=True, fields=sms)
        == "Failed 3f8a1c2e: refund"
    )


def test_a_failure_says_refund_or_support_as_advised() -> None:
    mtn = fields(network_name="MTN")
    refund = DEFAULT.render("failed", "mtn", refund_advised=True, fields=mtn)
    support = DEFAULT.render("failed", "mtn", refund_advised=False, fields=mtn)
    assert refund == (
        "Sorry, your 2GB MTN bundle for 024*****67 could not be delivered. "
        "Your wallet will be refunded. Ref 3f8a1c2e"
    )
    assert support == (
        "Sorry, your 2GB MTN bundle for 024*****67 could not be delivered. "
        "Our support team will call you. Ref 3f8a1c2e"
    )
    # a delivery never speaks of refunds, whatever the flag says
    assert DEFAULT.render("delivered", "mtn", refund_advised=True, fields=fields()) == (
        DEFAULT.render("delivered", "mtn", refund_advised=False, fields=fields())
    )


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown SMS kind 'resolved'"):
        DEFAULT.render("resolved", None, refund_advised=False, fields=fields())


def test_the_default_templates_fit_one_segment_at_their_longest() -> None:
    # size 8, network_name 10, phone 10, ref 8 characters: the numbers the TOML file states
    septets = {
        key: worst_case_septets(DEFAULT.template(kind, None, refund_advised=refund))
        for key, kind, refund in [
            ("delivered", "delivered", False),
            ("failed_refund", "failed", True),
            ("failed_support", "failed", False),
        ]
    }
    assert septets == {"delivered": 78, "failed_refund": 120, "failed_support": 122}
    assert FIELD_MAX_CHARS["network_name"] == len("AT-BigTime")


# -- checked at load ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (with_default(delivered="Hi {name}"), r"\[default\] delivered: unknown placeholder {name}"),
        (with_default(delivered="Hi {size.upper}"), "unknown placeholder {size.upper}"),
        (with_default(delivered="Hi {size[0]}"), r"unknown placeholder {size\[0\]}"),
        (with_default(delivered="Hi {}"), "positional field {}"),
        (with_default(failed_refund="Hi {0}"), r"\[default\] failed_refund: positional field {0}"),
        (with_default(delivered="Hi {size:>5}"), "{size} has a conversion or format spec"),
        (with_default(delivered="Hi {size!r}"), "{size} has a conversion or format spec"),
        (with_default(delivered="Hi {size"), r"\[default\] delivered: .*literal brace"),
        (with_default(delivered="Hi }"), r"\[default\] delivered: .*literal brace"),
        (with_default(delivered="Done ✓ {ref}"), r"'✓' \(U\+2713\) is not in the GSM-7 alphabet"),
        (with_default(delivered="已送达 {ref}"), r"\(U\+5DF2\) is not in the GSM-7 alphabet"),
        (with_default(delivered="Done `{ref}`"), r"'`' \(U\+0060\) is not in the GSM-7"),
        (with_default(delivered="   "), r"\[default\] delivered: is empty"),
        (with_default(delivered=3), r"\[default\] delivered: must be a string, got int"),
        (with_default(refunded="x"), r"\[default\] refunded: unknown key"),
        ({"default": {"delivered": "x", "failed_refund": "y"}}, "failed_support: missing"),
        ({"mtn": VALID["default"]}, r"\[default\] delivered, failed_refund, failed_support: miss"),
        ({**VALID, "vodafone": {"delivered": "x"}}, r"\[vodafone\]: unknown table"),
        ({**VALID, "delivered": "x"}, "'delivered' must be a table"),
        ({**VALID, "mtn": {"delivered": "{ref} {network}"}}, r"\[mtn\] delivered: unknown place"),
    ],
)
def test_a_bad_template_is_refused_naming_table_and_key(
    mapping: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        SmsTemplates.from_mapping(mapping, source="sms.toml")
    assert str(caught.value).startswith("sms.toml: ")


def test_extension_characters_and_escaped_braces_are_allowed() -> None:
    templates = SmsTemplates.from_mapping(with_default(delivered="{{{ref}}} costs €0 [ok] ~^|\\"))
    text = templates.render("delivered", None, refund_advised=False, fields=fields())
    assert text == "{3f8a1c2e} costs €0 [ok] ~^|\\"
    assert gsm7_septets(text) == len(text) + 9


def test_a_template_needing_three_segments_is_refused() -> None:
    # two segments hold 306 septets; the worst case adds 10 + 8 for the placeholders
    fits = "a" * (306 - 18) + "{phone}{ref}"
    assert worst_case_septets(fits) == 306
    SmsTemplates.from_mapping(with_default(delivered=fits))
    with pytest.raises(
        ConfigurationError, match=r"\[default\] delivered: needs 3 SMS segments \(307 septets\)"
    ):
        SmsTemplates.from_mapping(with_default(delivered="a" + fits))
    # the worst case counts every placeholder at its longest, and an extension char as two
    with pytest.raises(ConfigurationError, match="needs 3 SMS segments"):
        SmsTemplates.from_mapping(with_default(failed_support="€" * 140 + "{package}"))


def test_load_reads_a_file_and_names_it(tmp_path: Path) -> None:
    good = tmp_path / "sms.toml"
    good.write_text(
        '[default]\ndelivered = "D {ref}"\nfailed_refund = "R {ref}"\nfailed_support = "S"\n'
        '[at-bigtime]\nfailed_support = "BigTime support will call. Ref {ref}"\n',
        encoding="utf-8",
    )
    templates = SmsTemplates.load(good)
    assert templates.render("failed", "at-bigtime", refund_advised=False, fields=fields()) == (
        "BigTime support will call. Ref 3f8a1c2e"
    )
    assert SmsTemplates.load(str(good)).render(
        "delivered", "at-bigtime", refund_advised=False, fields=fields()
    ) == ("D 3f8a1c2e")

    bad = tmp_path / "bad.toml"
    bad.write_text('[default]\ndelivered = "Hi {nam}"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=rf"^{bad}: \[default\] delivered: unknown"):
        SmsTemplates.load(bad)
    bad.write_text("[default\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=rf"^{bad}: not valid TOML"):
        SmsTemplates.load(bad)
    bad.write_bytes(b'[default]\ndelivered = "\xff"\n')
    with pytest.raises(ConfigurationError, match=rf"^{bad}: SMS templates are not UTF-8"):
        SmsTemplates.load(bad)
    with pytest.raises(ConfigurationError, match=rf"^{tmp_path / 'none.toml'}: cannot read"):
        SmsTemplates.load(tmp_path / "none.toml")


# -- GSM-7 and segments -----------------------------------------------------------------------


def test_the_gsm_alphabet() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes, less ESC
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert gsm7_septets("") == 0
    assert gsm7_septets("Ref 3f8a1c2e é à ñ Δ @ £ ¤") == 26
    assert gsm7_septets("€") == 2
    assert gsm7_septets("{}[]~^|\\") == 16
    assert gsm7_septets("✓") is None
    assert gsm7_septets("ç") is None  # only the capital Ç is in the basic set
    assert gsm7_septets("`") is None


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # 160 septets
        ("a" * 159 + "€", 2),  # 161 septets
        ("a" * 158 + "€", 1),
        ("€" * 152, 2),  # 304 septets: 76 pairs a segment
        ("€" * 153, 3),  # 306 septets, but 153 is odd: a pair cannot be split
        # 306 septets, but the escape pair cannot straddle two segments
        ("a" * 152 + "€" + "a" * 152, 3),
        ("a" * 151 + "€" + "a" * 153, 2),
        ("✓" * 70, 1),  # UCS-2
        ("✓" * 71, 2),
        ("a" * 133 + "✓", 2),
        ("a" * 135 + "✓", 3),
        ("😀" * 35, 1),  # surrogate pairs: two UTF-16 units each
        ("😀" * 36, 2),
    ],
)
def test_segments(text: str, segments: int) -> None:
    assert sms_segments(text) == segments


# -- any order, any valid template ------------------------------------------------------------

any_fields = st.builds(
    SmsFields,
    size=st.text(),
    network_name=st.text(),
    phone=st.text(),
    ref=st.text(),
    package=st.text(),
)


def fits(text: str) -> bool:
    return gsm7_septets(text) is not None and sms_segments(text) <= MAX_SEGMENTS


@given(
    sms=any_fields,
    kind=st.sampled_from(KINDS),
    network=st.none() | st.sampled_from(sorted(KNOWN_NETWORKS)) | st.text(max_size=12),
    refund=st.booleans(),
)
def test_the_default_templates_render_gsm7_in_two_segments(
    sms: SmsFields, kind: str, network: str | None, refund: bool
) -> None:
    assert fits(DEFAULT.render(kind, network, refund_advised=refund, fields=sms))


_literal = st.text(
    alphabet=st.sampled_from(sorted((GSM7_BASIC | GSM7_EXTENSION) - {"{", "}"})), max_size=120
)
_piece = _literal | st.sampled_from(["{{", "}}", *(f"{{{name}}}" for name in FIELD_MAX_CHARS)])
_template = st.lists(_piece, min_size=1, max_size=8).map("".join)


@given(
    texts=st.fixed_dictionaries(dict.fromkeys(TEMPLATE_KEYS, _template)),
    network=st.sampled_from(sorted(KNOWN_NETWORKS)),
    override=st.dictionaries(st.sampled_from(TEMPLATE_KEYS), _template),
    sms=any_fields,
    kind=st.sampled_from(KINDS),
    refund=st.booleans(),
)
def test_any_template_that_loads_renders_gsm7_in_two_segments(
    texts: dict[str, str],
    network: str,
    override: dict[str, str],
    sms: SmsFields,
    kind: str,
    refund: bool,
) -> None:
    try:
        templates = SmsTemplates.from_mapping({"default": texts, network: override})
    except ConfigurationError:
        assume(False)
        return
    assert fits(templates.render(kind, network, refund_advised=refund, fields=sms))


@given(
    order_id=st.uuids().map(str) | st.text(),
    network=st.none() | st.text(),
    phone=st.none() | st.text() | st.from_regex(r"\A0(24|20|26|50|55)\d{7}\Z"),
    package=st.none() | st.text() | st.from_regex(r"\A[A-Za-z ]{0,12}\d{1,6}(\.\d{1,3})?(GB|MB)\Z"),
    size_gb=st.none() | st.decimals(allow_nan=True) | st.text(max_size=8),
)
def test_fields_of_any_order_render(
    order_id: str, network: str | None, phone: str | None, package: str | None, size_gb: object
) -> None:
    sms = SmsFields.for_order(
        order_id=order_id, network=network, phone_number=phone, package=package, size_gb=size_gb
    )
    for name, limit in FIELD_MAX_CHARS.items():
        if name != "package":
            assert len(getattr(sms, name)) <= limit
    assert fits(DEFAULT.render("delivered", network, refund_advised=False, fields=sms))


# -- ClientReference --------------------------------------------------------------------------


def test_client_reference() -> None:
    order_id = str(uuid.UUID(ORDER_ID))
    assert client_reference(order_id, 1, "delivered") == f"{ORDER_ID}:1:delivered"
    assert client_reference(order_id, 12, "failed") == f"{ORDER_ID}:12:failed"
    # a UUID, any generation a database integer holds, the longer kind: within 64
    assert len(client_reference(order_id, 2**31 - 1, "delivered")) == 57
    with pytest.raises(ValueError, match="is 65 characters"):
        client_reference("x" * 56, 1, "failed")
    assert len(client_reference("x" * 55, 1, "failed")) == 64
    assert len(client_reference("x" * 52, 1, "delivered")) == 64
    with pytest.raises(ValueError, match="unknown SMS kind"):
        client_reference(order_id, 1, "resolved")
