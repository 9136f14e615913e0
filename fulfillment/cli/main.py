"""`fulfillment` command: migrate, sim, demo, reconcile, status, publish, pause, resume."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from fulfillment.domain.constants import EXIT_REFUSED, EXIT_UNREADABLE, EXIT_USAGE, KNOWN_NETWORKS
from fulfillment.domain.errors import (
    FulfillmentError,
    InvalidOrder,
    MalformedMessage,
    SchemaDrift,
    StoreError,
    UnknownSchemaVersion,
)
from fulfillment.runtime import bootstrap


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sim"]:  # the simulator owns its flags
        from fulfillment.dev.simulator.server import main as sim_main

        return sim_main(args_list[1:])
    if args_list[:1] == ["web"]:
        from fulfillment.web.server import main as web_main

        return web_main(args_list[1:])
    if args_list[:1] in (
        ["orders"], ["status"], ["retry"], ["dlq"], ["export"], ["stats"],
        ["pause"], ["resume"], ["pauses"], ["sms"], ["events"],
    ):  # fmt: skip
        from fulfillment.cli.admin import main as admin_main

        return admin_main(args_list)
    if args_list[:1] == ["demo"]:
        from fulfillment.dev.demo import main as demo_main

        return demo_main(args_list[1:])
    if args_list[:1] == ["dev"]:
        from fulfillment.dev.launcher import main as dev_main

        return dev_main(args_list[1:])
    parser = _parser()
    args = parser.parse_args(args_list)
    try:
        result: int = args.func(args)
    except (InvalidOrder, MalformedMessage, UnknownSchemaVersion) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FulfillmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RuntimeError as exc:  # configuration missing (vendor, embedded servers)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fulfillment", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "migrate",
        help="move the database to the code's schema version (or --to an earlier one)",
        description="Apply the pending steps of db/migrations/ in order, each in its own "
        "transaction, under a lock that makes a second migrate wait. --status exits 0 at the "
        "code's version, 1 with steps pending, 2 on drift, 4 when it cannot tell.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="list applied and pending steps")
    mode.add_argument(
        "--to", metavar="VERSION", help="move to this version (as --status prints it; 0: none)"
    )
    p.add_argument("--yes", action="store_true", help="confirm --to 0 (removing the fleet)")
    p.add_argument(
        "--accept-drift",
        action="store_true",
        help="record the schema as it is now (changed by hand, checked by someone) and go on",
    )
    p.set_defaults(func=cmd_migrate)

    sub.add_parser("sim", help="run the AT-iShare simulator (see `fulfillment sim --help`)")
    sub.add_parser("demo", help="run the whole pipeline end to end (see `fulfillment demo -h`)")
    sub.add_parser("dev", help="development: `dev procfile [--check]`, `dev stop` (servers)")
    sub.add_parser("web", help="serve the admin web process (see `fulfillment web -h`)")
    for name, text in (
        ("orders", "list / show orders"),
        ("status", "an order and every attempt: `orders show` under a shorter name"),
        ("retry", "retry failed orders"),
        ("dlq", "dead letters: list / requeue / dismiss"),
        ("export", "CSV export"),
        ("stats", "fulfillment statistics"),
        ("pause", "pause the whole fleet or one network now (--network, --reason)"),
        ("resume", "resume a pause; waiting orders are re-enqueued, oldest first"),
        ("pauses", "the pauses in force"),
    ):
        sub.add_parser(name, help=f"{text} (see `fulfillment {name} -h`)")

    p = sub.add_parser("reconcile", help="one reconciler pass (or --loop)")
    p.add_argument("--loop", action="store_true", help="keep sweeping every interval")
    p.add_argument("--interval", type=float, default=None, help="seconds between passes")
    p.add_argument("--grace", type=float, default=None, help="override RECONCILE_GRACE_S")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser(
        "health", help="can this host work now? PostgreSQL and its schema, Redis, the vendor (JSON)"
    )
    p.set_defaults(func=cmd_health)

    from fulfillment.cli.check import DESCRIPTION, ROLE_HELP
    from fulfillment.runtime.preflight import ROLES

    p = sub.add_parser(
        "check",
        help="pre-flight before starting or upgrading this host: settings, PostgreSQL and the "
        "schema, Redis, the vendor credentials",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--role", choices=ROLES, default="all", help=ROLE_HELP)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "networks",
        help="the networks the fleet serves (fleet_networks), or `networks disable NETWORK`",
    )
    p.add_argument("action", nargs="?", choices=["list", "disable"], default="list")
    p.add_argument("network", nargs="?", choices=sorted(KNOWN_NETWORKS))
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_networks, parser=p)

    p = sub.add_parser("publish", help="commit a test order and publish it (development)")
    p.add_argument("--phone", required=True)
    p.add_argument("--size-gb", default=None)
    p.add_argument("--package", default=None)
    p.add_argument("--network", default="at-ishare")
    p.set_defaults(func=cmd_publish)
    return parser


def cmd_migrate(args: argparse.Namespace) -> int:
    from db.migrate import load_steps, migrate, parse_version, status

    url = bootstrap.database_url()
    if args.status:
        try:
            where = status(url)
        except StoreError as exc:
            print(f"error: cannot tell the schema version: {exc}", file=sys.stderr)
            return EXIT_UNREADABLE
        print("\n".join(where.lines()))
        return where.exit_code
    steps = load_steps()
    target = None if args.to is None else parse_version(args.to, steps)
    if target == 0 and not args.yes:
        print(
            "error: --to 0 removes the fleet from this database (orders and their history "
            "stay; docs/RUNBOOK.md says what goes): add --yes to mean it",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        migrate(url, to=target, steps=steps, accept_drift=args.accept_drift, say=print)
    except SchemaDrift as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from db.migrate import REQUIRED_VERSION, require_schema

    if target is None or target >= REQUIRED_VERSION:
        require_schema(url)
        # NETWORKS_ENABLED of this deploy is known fleet-wide before any host starts
        bootstrap.record_networks(by=f"migrate@{bootstrap.worker_name()}")
        print(f"networks served: {', '.join(sorted(bootstrap.settings().networks()))} (added)")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from fulfillment.services.reconciler import reconcile_once, run_forever

    s = bootstrap.settings()
    bootstrap.require_schema()  # SchemaTooOld: run `fulfillment migrate` first
    bootstrap.record_networks(by=f"reconciler@{bootstrap.worker_name()}")
    from fulfillment.telemetry import metrics

    metrics.ENABLED.set(1 if s.fulfillment_enabled else 0)
    bootstrap.install_broker()
    deps = bootstrap.fulfil_deps()
    grace = s.reconcile_grace_s if args.grace is None else args.grace

    watches = bootstrap.balance_watches()

    def once() -> Any:
        for watch in watches:
            watch.check_if_due()
        return reconcile_once(
            deps,
            bootstrap.notifier(),
            grace_s=grace,
            outbox=bootstrap.outbox_publisher(),
            outbox_grace_s=s.outbox_grace_s if args.grace is None else args.grace,
        )

    if not args.loop:
        report = once()
        print(
            json.dumps(
                {
                    "found": report.total,
                    "by_reason": report.by_reason,
                    "notifications_resent": report.notifications_resent,
                    "outbox_requeued": report.outbox_requeued,
                }
            )
        )
        return 0
    if os.environ.get("METRICS_PORT"):
        import redis
        from prometheus_client import REGISTRY, start_http_server

        from fulfillment.runtime.metrics_server import DEFAULT_HOST, FleetCollector

        REGISTRY.register(
            FleetCollector(
                bootstrap.store(),
                redis.Redis.from_url(bootstrap.redis_url()),
                s.redis_namespace,
                bootstrap.breakers(),
            )
        )
        start_http_server(
            int(os.environ["METRICS_PORT"]), addr=os.environ.get("METRICS_HOST", DEFAULT_HOST)
        )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_forever(once, interval_s=args.interval or s.reconcile_interval_s, stop=stop)
    return 0


def cmd_health(_: argparse.Namespace) -> int:
    """One JSON object; exit 0 only when PostgreSQL (its schema too), Redis and the vendor
    answer. The checks are `fulfillment check`'s (fulfillment.runtime.preflight)."""
    from fulfillment.cli.check import run_health

    return run_health()


def cmd_check(args: argparse.Namespace) -> int:
    """The pre-flight: one line per finding, then a summary; exit 0 when nothing failed."""
    from fulfillment.cli.check import run_check

    return run_check(args.role)


def cmd_networks(args: argparse.Namespace) -> int:
    """Which networks the fleet serves, fleet-wide (recorded by every process that starts,
    and by migrate), with the vendor this host routes each to; or stop serving one."""
    from db.network_store import NetworkStore
    from fulfillment.cli.output import cell, print_json, table
    from fulfillment.domain.networks import DISPLAY_NAMES, VENDOR_NAMES, parse_routes

    s = bootstrap.settings()
    networks = NetworkStore(bootstrap.store())
    if args.action == "disable":
        if args.network is None:
            args.parser.error("networks disable needs a NETWORK")
        row = networks.disable(args.network)
        if row is None:
            print(f"error: {args.network} is not served by the fleet", file=sys.stderr)
            return EXIT_REFUSED
        from fulfillment.telemetry.logs import get_logger

        get_logger("fulfillment.cli").info(
            "networks.disabled", network=args.network, actor=os.environ.get("USER", "cli")
        )
        print(
            f"{args.network} is no longer served: its new orders get no fulfillment status; the "
            "ones it has stay as they are. Take it out of NETWORKS_ENABLED on every host too: a "
            "process that starts with it enables it again."
        )
        return 0
    routes = parse_routes(s.network_vendors, KNOWN_NETWORKS)
    here = s.networks()
    rows = [
        {
            "network": row.network,
            "name": DISPLAY_NAMES[row.network],
            "vendor": routes[row.network],
            "served_here": row.network in here,
            "enabled_at": row.enabled_at,
            "enabled_by": row.enabled_by,
            "last_seen_s": round(row.seen_age_s),
        }
        for row in networks.list()
    ]
    if args.json:
        print_json({"networks": rows, "this_host": sorted(here)})
        return 0
    print(
        table(
            ["network", "vendor", "here", "enabled (UTC)", "by", "last start"],
            [
                [
                    f"{r['network']} ({r['name']})",
                    VENDOR_NAMES[str(r["vendor"])],
                    "yes" if r["served_here"] else "no",
                    cell(r["enabled_at"]),
                    cell(r["enabled_by"]),
                    f"{r['last_seen_s']} s ago",
                ]
                for r in rows
            ],
        )
    )
    missing = sorted(here - {str(r["network"]) for r in rows})
    if missing:
        print(
            f"this host serves {', '.join(missing)} too: recorded when one of its processes starts"
        )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from db.store import Store
    from producers.publish import publish_fulfillment

    order_id = str(uuid.uuid4())
    store: Store = bootstrap.store()
    store.insert_order(
        order_id,
        phone_number=args.phone,
        network=args.network,
        size_gb=Decimal(args.size_gb) if args.size_gb else None,
        package_name=args.package,
    )
    result = publish_fulfillment(
        order_id,
        phone_number=args.phone,
        network=args.network,
        size_gb=args.size_gb,
        package_name=args.package,
    )
    print(
        json.dumps({"order_id": order_id, "published": result.published, "reason": result.reason})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
