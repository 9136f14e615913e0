"""The store: every database operation of the fleet, by name. Rows become models here only.

Driver errors (psycopg, psycopg_pool) are translated to StoreError at this edge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, LiteralString

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from db.queries import q
from fulfillment.domain.errors import StoreError
from fulfillment.domain.order import Order, OrderStatus

Row = dict[str, Any]


@contextmanager
def translate_errors() -> Iterator[None]:
    """Driver errors inside the block (psycopg, psycopg_pool) leave it as StoreError."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise StoreError(f"no database connection available: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"database error: {type(exc).__name__}: {exc}") from exc


def open_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 30.0
) -> psycopg_pool.ConnectionPool[Any]:
    """A started pool of autocommit connections returning dict rows."""
    with translate_errors():
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            database_url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            open=False,
            timeout=timeout_s,
            name="fulfillment",
        )
        pool.open(wait=True, timeout=timeout_s)
    return pool


def _order(row: Row) -> Order:
    status = row["fulfillment_status"]
    return Order(
        id=str(row["id"]),
        phone_number=row["phone_number"],
        network=row["network"],
        size_gb=row["size_gb"],
        package_name=row["package_name"],
        status=OrderStatus(status) if status is not None else OrderStatus.PENDING,
        attempts=row["fulfillment_attempts"],
        in_flight_attempt=row["fulfillment_in_flight_attempt"],
        status_checks=row["fulfillment_status_checks"],
        deferrals=row["fulfillment_deferrals"],
        generation=row["fulfillment_generation"],
        extra_attempts=row["fulfillment_extra_attempts"],
        next_attempt_at=row["next_attempt_at"],
        claim_token=str(row["claim_token"]) if row["claim_token"] else None,
        claim_expires_at=row["claim_expires_at"],
        last_error_code=row["last_error_code"],
        dead_letter_reason=row["dead_letter_reason"],
        dead_lettered_at=row["dead_lettered_at"],
        vendor_transaction_id=row["vendor_transaction_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@dataclass(frozen=True, slots=True)
class Claim:
    order: Order
    previous_status: OrderStatus
    #: The order was processing under a claim that expired: a worker died mid-call.
    taken_over: bool
    #: The claim also marked attempt 1 in flight (claim_order with begin, a fresh order):
    #: no begin_purchase before that purchase.
    purchase_begun: bool = False


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One vendor call's audit row and the order state it leads to (finish_call)."""

    order_id: str
    token: str
    network: str
    phone_number: str
    action: str  # purchase | status_check
    log_status: str  # success | pending | failed | not_found
    attempt_number: int
    max_attempts: int
    status: OrderStatus
    attempts: int
    in_flight: int | None
    status_checks: int
    deferrals: int
    delay_s: float | None
    http_status: int | None = None
    api_response: object = None
    error_code: str | None = None
    error_message: str | None = None
    latency_ms: int | None = None
    transaction_id: str | None = None
    dead_letter_reason: str | None = None
    worker: str | None = None
    #: Keep the claim: more calls follow in this same task (a check before a purchase).
    keep_claim: bool = False


@dataclass(frozen=True, slots=True)
class DueOrder:
    order_id: str
    reason: str
    generation: int
    dead_letter_reason: str | None
    last_error_code: str | None


class Store:
    def __init__(self, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        self.pool = pool

    def close(self) -> None:
        self.pool.close()

    # -- plumbing: named queries of db/queries.sql, driver errors translated ---------------

    def fetch_one(self, name: str, params: dict[str, Any]) -> Row | None:
        """The first row of the named query, or None."""
        with translate_errors(), self.pool.connection() as conn:
            row: Row | None = conn.execute(_sql(name), params).fetchone()
            return row

    def fetch_all(self, name: str, params: dict[str, Any] | None = None) -> list[Row]:
        """Every row of the named query."""
        with translate_errors(), self.pool.connection() as conn:
            rows: list[Row] = conn.execute(_sql(name), params or {}).fetchall()
            return rows

    def execute_named(self, name: str, params: dict[str, Any]) -> int:
        """Run the named statement; the number of rows it touched."""
        return self._exec(name, params)

    def _exec(self, name: str, params: dict[str, Any]) -> int:
        with translate_errors(), self.pool.connection() as conn:
            count: int = conn.execute(_sql(name), params).rowcount
            return count

    def ping(self) -> None:
        with translate_errors(), self.pool.connection() as conn:
            conn.execute("SELECT 1")

    # -- the worker ------------------------------------------------------------------------

    def claim(
        self,
        order_id: str,
        token: str,
        *,
        ttl_s: float,
        early_s: float,
        networks: Sequence[str],
        begin: bool = False,
        in_review: bool = False,
    ) -> Claim | None:
        """Only an order of one of `networks` (those this process serves) is taken.
        begin: an order never tried is marked as buying attempt 1 by the same statement.
        in_review: an order a human holds as outcome unknown may be taken too (a callback, a
        dead letter's last look), never by a fulfill_order message.
        A claim that may buy (begin, not in_review: a fulfill_order message) takes no order
        of a paused scope (fleet_pauses); the others only ask the vendor."""
        row = self.fetch_one(
            "claim_order",
            {
                "order_id": order_id,
                "token": token,
                "ttl_s": ttl_s,
                "early_s": early_s,
                "networks": list(networks),
                "begin": begin,
                "in_review": in_review,
                "may_buy": begin and not in_review,
            },
        )
        if row is None:
            return None
        return Claim(
            order=_order(row),
            previous_status=OrderStatus(row["previous_status"]),
            taken_over=bool(row["taken_over"]),
            purchase_begun=bool(row["purchase_begun"]),
        )

    def get_order(self, order_id: str) -> Order | None:
        row = self.fetch_one("get_order", {"order_id": order_id})
        if row is None or row["fulfillment_status"] is None:
            return None if row is None else _order(row)
        return _order(row)

    def paused_scope(self, network: str) -> str | None:
        """The pause that holds orders of `network` ('*' before the network's own), or None."""
        row = self.fetch_one("paused_scope", {"network": network})
        return str(row["scope"]) if row else None

    def network_served(self, network: str) -> bool:
        """Whether some process of the fleet serves `network` (fleet_networks)."""
        return self.fetch_one("network_served", {"network": network}) is not None

    def seconds_until_due(self, order_id: str) -> float | None:
        row = self.fetch_one("seconds_until_due", {"order_id": order_id})
        return float(row["wait_s"]) if row else None

    def order_row(self, order_id: str) -> Row | None:
        return self.fetch_one("get_order", {"order_id": order_id})

    def begin_purchase(self, order_id: str, token: str, attempt: int, *, ttl_s: float) -> bool:
        params = {"order_id": order_id, "token": token, "attempt": attempt, "ttl_s": ttl_s}
        return self.fetch_one("begin_purchase", params) is not None

    def finish_call(self, record: CallRecord) -> bool:
        """Write the audit row and the order's state; False when the claim was lost meanwhile."""
        params = {
            "order_id": record.order_id,
            "token": record.token,
            "network": record.network,
            "phone_number": record.phone_number,
            "action": record.action,
            "log_status": record.log_status,
            "attempt_number": record.attempt_number,
            "max_attempts": record.max_attempts,
            "status": record.status.value,
            "attempts": record.attempts,
            "in_flight": record.in_flight,
            "status_checks": record.status_checks,
            "deferrals": record.deferrals,
            "delay_s": record.delay_s,
            "http_status": record.http_status,
            "api_response": _jsonb(record.api_response),
            "error_code": _opt_text(record.error_code),
            "error_message": _opt_text(record.error_message),
            "latency_ms": record.latency_ms,
            "transaction_id": _opt_text(record.transaction_id),
            "dead_letter_reason": record.dead_letter_reason,
            "worker": record.worker,
            "keep_claim": record.keep_claim,
        }
        row = self.fetch_one("finish_call", params)
        return bool(row and row["updated"])

    def defer(
        self,
        order_id: str,
        token: str,
        *,
        status: OrderStatus,
        delay_s: float,
        clear_in_flight: bool = False,
        error_code: str = "CIRCUIT_OPEN",
        error_message: str = "vendor circuit open: waiting without spending an attempt",
    ) -> bool:
        params = {
            "order_id": order_id,
            "token": token,
            "status": status.value,
            "delay_s": delay_s,
            "clear_in_flight": clear_in_flight,
            "error_code": error_code,
            "error_message": error_message,
        }
        return self.fetch_one("defer_order", params) is not None

    def release_claim(
        self, order_id: str, token: str, status: OrderStatus, *, clear_in_flight: bool = False
    ) -> None:
        self._exec(
            "release_claim",
            {
                "order_id": order_id,
                "token": token,
                "status": status.value,
                "clear_in_flight": clear_in_flight,
            },
        )

    def request_dead_letter(
        self,
        order_id: str,
        token: str,
        *,
        reason: str,
        error_code: str,
        error_message: str,
        clear_in_flight: bool = False,
    ) -> None:
        self._exec(
            "request_dead_letter",
            {
                "order_id": order_id,
                "token": token,
                "reason": reason,
                "error_code": error_code,
                "error_message": error_message,
                "clear_in_flight": clear_in_flight,
            },
        )

    def record_callback(self, digest: str, order_id: str, status: str) -> bool:
        """True the first time this signed callback is seen, False for a replay."""
        params = {"digest": digest, "order_id": order_id, "status": status[:32]}
        return self.fetch_one("record_callback", params) is not None

    def prune_callbacks(self, *, keep_s: float) -> int:
        return self._exec("prune_callbacks", {"keep_s": keep_s})

    def mark_enqueued(self, order_id: str) -> None:
        self._exec("mark_enqueued", {"order_id": order_id})

    # -- dead letters and notifications ----------------------------------------------------

    def flag_dead_letter(
        self,
        order_id: str,
        *,
        reason: str,
        error_code: str | None,
        generation: int,
        source: str,
    ) -> Row | None:
        """Flag the order and store its notification; None when it was flagged already
        (or succeeded, or an admin retried it since). notification_id is None on a repeat."""
        return self.fetch_one(
            "flag_dead_letter",
            {
                "order_id": order_id,
                "reason": reason,
                "error_code": error_code,
                "generation": generation,
                "source": source,
            },
        )

    def insert_notification(
        self,
        *,
        kind: str,
        order_id: str | None,
        message: str,
        details: dict[str, Any],
        dedupe_key: str,
    ) -> int | None:
        row = self.fetch_one(
            "insert_notification",
            {
                "kind": kind,
                "order_id": order_id,
                "message": message,
                "details": Jsonb(details),
                "dedupe_key": dedupe_key,
            },
        )
        return int(row["id"]) if row else None

    def record_webhook_delivery(
        self, notification_id: int, *, state: str, attempts: int, last_error: str | None
    ) -> None:
        self._exec(
            "record_webhook_delivery",
            {"id": notification_id, "state": state, "attempts": attempts, "last_error": last_error},
        )

    def undelivered_notifications(
        self, *, max_attempts: int, grace_s: float, limit: int = 100
    ) -> list[Row]:
        return self.fetch_all(
            "undelivered_notifications",
            {"max_attempts": max_attempts, "grace_s": grace_s, "limit": limit},
        )

    def notifications(self, limit: int = 50) -> list[Row]:
        return self.fetch_all("notifications", {"limit": limit})

    # -- the reconciler ----------------------------------------------------------------------

    def sweep_due_orders(self, *, grace_s: float, limit: int = 500) -> list[DueOrder]:
        rows = self.fetch_all("sweep_due_orders", {"grace_s": grace_s, "limit": limit})
        return [
            DueOrder(
                order_id=str(r["id"]),
                reason=r["reason"],
                generation=r["fulfillment_generation"],
                dead_letter_reason=r["dead_letter_reason"],
                last_error_code=r["last_error_code"],
            )
            for r in rows
        ]

    # -- reading: CLI, demo, tests ---------------------------------------------------------

    def insert_order(
        self,
        order_id: str,
        *,
        phone_number: str | None,
        network: str,
        size_gb: Decimal | float | None,
        package_name: str | None,
    ) -> None:
        self._exec(
            "insert_order",
            {
                "id": order_id,
                "phone_number": phone_number,
                "network": network,
                "size_gb": size_gb,
                "package_name": package_name,
            },
        )

    def order_logs(self, order_id: str) -> list[Row]:
        return self.fetch_all("order_logs", {"order_id": order_id})

    def status_counts(self) -> dict[str, int]:
        """Orders per status, every network together."""
        totals: dict[str, int] = {}
        for (_, status), n in self.status_counts_by_network().items():
            totals[status] = totals.get(status, 0) + n
        return totals

    def status_counts_by_network(self) -> dict[tuple[str, str], int]:
        """Orders per (network, status); see the status_counts query."""
        return {(r["network"], r["status"]): int(r["n"]) for r in self.fetch_all("status_counts")}

    def attempts_distribution(self) -> list[Row]:
        return self.fetch_all("attempts_distribution")

    def dead_lettered_orders(self, limit: int = 50) -> list[Row]:
        return self.fetch_all("dead_lettered_orders", {"limit": limit})

    def oldest_pending_by_network(self) -> dict[str, float]:
        """Per network the fleet serves, the age of its oldest pending order (0 when none)."""
        return {r["network"]: float(r["age_s"]) for r in self.fetch_all("oldest_pending")}

    def unfinished_count(self) -> int:
        rows = self.fetch_all("unfinished_count")
        return int(rows[0]["n"])


def _sql(name: str) -> LiteralString:
    # The queries file is part of the code base, not input: it is as literal as a constant.
    return q(name)  # type: ignore[return-value,unused-ignore]


def _jsonb(value: object) -> Jsonb | None:
    """A value PostgreSQL's jsonb accepts: no NaN or Infinity (JSON has none), no NUL
    character (text cannot hold one); anything else unserialisable kept as its repr."""
    if value is None:
        return None
    try:
        cleaned = _storable_json(value)
        json.dumps(cleaned, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        cleaned = {"unserialisable": clean_text(repr(value)[:2000])}
    return Jsonb(cleaned)


def _storable_json(value: object, depth: int = 0) -> object:
    if depth > 50:
        raise ValueError("nested too deeply to store")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _storable_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable_json(v, depth + 1) for v in value]
    return value


def _opt_text(text: str | None) -> str | None:
    return None if text is None else clean_text(text)


def clean_text(text: str) -> str:
    """PostgreSQL text cannot hold NUL characters."""
    return text.replace("\x00", "\ufffd")
