"""`fulfillment orders|status|retry|dlq|sms|events|export|stats`: the admin surface at a
terminal.

`fulfillment status ORDER_ID` is `fulfillment orders show ORDER_ID` under a shorter name.

The customer's SMS and the platform's outcome events that failed are listed with
`sms failed` and `events failed`, and sent again with `sms retry ID...` and
`events resend ID...`, each with --reason.

An order whose vendor outcome stayed unknown (status outcome_unknown) is decided with
`orders recheck`, `orders mark-delivered` or `orders mark-not-delivered`, each with --reason.

The same AdminService as the web process, so the same rules and the same audit rows; tables
for people, `--json` for scripts. Phones are masked in every output.

Exit status: 0 done; 1 an action was refused, or PostgreSQL / Redis failed; 2 bad input
(malformed id, unknown filter, missing flag); 3 an order or message that does not exist.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from db.admin_store import VIEW_FILTERS
from fulfillment.cli import pause
from fulfillment.cli.admin_commands import (
    cmd_decide,
    cmd_dlq_delete,
    cmd_dlq_dismiss,
    cmd_dlq_list,
    cmd_dlq_requeue,
    cmd_events_failed,
    cmd_events_resend,
    cmd_export,
    cmd_orders_list,
    cmd_orders_show,
    cmd_retry,
    cmd_sms_failed,
    cmd_sms_retry,
    cmd_stats,
)
from fulfillment.cli.output import fail, json_flag
from fulfillment.domain.constants import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_USAGE, KNOWN_NETWORKS
from fulfillment.domain.errors import (
    FulfillmentError,
    InvalidOrder,
    MalformedMessage,
    OrderNotFound,
)
from fulfillment.runtime import bootstrap
from fulfillment.services.admin import (
    MAX_PAGE,
    MAX_REASON,
    MAX_ROW_ID,
    MAX_TRANSACTION_ID,
    Decision,
    search_key,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one admin subcommand; argv starts with its name (`orders`, `retry`, ...)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        result: int = args.func(args)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except (InvalidOrder, MalformedMessage) as exc:
        return fail(str(exc), EXIT_USAGE)
    except OrderNotFound as exc:
        return fail(str(exc), EXIT_NOT_FOUND)
    except FulfillmentError as exc:  # StoreError, BrokerUnavailable, ConfigurationError, ...
        return fail(f"{exc} ({exc.code})", EXIT_REFUSED)
    except RuntimeError as exc:  # no server configured and no embedded one either
        return fail(str(exc), EXIT_REFUSED)
    except BrokenPipeError:  # `... | head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit flush
        return EXIT_REFUSED
    finally:
        bootstrap.reset()
    return result


# -- arguments ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # The module docstring is the description; the commands live in admin_commands.py, their
    # printing in output.py: this module holds the arguments and the dispatch.
    parser = argparse.ArgumentParser(
        prog="fulfillment", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _orders_and_retry(sub)
    _show_args(sub.add_parser("status", help="the same as `orders show`"))
    _dlq(sub)
    _outbox(sub)

    p = sub.add_parser("export", help="CSV of every matching order, streamed")
    _filters(p, status_default=None)
    p.add_argument("--out", required=True, metavar="FILE", help="a file, or - for stdout")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", help="counts per status, success rate, median time to fulfil")
    p.add_argument("--network", choices=sorted(KNOWN_NETWORKS), help="one network's only")
    json_flag(p)
    p.set_defaults(func=cmd_stats)
    pause.add_commands(sub)
    return parser


def _orders_and_retry(sub: Any) -> None:
    orders = sub.add_parser("orders", help="list and show orders").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = orders.add_parser("list", help="orders newest first, one page at a time")
    _filters(p, status_default="all")
    _paging(p)
    p.set_defaults(func=cmd_orders_list)
    _show_args(
        orders.add_parser("show", help="an order with every attempt, audit row and notification")
    )
    for decision, help_text in (
        (
            Decision.RECHECK,
            "outcome unknown: ask the vendor again (it is looked up before any purchase)",
        ),
        (Decision.MARK_DELIVERED, "outcome unknown: the vendor did deliver (checked by hand)"),
        (Decision.MARK_NOT_DELIVERED, "outcome unknown: nothing was delivered (checked by hand)"),
    ):
        p = orders.add_parser(decision.slug, help=help_text)
        p.add_argument("order_id", metavar="ORDER_ID")
        if decision is Decision.MARK_DELIVERED:
            p.add_argument(
                "--transaction-id",
                type=_transaction_id,
                help="the vendor's transaction id, when its dashboard shows one",
            )
        _reason_flag(p)
        json_flag(p)
        p.set_defaults(func=cmd_decide, decision=decision, transaction_id=None)

    p = sub.add_parser("retry", help="one more attempt for failed or dead-lettered orders")
    p.add_argument("order_ids", nargs="*", metavar="ORDER_ID")
    p.add_argument("--all-failed", action="store_true", help="every failed and dead-lettered order")
    p.add_argument("--network", choices=sorted(KNOWN_NETWORKS), help="with --all-failed")
    p.add_argument("--since", type=_since, help="with --all-failed: created at or after (UTC)")
    _reason_flag(p)
    json_flag(p)
    p.set_defaults(func=cmd_retry, parser=p)


def _show_args(p: argparse.ArgumentParser) -> None:
    """`orders show` and its alias `status`: one order, its attempts, audit and notifications."""
    p.add_argument("order_id", metavar="ORDER_ID")
    json_flag(p)
    p.set_defaults(func=cmd_orders_show)


def _dlq(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="dead letters: list / requeue / dismiss / delete")
    dsub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = dsub.add_parser("list", help="open dead letters (or, --messages, Dramatiq's raw DLQ)")
    p.add_argument("--messages", action="store_true", help="Dramatiq's dead-letter messages")
    _paging(p)
    p.set_defaults(func=cmd_dlq_list)
    p = dsub.add_parser("requeue", help="retry dead-lettered orders (or resend raw messages)")
    p.add_argument("ids", nargs="*", metavar="ID", help="order ids, or message ids")
    p.add_argument("--all", action="store_true", help="every open dead letter (or message)")
    p.add_argument("--messages", action="store_true", help="the ids are raw DLQ message ids")
    p.add_argument("--phone", type=_phone, help="with --all: one customer's dead letters")
    p.add_argument("--network", choices=sorted(KNOWN_NETWORKS), help="with --all")
    _reason_flag(p)
    json_flag(p)
    p.set_defaults(func=cmd_dlq_requeue, parser=p)
    p = dsub.add_parser("dismiss", help="resolved by hand (refunded...): off the list")
    p.add_argument("ids", nargs="+", metavar="ORDER_ID")
    _reason_flag(p)
    json_flag(p)
    p.set_defaults(func=cmd_dlq_dismiss)
    p = dsub.add_parser("delete", help="drop raw DLQ messages")
    p.add_argument("ids", nargs="*", metavar="MESSAGE_ID")
    p.add_argument("--messages", action="store_true", required=True, help="(required)")
    p.add_argument("--all", action="store_true", help="every raw DLQ message")
    _reason_flag(p)
    json_flag(p)
    p.set_defaults(func=cmd_dlq_delete, parser=p)


def _outbox(sub: Any) -> None:
    """`sms failed|retry` and `events failed|resend`: the outboxes' failures."""
    for box, what, noun, verb, list_func, act_func in (
        ("sms", "the customer's SMS", "SMS", "retry", cmd_sms_failed, cmd_sms_retry),
        (
            "events",
            "the platform's outcome events",
            "event",
            "resend",
            cmd_events_failed,
            cmd_events_resend,
        ),
    ):
        group = sub.add_parser(box, help=f"{what}: failed / {verb}")
        actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
        p = actions.add_parser("failed", help=f"each failed {noun}, newest first")
        p.add_argument("--limit", type=_limit, default=50, help=f"rows (1-{MAX_PAGE})")
        json_flag(p)
        p.set_defaults(func=list_func)
        plural = noun if noun == "SMS" else f"{noun}s"
        p = actions.add_parser(verb, help=f"send failed {plural} again (others are refused)")
        p.add_argument("ids", nargs="+", type=_row_id, metavar="ID", help=f"{noun} ids")
        _reason_flag(p)
        json_flag(p)
        p.set_defaults(func=act_func)


def _filters(p: argparse.ArgumentParser, *, status_default: str | None) -> None:
    p.add_argument(
        "--status",
        choices=list(VIEW_FILTERS),
        default=status_default,
        required=status_default is None,
    )
    p.add_argument("--phone", type=_phone, help="typed any way: 024..., +233..., 233...")
    p.add_argument("--network", choices=sorted(KNOWN_NETWORKS))
    p.add_argument("--since", type=_since, help="created at or after, ISO date or datetime (UTC)")


def _paging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=_limit, default=50, help=f"rows per page (1-{MAX_PAGE})")
    p.add_argument("--cursor", help="the next-page cursor a previous page printed")
    json_flag(p)


def _reason_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True, type=_reason, help="why (kept in the audit)")


def _since(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or datetime: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_PAGE}, not {text!r}")
    return int(text)


def _row_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"an id is a whole number from 1, not {text!r}")
    return int(text)


def _phone(text: str) -> str:
    if search_key(text) is None:
        raise argparse.ArgumentTypeError(f"no digits in {text!r}; type a phone number")
    return text


def _transaction_id(text: str) -> str:
    if not text.strip() or len(text.strip()) > MAX_TRANSACTION_ID:
        raise argparse.ArgumentTypeError(f"1 to {MAX_TRANSACTION_ID} characters")
    return text.strip()


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("say why: it goes into the audit trail")
    return text.strip()[:MAX_REASON]
