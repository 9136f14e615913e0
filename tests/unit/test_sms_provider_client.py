"""The SMS provider's client against the simulated provider over real HTTP on a free port:
send, lookup and report, and every way a send can fail, each onto the error that says what
the caller must do (rejected, retry later, outcome unknown). What the simulator cannot say
(an oversized or half-formed answer) is served by httpx.MockTransport through the same stack.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from fulfillment.dev.simulator.faults import FaultConfig
from fulfillment.dev.simulator.server import Simulator
from fulfillment.dev.simulator.sms import SmsFaults
from fulfillment.domain.errors import FulfillmentError
from fulfillment.notify.sms_provider import (
    MAX_BODY_BYTES,
    MAX_RETRY_AFTER_S,
    SmsError,
    SmsOutcomeUnknown,
    SmsProviderClient,
    SmsRejected,
    SmsReport,
    SmsRetryLater,
    provider_number,
    retry_after,
)

pytestmark = pytest.mark.timeout(20)

KEY, SECRET = "test-key", "test-secret"
SMS_ID, SMS_SECRET = "sms-id", "sms-secret"
SENDER = "DataShop"
TO = "0241234567"
TIMEOUT_S = 0.3


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(
        api_key=KEY,
        api_secret=SECRET,
        faults=FaultConfig(),
        seed=11,
        sms_client_id=SMS_ID,
        sms_client_secret=SMS_SECRET,
        sms_faults=SmsFaults(delivery_seconds=0.0, timeout_seconds=1.0),
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: Simulator) -> Iterator[SmsProviderClient]:
    with SmsProviderClient(sim.sms_url, SMS_ID, SMS_SECRET, timeout_s=TIMEOUT_S) as sms:
        yield sms


def send(client: SmsProviderClient, reference: str, **fields: str) -> str:
    message = {"sender": SENDER, "to": TO, "content": "Your 2GB is on its way", **fields}
    return client.send(client_reference=reference, **message)


def script(sim: Simulator, reference: str, *responses: str) -> None:
    sim.sms.chaos.script_from_json(
        {"client_reference": reference, "responses": list(responses)}, "client_reference"
    )


def totals(sim: Simulator) -> dict[str, Any]:
    snapshot: dict[str, Any] = sim.sms.ledger.snapshot()["totals"]
    return snapshot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the contract ---------------------------------------------------------------------------


def test_send_then_lookup_then_report(sim: Simulator, client: SmsProviderClient) -> None:
    sim.sms.update_faults({"delivery_seconds": 0.3})
    message_id = send(client, "order-1:g1:fulfilled")

    [pending] = client.lookup("order-1:g1:fulfilled")
    assert pending.message_id == message_id
    assert pending.client_reference == "order-1:g1:fulfilled"
    assert pending.status == "pending"
    assert pending.update_time is not None
    assert pending.update_time.endswith("Z")

    time.sleep(0.4)
    delivered = client.report(message_id)
    assert delivered is not None
    assert (delivered.message_id, delivered.status) == (message_id, "delivered")

    entry = sim.sms.ledger.snapshot()["references"]["order-1:g1:fulfilled"]
    assert (entry["sends"], entry["lookups"], entry["to"]) == (1, 1, "23324*****67")
    assert totals(sim)["duplicate_sends"] == []


@pytest.mark.parametrize("to", ["0241234567", "+233241234567", "233241234567", "024 123 4567"])
def test_the_recipient_goes_as_233_and_nine_digits(
    sim: Simulator, client: SmsProviderClient, to: str
) -> None:
    send(client, "forms", to=to)
    assert provider_number(to) == "233241234567"
    assert sim.sms.ledger.snapshot()["references"]["forms"]["to"] == "23324*****67"


def test_unknown_reference_and_message(client: SmsProviderClient) -> None:
    assert client.lookup("never-sent") == []
    assert client.report("no-such-id") is None
    assert client.report("a/b?c") is None  # quoted into one path segment


def test_lookup_encodes_the_reference(sim: Simulator, client: SmsProviderClient) -> None:
    reference = "o:1/sms+é &x=1#y?"
    message_id = send(client, reference)
    [found] = client.lookup(reference)
    assert (found.message_id, found.client_reference) == (message_id, reference)
    assert client.lookup("o:1/sms é &x=1#y?") == []


def test_undeliverable_and_failed_statuses(sim: Simulator, client: SmsProviderClient) -> None:
    undeliverable = send(client, "undeliverable", to="0240009999")
    assert client.lookup("undeliverable")[0].status == "undeliverable"
    sim.sms.update_faults({"failed_rate": 1.0})
    failed = send(client, "failed")
    report = client.report(failed)
    assert report is not None
    assert (report.message_id, report.client_reference, report.status) == (
        failed,
        "failed",
        "failed",
    )
    assert isinstance(report, SmsReport)
    assert undeliverable != failed


def test_a_resend_after_a_lookup_is_not_blind(sim: Simulator, client: SmsProviderClient) -> None:
    send(client, "twice")
    send(client, "twice")  # the provider does not deduplicate; the caller must
    assert len(client.lookup("twice")) == 2
    assert totals(sim)["duplicate_sends"] == ["twice"]


# -- refused: never send it again -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"sender": "TwelveLetter"}, "INVALID_SENDER", id="long-sender"),
        pytest.param({"sender": ""}, "INVALID_SENDER", id="empty-sender"),
        pytest.param({"content": "x" * 613}, "CONTENT_TOO_LONG", id="long-content"),
    ],
)
def test_a_400_is_rejected(
    sim: Simulator, client: SmsProviderClient, fields: dict[str, str], code: str
) -> None:
    with pytest.raises(SmsRejected) as caught:
        send(client, "refused", **fields)
    assert caught.value.code == code
    assert isinstance(caught.value, SmsError)
    assert isinstance(caught.value, FulfillmentError)
    assert totals(sim)["sends"] == 0


@pytest.mark.parametrize("to", ["", "12345", "+447700900123", "0301234567", "not a number"])
def test_an_unusable_number_is_rejected_without_asking(sim: Simulator, to: str) -> None:
    # Wrong credentials: had the client asked, the provider would have answered 401.
    with (
        SmsProviderClient(sim.sms_url, SMS_ID, "wrong", timeout_s=TIMEOUT_S) as client,
        pytest.raises(SmsRejected) as caught,
    ):
        send(client, "bad-number", to=to)
    assert caught.value.code == "INVALID_RECIPIENT"
    assert str(caught.value) == "the SMS provider refused the message: INVALID_RECIPIENT"


def test_a_reference_out_of_bounds_is_our_bug(client: SmsProviderClient) -> None:
    with pytest.raises(ValueError, match="ClientReference"):
        send(client, "")
    with pytest.raises(ValueError, match="ClientReference"):
        client.lookup("r" * 65)
    with pytest.raises(ValueError, match="messageId"):
        client.report("")


# -- known not sent: retry later ----------------------------------------------------------------


def test_wrong_credentials_retry_later(sim: Simulator) -> None:
    with SmsProviderClient(sim.sms_url, SMS_ID, "wrong", timeout_s=TIMEOUT_S) as client:
        with pytest.raises(SmsRetryLater) as caught:
            send(client, "auth")
        assert caught.value.code == "UNAUTHORIZED"
        assert "client id and secret" in caught.value.reason
        assert caught.value.retry_after_s is None
        with pytest.raises(SmsRetryLater, match="client id and secret"):
            client.lookup("auth")
        with pytest.raises(SmsRetryLater, match="client id and secret"):
            client.report("some-id")
    assert totals(sim)["sends"] == 0


def test_rate_limit_retries_after_the_providers_wait(
    sim: Simulator, client: SmsProviderClient
) -> None:
    sim.sms.update_faults({"retry_after_seconds": 7})
    script(sim, "limited", "rate_limit")
    with pytest.raises(SmsRetryLater) as caught:
        send(client, "limited")
    assert (caught.value.code, caught.value.retry_after_s) == ("RATE_LIMITED", 7.0)
    assert client.lookup("limited") == []
    send(client, "limited")
    assert (totals(sim)["sends"], totals(sim)["duplicate_sends"]) == (1, [])


def test_a_long_retry_after_is_bounded(sim: Simulator, client: SmsProviderClient) -> None:
    sim.sms.update_faults({"retry_after_seconds": 10**9})
    script(sim, "patience", "rate_limit")
    with pytest.raises(SmsRetryLater) as caught:
        send(client, "patience")
    assert caught.value.retry_after_s == MAX_RETRY_AFTER_S


def test_insufficient_credit_retries_later(sim: Simulator, client: SmsProviderClient) -> None:
    script(sim, "broke", "insufficient_credit")
    with pytest.raises(SmsRetryLater) as caught:
        send(client, "broke")
    assert caught.value.code == "INSUFFICIENT_CREDIT"
    assert "INSUFFICIENT_CREDIT" in caught.value.reason
    assert totals(sim)["sends"] == 0


def test_connection_refused_retries_later() -> None:
    """httpx.ConnectError, as a name that does not resolve is too: nothing reached it."""
    url = f"http://127.0.0.1:{free_port()}/sms/v1"
    with SmsProviderClient(url, SMS_ID, SMS_SECRET, timeout_s=TIMEOUT_S) as client:
        with pytest.raises(SmsRetryLater) as caught:
            send(client, "nobody-home")
        assert caught.value.code == "CONNECTION_ERROR"
        assert isinstance(caught.value.__cause__, httpx.ConnectError)
        with pytest.raises(SmsRetryLater):
            client.lookup("nobody-home")
        with pytest.raises(SmsRetryLater):
            client.report("some-id")


def test_a_closed_client_sends_nothing(sim: Simulator) -> None:
    client = SmsProviderClient(sim.sms_url, SMS_ID, SMS_SECRET, timeout_s=TIMEOUT_S)
    client.close()
    with pytest.raises(SmsRetryLater) as caught:
        send(client, "closed")
    assert caught.value.code == "CLIENT_CLOSED"
    assert totals(sim)["sends"] == 0


def test_an_outage_is_unknown_for_a_send_and_retry_later_for_a_read(
    sim: Simulator, client: SmsProviderClient
) -> None:
    sim.sms.chaos.down_from_json({"seconds": 30})
    with pytest.raises(SmsOutcomeUnknown, match="HTTP 503 SERVICE_UNAVAILABLE"):
        send(client, "down")
    with pytest.raises(SmsRetryLater, match="503"):
        client.lookup("down")


# -- may have been sent: look it up first --------------------------------------------------------


def test_a_server_error_is_unknown(sim: Simulator, client: SmsProviderClient) -> None:
    script(sim, "err", "error")
    with pytest.raises(SmsOutcomeUnknown, match="HTTP 500"):
        send(client, "err")
    assert client.lookup("err") == []  # this one was not: the lookup says so


def test_a_timeout_is_unknown_and_the_lookup_finds_it(
    sim: Simulator, client: SmsProviderClient
) -> None:
    script(sim, "slow", "timeout")
    started = time.monotonic()
    with pytest.raises(SmsOutcomeUnknown) as caught:
        send(client, "slow")
    assert time.monotonic() - started < 1.0
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    [sent] = client.lookup("slow")
    assert sent.client_reference == "slow"
    assert totals(sim)["blind_resends"] == []


def test_a_lost_answer_is_unknown_and_the_lookup_finds_it(
    sim: Simulator, client: SmsProviderClient
) -> None:
    script(sim, "lost", "lost")
    with pytest.raises(SmsOutcomeUnknown) as caught:
        send(client, "lost")
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    [sent] = client.lookup("lost")
    assert client.report(sent.message_id) == sent
    snapshot = sim.sms.ledger.snapshot()
    assert snapshot["references"]["lost"]["sends"] == 1
    assert snapshot["totals"]["blind_resends"] == []


def test_a_garbage_answer_is_unknown_and_the_lookup_finds_it(
    sim: Simulator, client: SmsProviderClient
) -> None:
    script(sim, "garbage", "garbage")
    with pytest.raises(SmsOutcomeUnknown, match="unreadable answer to a send"):
        send(client, "garbage")
    assert len(client.lookup("garbage")) == 1


# -- answers the simulator does not give -----------------------------------------------------------


def mock_client(handler: Any) -> SmsProviderClient:
    return SmsProviderClient(
        "https://sms.example/v1", SMS_ID, SMS_SECRET, transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="not-object"),
        pytest.param(b'{"status": 0}', id="no-message-id"),
        pytest.param(b'{"messageId": 7, "status": 0}', id="number-id"),
        pytest.param(b'{"messageId": ""}', id="empty-id"),
        pytest.param(b"[" * 20_000 + b"]" * 20_000, id="too-deep"),
    ],
)
def test_a_2xx_without_a_message_id_is_unknown(body: bytes) -> None:
    with (
        mock_client(lambda _: httpx.Response(201, content=body)) as client,
        pytest.raises(SmsOutcomeUnknown),
    ):
        send(client, "odd")


def test_an_oversized_answer_is_unknown_for_a_send_and_retry_later_for_a_read() -> None:
    huge = b'{"messageId": "m", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    with mock_client(lambda _: httpx.Response(200, content=huge)) as client:
        with pytest.raises(SmsOutcomeUnknown, match="larger than"):
            send(client, "big")
        with pytest.raises(SmsRetryLater, match="larger than"):
            client.lookup("big")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>", id="not-json"),
        pytest.param(b'{"messages": {}}', id="not-a-list"),
        pytest.param(b'{"messages": [1]}', id="not-an-object"),
        pytest.param(b'{"messages": [{"status": "Pending"}]}', id="no-id"),
        pytest.param(b'{"messages": [{"messageId": "m", "status": "Sent"}]}', id="unknown-status"),
        pytest.param(
            b'{"messages": [{"messageId": "m", "status": "Pending", "updateTime": 5}]}',
            id="number-time",
        ),
        pytest.param(
            b'{"messages": [{"messageId": "m", "status": "Pending", "clientReference": "x"}]}',
            id="another-reference",
        ),
    ],
)
def test_a_garbage_lookup_retries_later(body: bytes) -> None:
    with (
        mock_client(lambda _: httpx.Response(200, content=body)) as client,
        pytest.raises(SmsRetryLater, match="garbage"),
    ):
        client.lookup("ref")


def test_a_report_of_another_message_retries_later() -> None:
    body = b'{"messageId": "other", "status": "DELIVERED"}'
    with (
        mock_client(lambda _: httpx.Response(200, content=body)) as client,
        pytest.raises(SmsRetryLater, match="another messageId"),
    ):
        client.report("mine")


def test_the_request_is_what_the_contract_draws() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"messageId": "m-1", "status": 0})

    with mock_client(answer) as client:
        assert send(client, "ref-1", to="+233 24 123 4567") == "m-1"
    [request] = seen
    assert request.url == "https://sms.example/v1/messages/send"
    credentials = base64.b64encode(f"{SMS_ID}:{SMS_SECRET}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {credentials}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "From": SENDER,
        "To": "233241234567",
        "Content": "Your 2GB is on its way",
        "ClientReference": "ref-1",
    }


def test_the_client_shows_no_credentials() -> None:
    with SmsProviderClient("https://sms.example/v1", SMS_ID, SMS_SECRET) as client:
        assert SMS_SECRET not in repr(client)


# -- Retry-After ----------------------------------------------------------------------------


def test_retry_after() -> None:
    now = 1_700_000_000.0
    assert retry_after(None) is None
    assert retry_after("") is None
    assert retry_after("soon") is None
    assert retry_after("nan") is None
    assert retry_after("5") == 5.0
    assert retry_after("-5") == 0.0
    assert retry_after("inf") == MAX_RETRY_AFTER_S
    assert retry_after("1e400") == MAX_RETRY_AFTER_S
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after(date, now=now) == 30.0
    assert retry_after(date, now=now + 60) == 0.0
    assert retry_after(date, now=now - 10**6) == MAX_RETRY_AFTER_S
