"""The simulated AT-iShare API (DESIGN.md "AT-iShare vendor API"), mounted at /v1.

Signed requests (X-API-Key, X-Timestamp, X-Signature); POST /v1/data/purchase,
GET /v1/data/purchase/{reference}, GET /v1/account/balance. The flow they share with the
aggregator (faults, outages, the books, blind re-purchases) is fulfillment.dev.simulator.api.
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import TYPE_CHECKING, ClassVar, Final

from fulfillment.dev.simulator.api import Problem, Reply, VendorApi
from fulfillment.dev.simulator.faults import Chaos, FaultConfig, FaultKind, purchase_problem
from fulfillment.dev.simulator.handler import JsonBody, error
from fulfillment.dev.simulator.ledger import Ledger, Transaction, TxStatus
from fulfillment.dev.simulator.vendor import Vendor
from fulfillment.vendors.atishare_signing import verify

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fulfillment.dev.simulator.handler import Handler

PURCHASE_PATH: Final = "/v1/data/purchase"
BALANCE_PATH: Final = "/v1/account/balance"


class AtIshareVendor(Vendor):
    """The simulated AT-iShare vendor: its credentials, books and faults."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        faults: FaultConfig,
        seed: int | None,
        stopping: threading.Event,
    ) -> None:
        super().__init__(
            Ledger(balance=faults.balance), Chaos(faults, seed=seed), stopping=stopping
        )
        self.api_key = api_key
        self.api_secret = api_secret

    def answer(self, http: Handler, path: str, body: bytes) -> None:
        AtIshareApi(http, self).answer(path, body)


class AtIshareApi(VendorApi):
    REFUSALS: ClassVar[Mapping[FaultKind, Problem]] = {
        FaultKind.RATE_LIMIT: (429, "RATE_LIMITED", "slow down"),
        FaultKind.INVALID_PHONE: (400, "INVALID_PHONE", "phone_number rejected by the network"),
        FaultKind.INSUFFICIENT_BALANCE: (402, "INSUFFICIENT_BALANCE", "top up the vendor account"),
    }
    UNAUTHORIZED: ClassVar[JsonBody] = error("UNAUTHORIZED", "bad API key, signature or timestamp")
    PURCHASE_PATH = PURCHASE_PATH
    BALANCE_PATH = BALANCE_PATH
    REFERENCE_FIELD = "reference"
    vendor: AtIshareVendor

    def authorized(self, path: str, body: bytes) -> bool:
        key = self.http.headers.get("X-API-Key", "")
        if not hmac.compare_digest(key.encode(), self.vendor.api_key.encode()):
            return False
        return verify(
            self.vendor.api_secret,
            timestamp=self.http.headers.get("X-Timestamp"),
            signature=self.http.headers.get("X-Signature"),
            method=self.http.command,
            path=path,
            body=body,
            now=time.time(),
        )

    def balance(self) -> JsonBody:
        return {"balance": round(self.vendor.ledger.balance, 2), "currency": "GHS"}

    def problem(self, payload: JsonBody, config: FaultConfig) -> Problem | None:
        problem = purchase_problem(payload, config)
        return None if problem is None else (400, *problem)

    def size_gb(self, payload: JsonBody) -> float:
        return float(payload["size_gb"])

    def accepted(self, tx: Transaction) -> Reply:
        return Reply(202 if tx.status is TxStatus.PENDING else 200, tx.to_json(), reveals=True)

    def duplicate(self, tx: Transaction) -> Reply:
        reply = error("DUPLICATE_REFERENCE", "reference already used; see transaction")
        return Reply(409, {**reply, "transaction": tx.to_json()}, reveals=True)

    def found(self, tx: Transaction) -> JsonBody:
        return tx.to_json()

    def not_found(self) -> JsonBody:
        return error("NOT_FOUND", "no transaction with that reference")
