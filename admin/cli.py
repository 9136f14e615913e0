"""`fulfillment orders|retry|dlq|export|stats`: the admin surface at a terminal.

The same AdminService as the web process, so the same rules and the same audit rows; tables
for people, `--json` for scripts. Phones are masked in every output.

Exit status: 0 done; 1 an action was refused, or PostgreSQL / Redis failed; 2 bad input
(malformed id, unknown filter, missing flag); 3 an order or message that does not exist.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from uuid import UUID

from admin.service import MAX_PAGE, MAX_REASON, search_key
from db.admin import VIEW_FILTERS
from fulfillment import bootstrap
from fulfillment.cli import EXIT_NOT_FOUND, EXIT_USAGE, _table
from fulfillment.constants import KNOWN_NETWORKS
from fulfillment.domain.order import parse_order_id
from fulfillment.domain.phone import mask_phone, mask_phones_in_text
from fulfillment.errors import FulfillmentError, InvalidOrder, MalformedMessage, OrderNotFound

if TYPE_CHECKING:
    from admin.dlq import DeadMessageQueue
    from admin.service import AdminService

EXIT_REFUSED = 1
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
CELL_CHARS = 40
BODY_CHARS = 60


def main(argv: Sequence[str] | None = None) -> int:
    """Run one admin subcommand; argv starts with its name (`orders`, `retry`, ...)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        result: int = args.func(args)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except (InvalidOrder, MalformedMessage) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OrderNotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    except FulfillmentError as exc:  # StoreError, PublishError, ConfigurationError, ...
        return _fail(f"{exc} ({exc.code})", EXIT_REFUSED)
    except RuntimeError as exc:  # no server configured and no embedded one either
        return _fail(str(exc), EXIT_REFUSED)
    except BrokenPipeError:  # `... | head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit flush
        return EXIT_REFUSED
    finally:
        bootstrap.reset()
    return result


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# -- arguments ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fulfillment", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _orders_and_retry(sub)
    _dlq(sub)

    p = sub.add_parser("export", help="CSV of every matching order, streamed")
    _filters(p, status_default=None)
    p.add_argument("--out", required=True, metavar="FILE", help="a file, or - for stdout")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", help="counts per status, success rate, median time to fulfil")
    _json_flag(p)
    p.set_defaults(func=cmd_stats)
    return parser


def _orders_and_retry(sub: Any) -> None:
    orders = sub.add_parser("orders", help="list and show orders").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = orders.add_parser("list", help="orders newest first, one page at a time")
    _filters(p, status_default="all")
    _paging(p)
    p.set_defaults(func=cmd_orders_list)
    p = orders.add_parser("show", help="an order with every attempt, audit row and notification")
    p.add_argument("order_id", metavar="ORDER_ID")
    _json_flag(p)
    p.set_defaults(func=cmd_orders_show)

    p = sub.add_parser("retry", help="one more attempt for failed or dead-lettered orders")
    p.add_argument("order_ids", nargs="*", metavar="ORDER_ID")
    p.add_argument("--all-failed", action="store_true", help="every failed and dead-lettered order")
    p.add_argument("--network", choices=sorted(KNOWN_NETWORKS), help="with --all-failed")
    p.add_argument("--since", type=_since, help="with --all-failed: created at or after (UTC)")
    _reason_flag(p)
    _json_flag(p)
    p.set_defaults(func=cmd_retry, parser=p)


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
    _json_flag(p)
    p.set_defaults(func=cmd_dlq_requeue, parser=p)
    p = dsub.add_parser("dismiss", help="resolved by hand (refunded...): off the list")
    p.add_argument("ids", nargs="+", metavar="ORDER_ID")
    _reason_flag(p)
    _json_flag(p)
    p.set_defaults(func=cmd_dlq_dismiss)
    p = dsub.add_parser("delete", help="drop raw DLQ messages")
    p.add_argument("ids", nargs="*", metavar="MESSAGE_ID")
    p.add_argument("--messages", action="store_true", required=True, help="(required)")
    p.add_argument("--all", action="store_true", help="every raw DLQ message")
    _reason_flag(p)
    _json_flag(p)
    p.set_defaults(func=cmd_dlq_delete, parser=p)


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
    _json_flag(p)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


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


def _phone(text: str) -> str:
    if search_key(text) is None:
        raise argparse.ArgumentTypeError(f"no digits in {text!r}; type a phone number")
    return text


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("say why: it goes into the audit trail")
    return text.strip()[:MAX_REASON]


def _order_ids(values: Iterable[str]) -> list[str]:
    """Canonical ids, or MalformedMessage (exit 2) before anything is done."""
    return list(dict.fromkeys(parse_order_id(v) for v in values))


def _actor() -> str:
    return f"cli:{os.environ.get('USER') or 'unknown'}"


def _service() -> AdminService:
    service: AdminService = bootstrap.admin_service()
    return service


# -- reading -----------------------------------------------------------------------------


def cmd_orders_list(args: argparse.Namespace) -> int:
    service = _service()
    flt = service.make_filter(
        view=args.status, phone=args.phone, network=args.network, since=args.since
    )
    page = service.list(flt, cursor=args.cursor, limit=args.limit)
    if args.json:
        _print_json({"orders": page.rows, "nextCursor": page.next_cursor})
        return 0
    cols = ["id", "created", "phone", "status", "attempts", "last error", "next retry", "reason"]
    keys = [
        "id",
        "created_at",
        "phone",
        "status",
        "attempts",
        "last_error_code",
        "next_retry_at",
        "dead_letter_reason",
    ]
    _print_rows(cols, [[r.get(k) for k in keys] for r in page.rows], "no orders match")
    _print_cursor(page.next_cursor)
    return 0


def cmd_orders_show(args: argparse.Namespace) -> int:
    detail = _service().detail(parse_order_id(args.order_id))
    detail["attempts"] = [_redacted(a) for a in detail["attempts"]]
    detail["notifications"] = [_redacted(n) for n in detail["notifications"]]
    if args.json:
        _print_json(detail)
        return 0
    order = detail["order"]
    print(f"order {order['id']}")
    for key, value in order.items():
        if key != "id":
            print(f"  {key:>22}: {_cell(value, 200)}")
    attempts = [
        [
            a["created_at"],
            a["action"],
            f"{a['attempt_number']}/{a['max_attempts']}",
            a["status"],
            a["http_status"],
            a["error_code"],
            a["latency_ms"],
            a["retry_after"],
            None if a["api_response"] is None else json.dumps(a["api_response"]),
        ]
        for a in detail["attempts"]
    ]
    print(f"\nattempts ({len(attempts)})")
    cols = ["at", "action", "attempt", "status", "http", "error", "ms", "retry after", "vendor"]
    _print_rows(cols, attempts, "none", width=BODY_CHARS)
    audit = [[r["created_at"], r["actor"], r["action"], r["reason"]] for r in detail["audit"]]
    print(f"\naudit ({len(audit)})")
    _print_rows(["at", "actor", "action", "reason"], audit, "none")
    notes = [
        [n["created_at"], n["kind"], n["webhook_state"], n["message"]]
        for n in detail["notifications"]
    ]
    print(f"\nnotifications ({len(notes)})")
    _print_rows(["at", "kind", "webhook", "message"], notes, "none", width=BODY_CHARS)
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    if args.messages:
        return _list_messages(bootstrap.dead_message_queue(), args)
    service = _service()
    page = service.list(
        service.make_filter(view="open_dead_letters"), cursor=args.cursor, limit=args.limit
    )
    for row in page.rows:
        notes = [n for n in service.admin.notifications(row["id"]) if n["kind"] == "dead_letter"]
        row["notification"] = notes[-1]["webhook_state"] if notes else None
    if args.json:
        _print_json({"orders": page.rows, "nextCursor": page.next_cursor})
        return 0
    cols = ["id", "dead-lettered", "phone", "attempts", "last error", "reason", "notified"]
    keys = [
        "id",
        "dead_lettered_at",
        "phone",
        "attempts",
        "last_error_code",
        "dead_letter_reason",
        "notification",
    ]
    _print_rows(cols, [[r.get(k) for k in keys] for r in page.rows], "no open dead letters")
    _print_cursor(page.next_cursor)
    return 0


def _list_messages(dlq: DeadMessageQueue, args: argparse.Namespace) -> int:
    count, messages = dlq.count(), dlq.list(limit=args.limit)
    if args.json:
        _print_json({"count": count, "messages": [m.as_dict() for m in messages]})
        return 0
    print(f"{count} message(s) in Dramatiq's dead-letter queue of {dlq.queue!r}")
    rows = [[m.id, m.failed_at, m.actor, json.dumps(m.args), m.body] for m in messages]
    if rows:
        _print_rows(["message id", "failed", "actor", "args", "body"], rows, "", width=BODY_CHARS)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    service = _service()
    flt = service.make_filter(
        view=args.status, phone=args.phone, network=args.network, since=args.since
    )
    rows = service.export_rows(flt)
    if args.out == "-":
        count = _write_csv(rows, sys.stdout)
    else:
        path = Path(args.out)
        part = path.with_name(path.name + ".part")  # no half-written FILE if anything fails
        try:
            with part.open("w", newline="", encoding="utf-8") as out:
                count = _write_csv(rows, out)
            part.replace(path)
        except OSError as exc:
            return _fail(f"cannot write {args.out}: {exc.strerror or exc}", EXIT_REFUSED)
        finally:
            part.unlink(missing_ok=True)
    print(f"exported {count} order(s) to {args.out}", file=sys.stderr)
    return 0


def _write_csv(rows: Iterable[list[str]], out: IO[str]) -> int:
    """Row by row, as the database cursor yields them; the count excludes the header."""
    writer = csv.writer(out)
    count = -1
    for row in rows:
        writer.writerow(row)
        count += 1
    out.flush()
    return max(count, 0)


def cmd_stats(args: argparse.Namespace) -> int:
    stats = _service().stats()
    if args.json:
        _print_json(stats)
        return 0
    shown = dict(stats)
    rate, median = shown.pop("success_rate"), shown.pop("median_fulfil_s_24h")
    shown["success rate"] = None if rate is None else f"{rate:.1%}"
    shown["median to fulfil (24 h)"] = None if median is None else f"{median:.1f} s"
    print(_table(["", "value"], [[k.replace("_", " "), _cell(v)] for k, v in shown.items()]))
    return 0


# -- acting ------------------------------------------------------------------------------


def cmd_retry(args: argparse.Namespace) -> int:
    service = _service()
    if args.all_failed:
        if args.order_ids:
            args.parser.error("give ORDER_IDs or --all-failed, not both")
        flt = service.make_filter(view="all", network=args.network, since=args.since)
        results = service.retry_filtered(flt, actor=_actor(), reason=args.reason)
    else:
        if not args.order_ids:
            args.parser.error("give one or more ORDER_IDs, or --all-failed")
        if args.network or args.since:
            args.parser.error("--network and --since select orders for --all-failed")
        results = service.retry(_order_ids(args.order_ids), actor=_actor(), reason=args.reason)
    return _report([r.as_dict() for r in results], args.json)


def cmd_dlq_requeue(args: argparse.Namespace) -> int:
    if args.messages:
        if args.phone or args.network:
            args.parser.error("--phone and --network select orders, not raw messages")
        return _raw_messages(args, "requeue")
    service = _service()
    if args.all:
        if args.ids:
            args.parser.error("give ORDER_IDs or --all, not both")
        flt = service.make_filter(view="open_dead_letters", phone=args.phone, network=args.network)
        results = service.retry_filtered(flt, actor=_actor(), reason=args.reason)
    else:
        if not args.ids:
            args.parser.error("give one or more ORDER_IDs, or --all")
        if args.phone or args.network:
            args.parser.error("--phone and --network select orders for --all")
        results = service.retry(_order_ids(args.ids), actor=_actor(), reason=args.reason)
    return _report([r.as_dict() for r in results], args.json)


def cmd_dlq_dismiss(args: argparse.Namespace) -> int:
    results = _service().dismiss(_order_ids(args.ids), actor=_actor(), reason=args.reason)
    return _report([r.as_dict() for r in results], args.json)


def cmd_dlq_delete(args: argparse.Namespace) -> int:
    return _raw_messages(args, "delete")


def _raw_messages(args: argparse.Namespace, action: str) -> int:
    """Requeue or delete raw DLQ messages, one audit row each (linked to the order it names)."""
    if args.all == bool(args.ids):
        args.parser.error("give one or more message ids, or --all, not both")
    dlq: DeadMessageQueue = bootstrap.dead_message_queue()
    service = _service()
    known = {m.id: m for m in dlq.list(limit=max(dlq.count(), 1))}
    results = []
    for message_id in list(known) if args.all else list(dict.fromkeys(args.ids)):
        message = known.get(message_id)
        done = 0
        if message is not None:
            done = dlq.requeue([message_id]) if action == "requeue" else dlq.delete([message_id])
        if message is None or not done:
            results.append(_outcome(message_id, False, "MESSAGE_NOT_FOUND", "not in the DLQ"))
            continue
        service.admin.record(
            actor=_actor(),
            action=f"dlq_{action}",
            order_id=_order_named(message.args),
            reason=args.reason,
            details={
                "message_id": message_id,
                "queue": message.queue,
                "actor_name": message.actor,
                "failed_at": message.failed_at,
            },
        )
        text = "sent again on its queue" if action == "requeue" else "deleted from the DLQ"
        results.append(_outcome(message_id, True, f"{action.upper()}D", text))
    return _report(results, args.json)


def _outcome(message_id: str, ok: bool, code: str, message: str) -> dict[str, Any]:
    return {"messageId": message_id, "ok": ok, "code": code, "message": message}


def _order_named(args: object) -> str | None:
    """The order id a fulfill_order message carries, when it carries a well-formed one."""
    if isinstance(args, list) and len(args) == 1:
        try:
            return parse_order_id(args[0])
        except MalformedMessage:
            return None
    return None


def _report(results: list[dict[str, Any]], as_json: bool) -> int:
    """A line per result and a summary; 0 all done, 3 something unknown, 1 any refusal."""
    ok = sum(1 for r in results if r["ok"])
    if as_json:
        _print_json({"results": results, "ok": ok, "refused": len(results) - ok})
    else:
        for r in results:
            subject = r.get("orderId") or r.get("messageId")
            state = "ok" if r["ok"] else "refused"
            print(f"{state:<8} {subject}  {r['code']}  {r['message']}")
        print(f"{ok} done, {len(results) - ok} refused" if results else "nothing matched")
    if any(not r["ok"] and r["code"].endswith("NOT_FOUND") for r in results):
        return EXIT_NOT_FOUND
    return 0 if ok == len(results) else EXIT_REFUSED


# -- output ------------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _print_json(data: object) -> None:
    print(json.dumps(data, default=_json_value))


def _redacted(value: Any, key: str = "") -> Any:
    """A log or notification row with every phone number masked, nested ones included."""
    if isinstance(value, dict):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, str):
        return mask_phone(value) if "phone" in key.lower() else mask_phones_in_text(value)
    return value


def _cell(value: object, width: int = CELL_CHARS) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and _ISO_UTC.fullmatch(value):  # view rows carry ISO strings
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):  # to the second, for people
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    text = str(value)
    text = " ".join(text.split())  # one line per row, whatever an error message holds
    return text if len(text) <= width else text[: width - 3] + "..."


def _print_rows(
    columns: list[str], rows: list[list[Any]], empty: str, *, width: int = CELL_CHARS
) -> None:
    if not rows:
        print(empty)
        return
    print(_table(columns, [[_cell(v, width) for v in r] for r in rows]))


def _print_cursor(cursor: str | None) -> None:
    print(f"next page: --cursor {cursor}" if cursor else "(last page)")
