"""The simulated data aggregator (DESIGN.md "Other networks"), mounted at /aggregator/v1.

`Authorization: Bearer <token>`; POST /orders (with `Idempotency-Key`, see
fulfillment.dev.simulator.idempotency), GET /orders/{request_id}, GET /wallet; control routes
under /aggregator/_sim/ (those of AT-iShare, plus /callbacks). It has a ledger, fault config,
dice, scripts and outages of its own; the fault kinds are AT-iShare's, in its words: INVALID_PHONE
is a 422 INVALID_RECIPIENT (so are the configured invalid_phones and invalid_phone_suffix, in
the local 0XXXXXXXXX form), INSUFFICIENT_BALANCE a 402 LOW_WALLET, RATE_LIMIT a 429
TOO_MANY_REQUESTS. A pending order is "queued" for the first half of pending_seconds and
"processing" for the second, then "delivered" (or "failed", "refunded": the PENDING_THEN_* faults).
Prices are AT-iShare's (ledger.PRICE_PER_GB_GHS, volume_mb / 1024 GB).
"""

from __future__ import annotations

import hmac
import re
import threading
from typing import TYPE_CHECKING, ClassVar, Final

from fulfillment.dev.simulator.api import Problem, Reply, VendorApi
from fulfillment.dev.simulator.callbacks import Callbacks
from fulfillment.dev.simulator.faults import MAX_GB, Chaos, FaultConfig, FaultKind, is_valid_phone
from fulfillment.dev.simulator.handler import ControlRoutes, JsonBody, error, json_object
from fulfillment.dev.simulator.idempotency import IdempotencyKeys, KeySlot
from fulfillment.dev.simulator.ledger import Ledger, Transaction, TxStatus
from fulfillment.dev.simulator.vendor import Vendor

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fulfillment.dev.simulator.handler import Handler

MOUNT: Final = "/aggregator"
ORDERS_PATH: Final = MOUNT + "/v1/orders"
WALLET_PATH: Final = MOUNT + "/v1/wallet"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
NETWORKS: Final = frozenset({"MTN", "TELECEL", "AT_BIGTIME"})
RECIPIENT_PATTERN: Final = re.compile(r"0\d{9}")
MAX_VOLUME_MB: Final = MAX_GB * 1024


def order_status(tx: Transaction, now: float) -> str:
    """The aggregator's word for a transaction's status at `now` (ledger clock)."""
    if tx.status is TxStatus.SUCCESS:
        return "delivered"
    if tx.status is TxStatus.FAILED:
        return "refunded" if tx.refunded else "failed"
    start, end = tx.accepted_at, tx.settles_at
    halfway = None if start is None or end is None else (start + end) / 2
    return "processing" if halfway is not None and now >= halfway else "queued"


def order_json(tx: Transaction, status: str) -> JsonBody:
    """{"order_ref", "request_id", "status", "failure_reason"?}."""
    data: JsonBody = {"order_ref": tx.transaction_id, "request_id": tx.reference, "status": status}
    if tx.status is TxStatus.FAILED and tx.error_code is not None:
        data["failure_reason"] = tx.error_code
    return data


def order_problem(payload: JsonBody, config: FaultConfig) -> tuple[str, str] | None:
    """(error code, message) for the first invalid field of an order body, or None."""
    if not is_valid_phone(payload.get("recipient"), config, RECIPIENT_PATTERN):
        return "INVALID_RECIPIENT", "recipient must be a valid 0XXXXXXXXX number"
    network = payload.get("network")
    if not isinstance(network, str) or network not in NETWORKS:
        return "NETWORK_NOT_SUPPORTED", f"network must be one of {sorted(NETWORKS)}"
    volume = payload.get("volume_mb")
    if isinstance(volume, bool) or not isinstance(volume, int) or not 0 < volume <= MAX_VOLUME_MB:
        return "INVALID_VOLUME", f"volume_mb must be a whole number in (0, {MAX_VOLUME_MB}]"
    return None


class AggregatorVendor(Vendor):
    """The simulated aggregator: its token, books, faults, idempotency keys and callbacks."""

    def __init__(
        self,
        *,
        token: str,
        faults: FaultConfig,
        seed: int | None,
        stopping: threading.Event,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.token = token
        self.keys = IdempotencyKeys()
        self.callbacks = (
            None
            if webhook_url is None
            else Callbacks(webhook_url, webhook_secret, stopping=stopping)
        )
        ledger = Ledger(
            balance=faults.balance,
            id_prefix="AGG",
            describe=order_status,
            on_final=None if self.callbacks is None else self._final,
        )
        super().__init__(ledger, Chaos(faults, seed=seed), stopping=stopping)

    def _final(self, tx: Transaction) -> None:
        if self.callbacks is not None:  # the final status does not depend on the time
            self.callbacks.notify({"data": order_json(tx, order_status(tx, 0.0))})

    def answer(self, http: Handler, path: str, body: bytes) -> None:
        AggregatorApi(http, self).answer(path, body)

    def reset(self) -> None:
        """Also forget every idempotency key and queued callback."""
        super().reset()
        self.keys.clear()
        if self.callbacks is not None:
            self.callbacks.reset()

    def start(self) -> None:
        if self.callbacks is not None:
            self.callbacks.start(self.ledger.settle)

    def stop(self) -> None:
        if self.callbacks is not None:
            self.callbacks.stop()

    def ledger_snapshot(self) -> JsonBody:
        return {**self.ledger.snapshot(), "idempotency": self.keys.snapshot()}

    def callback_snapshot(self) -> JsonBody:
        """{"url", "sent", "failed", "queued"} (url None: no callbacks)."""
        if self.callbacks is None:
            return {"url": None, "sent": 0, "failed": 0, "queued": 0}
        return self.callbacks.snapshot()

    def control_routes(self) -> ControlRoutes:
        return {
            **super().control_routes(),
            "/_sim/callbacks": {"GET": lambda _: self.callback_snapshot()},
        }


class AggregatorApi(VendorApi):
    REFUSALS: ClassVar[Mapping[FaultKind, Problem]] = {
        FaultKind.RATE_LIMIT: (429, "TOO_MANY_REQUESTS", "slow down"),
        FaultKind.INVALID_PHONE: (422, "INVALID_RECIPIENT", "recipient refused by the network"),
        FaultKind.INSUFFICIENT_BALANCE: (402, "LOW_WALLET", "top up the wallet"),
    }
    UNAUTHORIZED: ClassVar[JsonBody] = error("UNAUTHENTICATED", "bad or missing bearer token")
    PURCHASE_PATH = ORDERS_PATH
    BALANCE_PATH = WALLET_PATH
    REFERENCE_FIELD = "request_id"
    vendor: AggregatorVendor
    _slot: KeySlot | None = None  # the Idempotency-Key of the purchase being answered

    def authorized(self, path: str, body: bytes) -> bool:
        scheme, _, token = self.http.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), self.vendor.token.encode())

    def balance(self) -> JsonBody:
        balance = f"{max(self.vendor.ledger.balance, 0.0):.2f}"
        return {"data": {"balance": balance, "currency": "GHS"}}

    def _key(self) -> str:
        return self.http.headers.get(IDEMPOTENCY_HEADER, "").strip()

    def note_refused_purchase(self, reference: str, body: bytes) -> None:
        """In an outage too, a repeated request of an attempt (its key seen before) is never a
        blind re-purchase; its key is seen from now on."""
        key = self._key()
        if not key or self.vendor.keys.slot(key).arrive(json_object(body)) == 1:
            self.vendor.ledger.note_refused_purchase(reference, self.ticket)
        self.vendor.ledger.note_outcome(reference, self.ticket, known=False)

    def purchase_request(self, request_id: str, payload: JsonBody) -> None:
        """A purchase needs a key; a key's repeat gets its kept answer, or is answered afresh."""
        key = self._key()
        if not key:
            message = f"{IDEMPOTENCY_HEADER} header required: <request_id>:<attempt>"
            self.http.reply_json(400, error("VALIDATION_ERROR", message))
            return
        slot = self.vendor.keys.slot(key)
        with slot.busy:
            arrival = slot.arrive(payload)
            if arrival is None:
                message = f"{IDEMPOTENCY_HEADER} {key!r} was used with another request"
                self.http.reply_json(400, error("VALIDATION_ERROR", message))
                return
            kept = slot.answer
            if kept is not None:
                self.vendor.ledger.note_purchase_request(request_id, self.ticket, new_attempt=False)
                slot.replayed()
                self.answer_purchase(request_id, kept)
                return
            self._slot = slot
            self.purchase(request_id, payload, new_attempt=arrival == 1)

    def keep(self, reply: Reply) -> None:
        if self._slot is not None:
            self._slot.keep(reply)

    def problem(self, payload: JsonBody, config: FaultConfig) -> Problem | None:
        problem = order_problem(payload, config)
        return None if problem is None else (422, *problem)

    def size_gb(self, payload: JsonBody) -> float:
        return int(payload["volume_mb"]) / 1024

    def _data(self, tx: Transaction) -> JsonBody:
        return order_json(tx, self.vendor.ledger.describe(tx))

    def accepted(self, tx: Transaction) -> Reply:
        return Reply(201, {"data": self._data(tx)}, reveals=True)

    def duplicate(self, tx: Transaction) -> Reply:
        reply = error("DUPLICATE_REQUEST", "request_id already used; see data")
        return Reply(409, {**reply, "data": self._data(tx)}, reveals=True)

    def found(self, tx: Transaction) -> JsonBody:
        return {"data": self._data(tx)}

    def not_found(self) -> JsonBody:
        return error("NOT_FOUND", "no order with that request_id")
