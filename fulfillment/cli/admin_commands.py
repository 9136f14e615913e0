"""The admin CLI's commands (`orders list|show|recheck|mark-delivered|mark-not-delivered`,
`status` (= `orders show`), `retry`, `dlq ...`, `sms failed|retry`, `events failed|resend`,
`export`, `stats`).

One function per subcommand, each handed the parsed arguments by fulfillment.cli.admin and
returning the exit status: it reads or acts through the same AdminService as the web process
(so the same rules and audit rows, actor `cli:<user>`), or Dramatiq's raw dead-letter queue,
and hands what it got to fulfillment.cli.output to print. Usage errors that argparse cannot
see (both ids and --all, say) go through the subcommand's parser; a refusal exits 1,
something unknown 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fulfillment.cli.output import (
    BODY_CHARS,
    cell,
    fail,
    print_cursor,
    print_json,
    print_rows,
    redacted,
    table,
    write_csv,
)
from fulfillment.domain.constants import EXIT_NOT_FOUND, EXIT_REFUSED
from fulfillment.domain.errors import ActionRefused, MalformedMessage, OrderNotFound
from fulfillment.domain.order import parse_order_id
from fulfillment.runtime import bootstrap

if TYPE_CHECKING:
    from fulfillment.messaging.dlq import DeadMessageQueue
    from fulfillment.services.admin import AdminService


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
        print_json({"orders": page.rows, "nextCursor": page.next_cursor})
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
    print_rows(cols, [[r.get(k) for k in keys] for r in page.rows], "no orders match")
    print_cursor(page.next_cursor)
    return 0


def cmd_orders_show(args: argparse.Namespace) -> int:
    detail = _service().detail(parse_order_id(args.order_id))
    detail["attempts"] = [redacted(a) for a in detail["attempts"]]
    detail["notifications"] = [redacted(n) for n in detail["notifications"]]
    if args.json:
        print_json(detail)
        return 0
    order = detail["order"]
    print(f"order {order['id']}")
    for key, value in order.items():
        if key != "id":
            print(f"  {key:>22}: {cell(value, 200)}")
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
    print_rows(cols, attempts, "none", width=BODY_CHARS)
    audit = [[r["created_at"], r["actor"], r["action"], r["reason"]] for r in detail["audit"]]
    print(f"\naudit ({len(audit)})")
    print_rows(["at", "actor", "action", "reason"], audit, "none")
    notes = [
        [n["created_at"], n["kind"], n["webhook_state"], n["message"]]
        for n in detail["notifications"]
    ]
    print(f"\nnotifications ({len(notes)})")
    print_rows(["at", "kind", "webhook", "message"], notes, "none", width=BODY_CHARS)
    sms = [
        [
            m["id"],
            m["created_at"],
            m["kind"],
            m["status"],
            m["provider_status"],
            m["attempts"],
            m["last_error"] or m["skip_reason"],
            m["content"],
        ]
        for m in detail["sms"]
    ]
    print(f"\nsms ({len(sms)})")
    cols = ["id", "at", "kind", "status", "provider", "tries", "error / skipped", "text"]
    print_rows(cols, sms, "none", width=BODY_CHARS)
    events = [
        [
            e["id"],
            e["created_at"],
            e["type"],
            e["status"],
            e["attempts"],
            e["last_http_status"],
            e["last_error"],
            e["event_id"],
        ]
        for e in detail["events"]
    ]
    print(f"\nevents ({len(events)})")
    cols = ["id", "at", "type", "status", "tries", "http", "error", "event id"]
    print_rows(cols, events, "none", width=BODY_CHARS)
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
        print_json({"orders": page.rows, "nextCursor": page.next_cursor})
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
    print_rows(cols, [[r.get(k) for k in keys] for r in page.rows], "no open dead letters")
    print_cursor(page.next_cursor)
    return 0


def _list_messages(dlq: DeadMessageQueue, args: argparse.Namespace) -> int:
    count, messages = dlq.count(), dlq.list(limit=args.limit)
    if args.json:
        print_json({"count": count, "messages": [m.as_dict() for m in messages]})
        return 0
    print(f"{count} message(s) in Dramatiq's dead-letter queue of {dlq.queue!r}")
    rows = [[m.id, m.failed_at, m.actor, json.dumps(m.args), m.body] for m in messages]
    if rows:
        print_rows(["message id", "failed", "actor", "args", "body"], rows, "", width=BODY_CHARS)
    return 0


def cmd_sms_failed(args: argparse.Namespace) -> int:
    service = _service()
    count, rows = service.outbox_counts()["sms"].get("failed", 0), service.failed_sms(args.limit)
    if args.json:
        print_json({"count": count, "sms": rows})
        return 0
    print(f"{count} failed SMS" + (f", the newest {len(rows)} shown" if count > len(rows) else ""))
    keys = ["id", "order_id", "kind", "generation", "provider_status", "attempts", "last_error"]
    cols = ["id", "order", "kind", "gen", "provider", "tries", "last error", "updated"]
    table_rows = [[r[k] for k in keys] + [r["updated_at"]] for r in rows]
    if table_rows:
        print_rows(cols, table_rows, "", width=BODY_CHARS)
    return 0


def cmd_events_failed(args: argparse.Namespace) -> int:
    service = _service()
    count = service.outbox_counts()["event"].get("failed", 0)
    rows = service.failed_events(args.limit)
    if args.json:
        print_json({"count": count, "events": rows})
        return 0
    shown = f", the newest {len(rows)} shown" if count > len(rows) else ""
    print(f"{count} failed event(s){shown}")
    keys = ["id", "order_id", "type", "generation", "attempts", "last_http_status", "last_error"]
    cols = ["id", "order", "type", "gen", "tries", "http", "last error", "updated"]
    table_rows = [[r[k] for k in keys] + [r["updated_at"]] for r in rows]
    if table_rows:
        print_rows(cols, table_rows, "", width=BODY_CHARS)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    service = _service()
    flt = service.make_filter(
        view=args.status, phone=args.phone, network=args.network, since=args.since
    )
    rows = service.export_rows(flt)
    if args.out == "-":
        count = write_csv(rows, sys.stdout)
    else:
        path = Path(args.out)
        part = path.with_name(path.name + ".part")  # no half-written FILE if anything fails
        try:
            with part.open("w", newline="", encoding="utf-8") as out:
                count = write_csv(rows, out)
            part.replace(path)
        except OSError as exc:
            return fail(f"cannot write {args.out}: {exc.strerror or exc}", EXIT_REFUSED)
        finally:
            part.unlink(missing_ok=True)
    print(f"exported {count} order(s) to {args.out}", file=sys.stderr)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    stats = _service().stats(args.network)
    if args.json:
        print_json(stats)
        return 0
    shown = dict(stats)
    rate, median = shown.pop("success_rate"), shown.pop("median_fulfil_s_24h")
    shown["success rate"] = None if rate is None else f"{rate:.1%}"
    shown["median to fulfil (24 h)"] = None if median is None else f"{median:.1f} s"
    print(table(["", "value"], [[k.replace("_", " "), cell(v)] for k, v in shown.items()]))
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


def cmd_decide(args: argparse.Namespace) -> int:
    """recheck / mark-delivered / mark-not-delivered one outcome-unknown order."""
    service, oid, actor = _service(), parse_order_id(args.order_id), _actor()
    try:
        result = service.decide(
            oid,
            args.decision,
            actor=actor,
            reason=args.reason,
            transaction_id=args.transaction_id,
        )
    except (ActionRefused, OrderNotFound) as exc:
        refused = {"orderId": oid, "ok": False, "code": exc.code, "message": str(exc)}
        return _report([refused], args.json)
    return _report([result.as_dict()], args.json)


def cmd_sms_retry(args: argparse.Namespace) -> int:
    results = _service().retry_sms(args.ids, actor=_actor(), reason=args.reason)
    return _report([r.as_dict() for r in results], args.json)


def cmd_events_resend(args: argparse.Namespace) -> int:
    results = _service().resend_events(args.ids, actor=_actor(), reason=args.reason)
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
        print_json({"results": results, "ok": ok, "refused": len(results) - ok})
    else:
        for r in results:
            subject = r.get("orderId") or r.get("messageId")
            if "id" in r:  # an SMS or an event
                subject = f"{r['id']} (order {r['orderId'] or '-'})"
            state = "ok" if r["ok"] else "refused"
            print(f"{state:<8} {subject}  {r['code']}  {r['message']}")
        print(f"{ok} done, {len(results) - ok} refused" if results else "nothing matched")
    if any(not r["ok"] and r["code"].endswith("NOT_FOUND") for r in results):
        return EXIT_NOT_FOUND
    return 0 if ok == len(results) else EXIT_REFUSED
