"""The vendor simulator: AT-iShare, the data aggregator, the SMS provider and the platform's
event receiver, one real HTTP server for all four.

AT-iShare (DESIGN.md "AT-iShare vendor API") answers at /v1, its control routes at /_sim/;
the aggregator (DESIGN.md "Other networks") at /aggregator/v1 and /aggregator/_sim/; the SMS
provider (DESIGN.md "Customer SMS") at /sms/v1 and /sms/_sim/; the platform receiver
(DESIGN.md "What the platform is told") at /platform/events and /platform/_sim/. Each party
has a ledger, fault config, dice, scripts and outages of its own.

- `faults`: what goes wrong and how often (FaultConfig, roll, scripts, outages; PartyFaults
  and PartyChaos for the two parties that are not vendors)
- `ledger`: what a vendor received and delivered, exactly once per reference, and the
  blind re-purchases (a purchase after an unknown outcome without a status lookup between)
- `vendor`: one vendor's live state (ledger, faults, purchases in flight, control routes)
- `api`: what both vendor APIs do alike (faults, outages, the books, what the client learns)
- `atishare`, `aggregator`: the two protocols (`idempotency`, `callbacks`: the aggregator's
  Idempotency-Key and signed callbacks)
- `sms`: the SMS provider (no deduplication; the ledger's duplicate and blind sends)
- `platform`: the platform's event receiver (signatures, `verify_signature`, deduplication on
  event_id; the ledger's conflicting bodies and out-of-order events)
- `handler`: the HTTP transport, each party mounted at a prefix
- `server`: the server, in-process (`Simulator`) or from the command line
  (python -m fulfillment.dev.simulator.server --help)
"""

from typing import TYPE_CHECKING, Any

from fulfillment.dev.simulator.faults import FaultConfig, FaultKind, roll
from fulfillment.dev.simulator.ledger import Ledger, Transaction, TxStatus

if TYPE_CHECKING:
    from fulfillment.dev.simulator.server import Simulator, main

__all__ = [
    "FaultConfig",
    "FaultKind",
    "Ledger",
    "Simulator",
    "Transaction",
    "TxStatus",
    "main",
    "roll",
]


def __getattr__(name: str) -> Any:
    # server is imported lazily so that `python -m fulfillment.dev.simulator.server` runs it
    # only once.
    if name in ("Simulator", "main"):
        from fulfillment.dev.simulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
