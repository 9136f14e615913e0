"""The simulated vendor's books: one transaction per reference, deliveries, balance, counters.

Everything happens under one lock, so a reference is delivered at most once however
many requests race for it. A pending transaction turns into a success (and counts
its delivery) the first time the ledger is touched after its deadline.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

PRICE_PER_GB_GHS: Final = 5.0
NOT_FOUND: Final = "not_found"  # snapshot status of a reference with no transaction


class TxStatus(StrEnum):
    SUCCESS = "success"
    PENDING = "pending"
    FAILED = "failed"


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    INSUFFICIENT_BALANCE = "insufficient_balance"


@dataclass(frozen=True)
class Transaction:
    reference: str
    transaction_id: str
    status: TxStatus
    error_code: str | None = None

    @property
    def live(self) -> bool:
        """Success or pending: the reference is taken and must not be delivered again."""
        return self.status is not TxStatus.FAILED

    def to_json(self) -> dict[str, Any]:
        """The wire form: {"status", "reference", "transaction_id"} (+ "error" when failed)."""
        body: dict[str, Any] = {
            "status": self.status.value,
            "reference": self.reference,
            "transaction_id": self.transaction_id,
        }
        if self.error_code is not None:
            body["error"] = {"code": self.error_code}
        return body


@dataclass(frozen=True)
class Purchase:
    outcome: Outcome
    transaction: Transaction


@dataclass
class _Entry:
    transaction: Transaction | None = None
    deliveries: int = 0
    purchase_requests: int = 0
    status_requests: int = 0
    pending_until: float | None = None


def _new_transaction_id() -> str:
    return f"ATX-{uuid.uuid4().hex[:20].upper()}"


class Ledger:
    """Thread-safe record of what the simulated vendor received and delivered."""

    def __init__(self, *, balance: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._opening_balance = balance
        self._balance = balance
        self._entries: dict[str, _Entry] = {}
        self._pending: set[str] = set()
        self._faults: Counter[str] = Counter()

    # -- queries ---------------------------------------------------------------

    def deliveries(self, reference: str) -> int:
        with self._lock:
            self._settle()
            entry = self._entries.get(reference)
            return entry.deliveries if entry else 0

    def transaction(self, reference: str) -> Transaction | None:
        """The reference's current transaction, without counting a status request."""
        with self._lock:
            self._settle()
            entry = self._entries.get(reference)
            return entry.transaction if entry else None

    @property
    def balance(self) -> float:
        with self._lock:
            return self._balance

    def snapshot(self) -> dict[str, Any]:
        """Per-reference counters and totals, shaped like GET /_sim/ledger."""
        with self._lock:
            self._settle()
            references = {
                reference: {
                    "deliveries": entry.deliveries,
                    "status": entry.transaction.status.value if entry.transaction else NOT_FOUND,
                    "transaction_id": entry.transaction.transaction_id if entry.transaction else "",
                    "purchase_requests": entry.purchase_requests,
                    "status_requests": entry.status_requests,
                }
                for reference, entry in self._entries.items()
            }
            totals = {
                "deliveries": sum(e.deliveries for e in self._entries.values()),
                "purchase_requests": sum(e.purchase_requests for e in self._entries.values()),
                "status_requests": sum(e.status_requests for e in self._entries.values()),
                "faults": dict(self._faults),
            }
            return {"references": references, "totals": totals, "balance": self._balance}

    # -- commands --------------------------------------------------------------

    def note_purchase_request(self, reference: str) -> None:
        with self._lock:
            self._entries.setdefault(reference, _Entry()).purchase_requests += 1

    def note_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def lookup(self, reference: str) -> Transaction | None:
        """Answer a status request: count it, settle due pendings, return the transaction."""
        with self._lock:
            self._settle()
            entry = self._entries.setdefault(reference, _Entry())
            entry.status_requests += 1
            return entry.transaction

    def purchase(self, reference: str, size_gb: float, *, pending_for: float | None) -> Purchase:
        """Take the reference and charge the account, or say why not.

        pending_for None delivers now; otherwise the transaction stays pending for that
        many seconds and its delivery is counted when it settles. The price is charged
        on acceptance either way.
        """
        with self._lock:
            self._settle()
            entry = self._entries.setdefault(reference, _Entry())
            current = entry.transaction
            if current is not None and current.live:
                return Purchase(Outcome.DUPLICATE, current)
            cost = size_gb * PRICE_PER_GB_GHS
            if self._balance - cost < 0:
                failed = self._fail(entry, reference, "INSUFFICIENT_BALANCE")
                return Purchase(Outcome.INSUFFICIENT_BALANCE, failed)
            self._balance -= cost
            if pending_for is None:
                tx = Transaction(reference, _new_transaction_id(), TxStatus.SUCCESS)
                entry.deliveries += 1
            else:
                tx = Transaction(reference, _new_transaction_id(), TxStatus.PENDING)
                entry.pending_until = self._clock() + pending_for
                self._pending.add(reference)
            entry.transaction = tx
            return Purchase(Outcome.ACCEPTED, tx)

    def fail(self, reference: str, error_code: str) -> Transaction:
        """Record a failed attempt, unless the reference already has a live transaction."""
        with self._lock:
            self._settle()
            entry = self._entries.setdefault(reference, _Entry())
            if entry.transaction is not None and entry.transaction.live:
                return entry.transaction
            return self._fail(entry, reference, error_code)

    def set_balance(self, balance: float) -> None:
        with self._lock:
            self._opening_balance = balance
            self._balance = balance

    def reset(self) -> None:
        """Forget every reference and counter; the balance goes back to its opening value."""
        with self._lock:
            self._entries.clear()
            self._pending.clear()
            self._faults.clear()
            self._balance = self._opening_balance

    # -- internals (caller holds the lock) -------------------------------------

    def _fail(self, entry: _Entry, reference: str, error_code: str) -> Transaction:
        tx = Transaction(reference, _new_transaction_id(), TxStatus.FAILED, error_code)
        entry.transaction = tx
        return tx

    def _settle(self) -> None:
        """Turn every pending transaction past its deadline into a delivered success."""
        if not self._pending:
            return
        now = self._clock()
        for reference in list(self._pending):
            entry = self._entries[reference]
            if entry.pending_until is not None and entry.pending_until > now:
                continue
            self._pending.discard(reference)
            entry.pending_until = None
            if entry.transaction is not None and entry.transaction.status is TxStatus.PENDING:
                entry.transaction = replace(entry.transaction, status=TxStatus.SUCCESS)
                entry.deliveries += 1
