"""`fulfillment pause|resume|pauses`: the runtime pause at a terminal.

  fulfillment pause [--network N] --reason TEXT [--actor NAME]   no worker buys (fleet or N)
  fulfillment resume [--network N] [--actor NAME]                buy again; waiting orders are
                                                                 re-enqueued, oldest first
  fulfillment pauses [--json]                                    the pauses in force

Without --network the whole fleet is paused or resumed. A pause holds on every host at the
next claim, without a restart; FULFILLMENT_ENABLED=false (read when a process starts) also
stops the fleet, whatever is paused here. The same PauseService as the admin API and the
dashboard, so the same rules and audit rows (actor `cli:<user>`, or `cli:NAME`).

Exit status: 0 done (pausing a scope already paused keeps its first pause and says so;
resuming one not paused says so); 1 PostgreSQL or Redis failed; 2 bad input (an unknown
network, a blank reason, a missing flag).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from fulfillment.cli.output import cell, json_flag, print_json, print_rows
from fulfillment.domain.constants import KNOWN_NETWORKS
from fulfillment.domain.pause import MAX_ACTOR, MAX_PAUSE_REASON
from fulfillment.runtime import bootstrap
from fulfillment.services.pauses import PauseService
from fulfillment.telemetry.logs import duration


def add_commands(sub: Any) -> None:
    """The three commands, on the admin CLI's subparsers (fulfillment/cli/admin.py runs them
    with the same error handling and exit codes as every admin command)."""
    p = sub.add_parser("pause", help="stop buying for the whole fleet or one network, now")
    _network(p, "the network to pause (default: the whole fleet)")
    p.add_argument(
        "--reason", required=True, type=_reason, help="why (shown with the pause, audited)"
    )
    _actor_flag(p)
    json_flag(p)
    p.set_defaults(func=cmd_pause)

    p = sub.add_parser("resume", help="buy again; waiting orders are re-enqueued, oldest first")
    _network(p, "the network to resume (default: the whole fleet)")
    _actor_flag(p)
    json_flag(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("pauses", help="the pauses in force")
    json_flag(p)
    p.set_defaults(func=cmd_pauses)


def _network(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--network", choices=sorted(KNOWN_NETWORKS), default=None, help=text)


def _actor_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--actor",
        type=_name,
        default=None,
        metavar="NAME",
        help="who acts, for the audit (default: $USER)",
    )


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("say why: it is shown with the pause and audited")
    return text.strip()[:MAX_PAUSE_REASON]


def _name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a name for the audit trail")
    return text.strip()[:MAX_ACTOR]


def _actor(name: str | None) -> str:
    """`cli:<name>`, as the other admin commands name their actor (cli:$USER by default)."""
    who = name or os.environ.get("USER") or "unknown"
    return who if who.startswith("cli:") else f"cli:{who}"


def _service() -> PauseService:
    service: PauseService = bootstrap.pause_service()
    return service


# -- the commands ------------------------------------------------------------------------


def cmd_pause(args: argparse.Namespace) -> int:
    view = _service().pause(network=args.network, reason=args.reason, actor=_actor(args.actor))
    if args.json:
        print_json(view.as_dict())
        return 0
    print(view.message)
    print(f"  paused by {view.paused_by} at {cell(view.paused_at)}: {view.reason}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    result = _service().resume(network=args.network, actor=_actor(args.actor))
    if args.json:
        print_json(result.as_dict())
        return 0
    print(result.message)
    return 0


def cmd_pauses(args: argparse.Namespace) -> int:
    pauses = _service().list()
    if args.json:
        print_json({"paused": bool(pauses), "pauses": [p.as_dict() for p in pauses]})
        return 0
    print_rows(
        ["scope", "paused since", "for", "by", "reason"],
        [[p.label, p.paused_at, duration(p.age_s), p.paused_by, p.reason] for p in pauses],
        "not paused: the fleet buys for every network",
    )
    if not bootstrap.settings().fulfillment_enabled:
        print(
            "note: FULFILLMENT_ENABLED=false here: processes started with it buy nothing, "
            "whatever is paused"
        )
    return 0
