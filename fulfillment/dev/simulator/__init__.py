"""A simulated AT-iShare vendor: a real HTTP server with a ledger and injectable faults.

- `faults`: what goes wrong and how often (FaultConfig, roll, scripts, outages)
- `ledger`: what the vendor received and delivered, exactly once per reference, and the
  blind re-purchases (a purchase after an unknown outcome without a status lookup between)
- `handler`: the HTTP API of DESIGN.md and the /_sim/ control routes
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
