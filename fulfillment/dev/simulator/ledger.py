"""A simulated vendor's books: one transaction per reference, deliveries, balance, counters.

Each simulated vendor (AT-iShare, the aggregator) keeps a ledger of its own; a reference is
the AT-iShare reference or the aggregator's request_id. Everything happens under one lock, so
a reference is delivered at most once however many requests race for it (`double_deliveries`
lists any that were not: the guarantee says none). A pending transaction settles the first
time the ledger is touched after its deadline (or `settle` is called): it turns into a
success and counts its delivery, or, as its `Ending` says, fails or is refunded, its price
going back into the account.

The ledger also counts what the at-most-once guarantee forbids the client to do:
**blind re-purchases**, a purchase of a reference after an earlier purchase of it got an
answer the client could not know (no answer, a 5xx, an unreadable body, an answer after the
client gave up) with no readable status lookup in between. Requests are ordered by the
ticket each takes as it arrives (`ticket`), not by when they are answered: a lookup that
arrived after the unknown purchase clears it even when that purchase is answered later.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

PRICE_PER_GB_GHS: Final = 5.0
NOT_FOUND: Final = "not_found"  # snapshot status of a reference with no transaction


class TxStatus(StrEnum):
    SUCCESS = "success"
    PENDING = "pending"
    FAILED = "failed"


class Ending(StrEnum):
    """How a pending transaction settles."""

    DELIVERED = "delivered"
    FAILED = "failed"  # failed, error code DELIVERY_FAILED
    REFUNDED = "refunded"  # failed and refunded, error code REFUNDED


#: the error code of a pending transaction that settles so
ENDING_ERRORS: Final = {Ending.FAILED: "DELIVERY_FAILED", Ending.REFUNDED: "REFUNDED"}


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
    #: failed after it was accepted, its price returned (Ending.REFUNDED)
    refunded: bool = False
    #: ledger clock readings: when a pending transaction was accepted and when it settles
    accepted_at: float | None = None
    settles_at: float | None = None

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
    ending: Ending = Ending.DELIVERED
    charged: float = 0.0
    blind_repurchases: int = 0
    #: tickets of purchases whose outcome the client could not know, not cleared since
    unknown: list[int] = field(default_factory=list)
    #: the latest ticket of a request whose readable answer told the client the state
    known_through: int = 0


def _wire_status(tx: Transaction, _now: float) -> str:
    return tx.status.value


#: how many purchase arrival times (wall clock, time.time()) a snapshot lists, the latest:
#: a rate measured at the vendor's side
ARRIVALS_KEPT: Final = 100_000


class Ledger:
    """Thread-safe record of what the simulated vendor received and delivered.

    id_prefix starts each transaction id; `describe(tx, now)` names a transaction's status
    in the vendor's words (in `snapshot` and `describe`); `on_final(tx)` is called, under the
    lock (keep it quick), with each accepted transaction when it is delivered, failed or
    refunded.
    """

    def __init__(
        self,
        *,
        balance: float,
        clock: Callable[[], float] = time.monotonic,
        id_prefix: str = "ATX",
        describe: Callable[[Transaction, float], str] = _wire_status,
        on_final: Callable[[Transaction], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._id_prefix = id_prefix
        self._describe = describe
        self._on_final = on_final
        self._opening_balance = balance
        self._balance = balance
        self._entries: dict[str, _Entry] = {}
        self._pending: set[str] = set()
        self._faults: Counter[str] = Counter()
        self._tickets = 0
        self._blind: list[str] = []  # references with a blind re-purchase, first one first
        # when each purchase request reached the books, on the wall clock the fleet's
        # per-second rate windows use
        self._arrivals: deque[float] = deque(maxlen=ARRIVALS_KEPT)

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

    def double_deliveries(self) -> list[str]:
        """The references delivered more than once (the guarantee says none)."""
        with self._lock:
            self._settle()
            return [r for r, e in self._entries.items() if e.deliveries > 1]

    def describe(self, tx: Transaction) -> str:
        """The transaction's status in the vendor's words, now."""
        return self._describe(tx, self._clock())

    def blind_repurchases(self, reference: str | None = None) -> int:
        """Re-purchases without a status lookup after an unknown outcome: of `reference`, or
        of every reference (the guarantee says 0)."""
        with self._lock:
            if reference is None:
                return sum(e.blind_repurchases for e in self._entries.values())
            entry = self._entries.get(reference)
            return entry.blind_repurchases if entry else 0

    def blind_repurchase_references(self) -> list[str]:
        """The references bought blind at least once, in the order it first happened."""
        with self._lock:
            return list(self._blind)

    @property
    def balance(self) -> float:
        with self._lock:
            return self._balance

    def snapshot(self) -> dict[str, Any]:
        """Per-reference counters and totals, shaped like GET /_sim/ledger."""
        with self._lock:
            self._settle()
            now = self._clock()
            references = {
                reference: {
                    "deliveries": entry.deliveries,
                    "status": self._describe(entry.transaction, now)
                    if entry.transaction
                    else NOT_FOUND,
                    "transaction_id": entry.transaction.transaction_id if entry.transaction else "",
                    "purchase_requests": entry.purchase_requests,
                    "status_requests": entry.status_requests,
                    "blind_repurchases": entry.blind_repurchases,
                    "outcome_unknown": bool(entry.unknown),
                }
                for reference, entry in self._entries.items()
            }
            totals = {
                "deliveries": sum(e.deliveries for e in self._entries.values()),
                "double_deliveries": [r for r, e in self._entries.items() if e.deliveries > 1],
                "purchase_requests": sum(e.purchase_requests for e in self._entries.values()),
                "status_requests": sum(e.status_requests for e in self._entries.values()),
                "blind_repurchases": sum(e.blind_repurchases for e in self._entries.values()),
                "blind_repurchase_references": list(self._blind),
                "faults": dict(self._faults),
                "purchase_arrivals": list(self._arrivals),
            }
            return {"references": references, "totals": totals, "balance": self._balance}

    # -- commands --------------------------------------------------------------

    def ticket(self) -> int:
        """The number of a request as it arrives: a later arrival gets a larger one."""
        with self._lock:
            return self._take_ticket()

    def note_purchase_request(
        self, reference: str, ticket: int | None = None, *, new_attempt: bool = True
    ) -> bool:
        """Count a purchase request (arrived as `ticket`, default: now); True when it is a
        blind re-purchase, which is counted too. new_attempt=False: a repeated HTTP request of
        an attempt (the aggregator's same Idempotency-Key), never blind."""
        with self._lock:
            entry = self._entries.setdefault(reference, _Entry())
            entry.purchase_requests += 1
            self._arrivals.append(time.time())
            return new_attempt and self._check_blind(entry, reference, ticket)

    def note_refused_purchase(self, reference: str, ticket: int | None = None) -> bool:
        """A purchase request answered before it reached the books (an outage): not counted
        as a request, but a blind re-purchase all the same (True) when it is one."""
        with self._lock:
            entry = self._entries.setdefault(reference, _Entry())
            return self._check_blind(entry, reference, ticket)

    def note_outcome(self, reference: str, ticket: int | None = None, *, known: bool) -> None:
        """What the client learnt from the answer to its request `ticket` (default: now).

        known=False: the answer to a purchase was lost, a 5xx, unreadable or too late, so
        the client cannot know whether it was bought. known=True: a readable answer told
        the client the reference's state (a status lookup; a purchase's 200, 202 or 409),
        which clears every unknown outcome of requests that arrived before it. Answers that
        tell neither (a 429, a 400) are not noted.
        """
        with self._lock:
            entry = self._entries.setdefault(reference, _Entry())
            t = self._take_ticket() if ticket is None else ticket
            if known:
                entry.known_through = max(entry.known_through, t)
                entry.unknown = [u for u in entry.unknown if u > entry.known_through]
            elif t > entry.known_through:
                entry.unknown.append(t)

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

    def settle(self) -> None:
        """Settle every pending transaction past its deadline (callbacks need it on time)."""
        with self._lock:
            self._settle()

    def purchase(
        self,
        reference: str,
        size_gb: float,
        *,
        pending_for: float | None,
        ending: Ending = Ending.DELIVERED,
    ) -> Purchase:
        """Take the reference and charge the account, or say why not.

        pending_for None delivers now; otherwise the transaction stays pending for that
        many seconds and then settles as `ending` says (a delivery is counted then). The
        price is charged on acceptance either way, and returned by a failure or a refund.
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
            entry.charged = cost
            if pending_for is None:
                tx = Transaction(reference, self._new_id(), TxStatus.SUCCESS)
                entry.deliveries += 1
                self._final(tx)
            else:
                now = self._clock()
                tx = Transaction(
                    reference,
                    self._new_id(),
                    TxStatus.PENDING,
                    accepted_at=now,
                    settles_at=now + pending_for,
                )
                entry.ending = ending
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
            self._blind.clear()
            self._balance = self._opening_balance

    # -- internals (caller holds the lock) -------------------------------------

    def _new_id(self) -> str:
        return f"{self._id_prefix}-{uuid.uuid4().hex[:20].upper()}"

    def _final(self, tx: Transaction) -> None:
        if self._on_final is not None:
            self._on_final(tx)

    def _take_ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def _check_blind(self, entry: _Entry, reference: str, ticket: int | None) -> bool:
        """Count the purchase `ticket` as blind when an earlier one's outcome is unknown."""
        t = self._take_ticket() if ticket is None else ticket
        if not any(u < t for u in entry.unknown):
            return False
        entry.blind_repurchases += 1
        if entry.blind_repurchases == 1:
            self._blind.append(reference)
        return True

    def _fail(self, entry: _Entry, reference: str, error_code: str) -> Transaction:
        tx = Transaction(reference, self._new_id(), TxStatus.FAILED, error_code)
        entry.transaction = tx
        return tx

    def _settle(self) -> None:
        """Settle every pending transaction past its deadline as its ending says."""
        if not self._pending:
            return
        now = self._clock()
        for reference in list(self._pending):
            entry = self._entries[reference]
            tx = entry.transaction
            if tx is not None and tx.settles_at is not None and tx.settles_at > now:
                continue
            self._pending.discard(reference)
            if tx is None or tx.status is not TxStatus.PENDING:
                continue
            if entry.ending is Ending.DELIVERED:
                tx = replace(tx, status=TxStatus.SUCCESS)
                entry.deliveries += 1
            else:
                refunded = entry.ending is Ending.REFUNDED
                error_code = ENDING_ERRORS[entry.ending]
                tx = replace(tx, status=TxStatus.FAILED, error_code=error_code, refunded=refunded)
                self._balance += entry.charged
            entry.transaction = tx
            self._final(tx)
