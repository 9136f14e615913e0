"""An adversarial in-memory AT-iShare vendor, breaker and rate-limit gate for the model test.

tests/integration/test_decision_model.py drives the real fulfil service against these. The
vendor implements fulfillment.services.ports.VendorPort (purchase, status) and raises the errors the
real client raises (fulfillment.domain.errors). What it answers is chosen per call by a `chooser`
(hypothesis draws, in the model test): a normal answer, a 5xx or a timeout either before or
after the purchase was applied (a lost answer), 429 / 402 / 401, or a worker killed (a
BaseException) before or after the purchase was applied.

It keeps its own books per reference (never received / pending / success / failed, and how
many deliveries) and checks, on every POST, the rule the fleet must keep: no POST for a
reference after an earlier POST of it whose outcome the fleet could not know (timeout, 5xx,
a lost worker) without a status answer for that reference in between. Violations are
collected, not raised, so that the service under test runs on exactly as in production.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from fulfillment.domain.errors import (
    InsufficientBalance,
    RateLimited,
    VendorServerError,
    VendorTimeout,
    VendorUnauthorized,
)
from fulfillment.domain.order import FulfillmentRequest
from fulfillment.vendors.answer import VendorAnswer


class WorkerKilled(BaseException):
    """The worker process died here (SIGKILL, a time limit): nothing after this line runs."""


#: Purchase faults. "ok" first (repeated: the common case, and where shrinking goes).
PURCHASE_FAULTS: tuple[str, ...] = (
    "ok",
    "ok",
    "ok",
    "timeout_after",  # applied, answer lost
    "timeout_before",  # never reached the vendor, but the worker cannot know that
    "5xx_after",
    "5xx_before",
    "429",
    "402",
    "401",
    "kill_after",  # applied, then the worker died
    "kill_before",  # the worker died before the POST left
)
STATUS_FAULTS: tuple[str, ...] = ("ok", "ok", "ok", "timeout", "5xx", "429", "401", "kill")
#: How a purchase the vendor accepts turns out on the spot.
ACCEPTED_AS: tuple[str, ...] = ("success", "pending")

#: chooser(label, options) -> one of options
Chooser = Callable[[str, Sequence[str]], str]


def always_first(label: str, options: Sequence[str]) -> str:
    return options[0]


@dataclass
class Txn:
    transaction_id: str
    status: str  # pending | success | failed


@dataclass
class RefBook:
    """What the vendor knows and what it told the fleet about one reference."""

    name: str
    txns: list[Txn] = field(default_factory=list)
    posts: int = 0
    lookups: int = 0
    #: None: another POST is allowed; else why it is not (the fleet must look it up first)
    post_blocked: str | None = None
    #: the blocking reason is an unknown outcome (invariant a) rather than a known hold
    blocked_by_unknown: bool = False
    #: what the fleet was last told about the reference (None: nothing yet)
    told: str | None = None
    #: the step in which a lookup told the fleet that a pending purchase failed
    failed_after_pending_step: int | None = None

    @property
    def status(self) -> str:
        return self.txns[-1].status if self.txns else "not_found"

    @property
    def deliveries(self) -> int:
        return sum(1 for t in self.txns if t.status == "success")

    @property
    def holds(self) -> bool:
        """The vendor holds a delivery, done or on its way, for this reference."""
        return any(t.status in ("pending", "success") for t in self.txns)

    def live(self) -> Txn | None:
        for txn in reversed(self.txns):
            if txn.status in ("pending", "success"):
                return txn
        return None

    def describe(self) -> str:
        txns = ",".join(t.status for t in self.txns) or "none"
        return (
            f"{self.name}: vendor txns [{txns}], {self.deliveries} delivered, "
            f"{self.posts} POST, {self.lookups} lookups answered"
        )


@dataclass(frozen=True)
class Violation:
    #: "a" unknown outcome re-bought; "a+" re-bought what the fleet knew held; "k" a failure
    #: after pending re-bought in the same step, skipping the backoff table
    invariant: str
    message: str


class ModelVendor:
    """VendorPort with per-call faults chosen by `chooser` and a ledger per reference."""

    def __init__(self, *, honours_409: bool = True, trace: list[str] | None = None) -> None:
        #: False: a POST for a reference the vendor holds is a new purchase (no 409 safety net)
        self.honours_409 = honours_409
        self.books: dict[str, RefBook] = {}
        self.names: dict[str, str] = {}
        self.chooser: Chooser = always_first
        #: whether the current caller may be killed (a worker, the reconciler)
        self.kills_allowed = False
        self.violations: list[Violation] = []
        #: the model's step number (invariant k: a failure after pending waits for the next)
        self.step = 0
        self.trace = trace if trace is not None else []
        self._ids = itertools.count(1)

    # -- bookkeeping -----------------------------------------------------------------------

    def register(self, reference: str, name: str) -> None:
        self.names[reference] = name
        self.books[reference] = RefBook(name)

    def book(self, reference: str) -> RefBook:
        if reference not in self.books:
            self.register(reference, reference[:8])
        return self.books[reference]

    def settle(self, reference: str, outcome: str) -> bool:
        """The vendor finishes a pending transaction (success or failed)."""
        book = self.book(reference)
        for txn in book.txns:
            if txn.status == "pending":
                txn.status = outcome
                self.trace.append(f"    vendor: {book.name} pending -> {outcome}")
                return True
        return False

    def _choose(self, label: str, options: Sequence[str]) -> str:
        if not self.kills_allowed:
            options = [o for o in options if not o.startswith("kill")]
        return self.chooser(label, options)

    def _answer(self, book: RefBook, reference: str, txn: Txn, http_status: int) -> VendorAnswer:
        body = {"status": txn.status, "reference": reference, "transaction_id": txn.transaction_id}
        raw: object = body
        if http_status == 409:
            raw = {"error": {"code": "DUPLICATE_REFERENCE"}, "transaction": body}
        return VendorAnswer(txn.status, reference, txn.transaction_id, http_status, raw, 3)

    def _told(self, book: RefBook, status: str) -> None:
        """The fleet received an answer saying `status` about the reference."""
        if status == "failed" and book.told == "pending":
            book.failed_after_pending_step = self.step
        book.told = status
        if status in ("not_found", "failed"):
            book.post_blocked = None
            book.blocked_by_unknown = False
        else:
            book.post_blocked = f"the fleet was told {status}"
            book.blocked_by_unknown = False

    def _lost(self, book: RefBook, why: str) -> None:
        book.post_blocked = f"the outcome of an earlier POST was unknown ({why})"
        book.blocked_by_unknown = True

    # -- VendorPort ------------------------------------------------------------------------

    def purchase(
        self, request: FulfillmentRequest, attempt: int = 1, *, resend: int = 0
    ) -> VendorAnswer:
        reference = request.order_id
        book = self.book(reference)
        fault = self._choose(f"{book.name} POST", PURCHASE_FAULTS)
        if book.post_blocked is not None:
            kind = "a" if book.blocked_by_unknown else "a+"
            self.violations.append(
                Violation(
                    kind,
                    f"POST #{book.posts + 1} for {book.name} without a status answer since: "
                    f"{book.post_blocked}",
                )
            )
            self.trace.append(f"    !! ({kind}) blind re-purchase of {book.name}")
        if book.failed_after_pending_step == self.step:
            self.violations.append(
                Violation(
                    "k",
                    f"POST #{book.posts + 1} for {book.name} right after a lookup said its "
                    "pending purchase failed (no backoff)",
                )
            )
            self.trace.append(f"    !! (k) re-purchase of {book.name} without its backoff")
        book.posts += 1
        if fault == "kill_before":
            self._lost(book, "worker killed around the POST")
            self.trace.append(f"    vendor: POST {book.name} -> worker killed before it left")
            raise WorkerKilled(f"killed before POST {book.name}")
        if fault in ("timeout_before", "5xx_before"):
            self._lost(book, fault)
            self.trace.append(f"    vendor: POST {book.name} -> {fault} (nothing applied)")
            raise _lost_error(fault)
        if fault in ("429", "402", "401"):
            self.trace.append(f"    vendor: POST {book.name} -> {fault} (nothing applied)")
            raise _held_error(fault)
        live = book.live()
        if live is not None and self.honours_409:
            answer = self._answer(book, reference, live, 409)
            applied = f"409 {live.status}"
        else:
            status = self.chooser(f"{book.name} accepted as", ACCEPTED_AS)
            txn = Txn(f"ATX-{next(self._ids):04d}", status)
            book.txns.append(txn)
            answer = self._answer(book, reference, txn, 200 if status == "success" else 202)
            applied = f"accepted {status}" + (" (AGAIN: no 409)" if live is not None else "")
        if fault == "kill_after":
            self._lost(book, "worker killed around the POST")
            self.trace.append(f"    vendor: POST {book.name} -> {applied}, then worker killed")
            raise WorkerKilled(f"killed after POST {book.name}")
        if fault in ("timeout_after", "5xx_after"):
            self._lost(book, fault)
            self.trace.append(f"    vendor: POST {book.name} -> {applied}, answer lost ({fault})")
            raise _lost_error(fault)
        self._told(book, answer.status)
        self.trace.append(f"    vendor: POST {book.name} -> {applied}")
        return answer

    def status(self, reference: str) -> VendorAnswer:
        book = self.book(reference)
        fault = self._choose(f"{book.name} GET", STATUS_FAULTS)
        if fault == "kill":
            self.trace.append(f"    vendor: GET {book.name} -> worker killed")
            raise WorkerKilled(f"killed during GET {book.name}")
        if fault != "ok":
            self.trace.append(f"    vendor: GET {book.name} -> {fault}")
            raise _lost_error(fault) if fault in ("timeout", "5xx") else _held_error(fault)
        book.lookups += 1
        self._told(book, book.status)
        self.trace.append(f"    vendor: GET {book.name} -> {book.status}")
        if not book.txns:
            raw = {"error": {"code": "NOT_FOUND"}}
            return VendorAnswer("not_found", reference, None, 404, raw, 3)
        return self._answer(book, reference, book.txns[-1], 200)


def _lost_error(fault: str) -> Exception:
    if fault.startswith("timeout"):
        return VendorTimeout("vendor did not answer in time (model)", latency_ms=1000)
    return VendorServerError("vendor answered HTTP 503 (model)", http_status=503, latency_ms=3)


def _held_error(fault: str) -> Exception:
    if fault == "429":
        return RateLimited("rate limited (model)", retry_after_s=2.0, http_status=429)
    if fault == "402":
        return InsufficientBalance("insufficient balance (model)", http_status=402)
    return VendorUnauthorized("unauthorized (model)", http_status=401)


# -- the breaker and the rate-limit gate ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelPermit:
    allowed: bool
    probe: bool = False
    retry_in_s: float = 0.0


class ModelBreaker:
    """BreakerPort: closed, open (denies) or half-open (one probe at a time), set by the model's
    rules; `open_after` consecutive vendor-wide failures also open it (any traffic volume);
    trip() pauses every call until the model lets time pass."""

    def __init__(self, *, open_after: int | None = None, trace: list[str] | None = None) -> None:
        self.state = "closed"
        self.probe_out = False
        self.paused = False
        self.open_after = open_after
        self.failures_in_a_row = 0
        self.trace = trace if trace is not None else []

    def allow(self) -> ModelPermit:
        if self.paused:
            return ModelPermit(False, retry_in_s=5.0)
        if self.state == "open":
            return ModelPermit(False, retry_in_s=30.0)
        if self.state == "half_open":
            if self.probe_out:
                return ModelPermit(False, retry_in_s=5.0)
            self.probe_out = True
            return ModelPermit(True, probe=True)
        return ModelPermit(True)

    def record(self, *, success: bool, probe: bool = False) -> None:
        if probe:
            self.probe_out = False
            self.state = "closed" if success else "open"
            self.failures_in_a_row = 0
            self.trace.append(f"    breaker: probe {'succeeded' if success else 'failed'}")
            return
        if success:
            self.failures_in_a_row = 0
            return
        self.failures_in_a_row += 1
        if (
            self.open_after is not None
            and self.state == "closed"
            and self.failures_in_a_row >= self.open_after
        ):
            self.state = "open"
            self.trace.append("    breaker: opens (vendor-wide failures)")

    def is_open(self) -> bool:
        return self.state in ("open", "half_open")

    def trip(self, seconds: float, reason: str, *, alert: bool = True) -> None:
        if seconds > 0:
            self.paused = True
            self.trace.append(f"    breaker: paused {seconds:g}s ({reason})")

    def release_probe(self) -> None:
        self.probe_out = False

    def reset(self) -> None:
        self.state = "closed"
        self.probe_out = False
        self.paused = False
        self.failures_in_a_row = 0


class ModelGate:
    """GatePort: every slot is taken while `full` (the fleet's rate limit is saturated)."""

    def __init__(self) -> None:
        self.full = False

    @contextmanager
    def slot(self, max_wait_s: float | None = None) -> Iterator[bool]:
        yield not self.full
