"""Every error this project raises, split by what the caller must do.

FulfillmentError
├── InvalidOrder (ValueError)          refuse at the producer; names the field
│   ├── InvalidPhoneNumber
│   ├── InvalidPackage
│   └── UnsupportedNetwork
├── MalformedMessage                   dead-letter the message, never retry
├── ActionRefused                      an admin action that the order's state forbids
├── OrderNotFound                      unknown order id: dead-letter / 404
├── BrokerUnavailable                  Redis (the broker) could not be read or written
│   └── PublishError                   a message could not be published; the reconciler recovers
├── ConfigurationError                 the fleet is misconfigured: not any order's fault
│   └── SchemaTooOld                   the database needs `fulfillment migrate` first
├── StoreError                         PostgreSQL failed (driver errors translated in db/)
│   └── MigrationError                 a step failed: the database stays at its version
│       ├── SchemaDrift                changed by hand, or a step edited once applied
│       └── UnknownSchemaVersion       `migrate --to` a version no step has
└── VendorError                        anything the AT-iShare API did (what each means for the
    │                                  order, attempts included: domain/decision.py)
    ├── TransientVendorError           retry on the backoff table
    │   ├── OutcomeUnknown             the purchase may have happened: verify before buying
    │   │   ├── VendorTimeout
    │   │   ├── VendorConnectionError
    │   │   ├── VendorServerError      5xx
    │   │   └── VendorProtocolError    an answer we cannot read
    │   ├── VendorUnauthorized         401: alert admins, attempt kept
    │   ├── InsufficientBalance        402: alert admins, attempt kept
    │   └── RateLimited                429: retry after the vendor's Retry-After, attempt kept
    └── PermanentVendorError           dead-letter at once
        (INVALID_PHONE, INVALID_PACKAGE, INVALID_NETWORK, other 4xx)
"""

from __future__ import annotations


class FulfillmentError(Exception):
    """Root of every error raised by this project."""

    code: str = "FULFILLMENT_ERROR"


# -- input ------------------------------------------------------------------------------


class InvalidOrder(FulfillmentError, ValueError):
    """An order that cannot be fulfilled as given; `field` names the culprit."""

    code = "INVALID_ORDER"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidPhoneNumber(InvalidOrder):
    code = "INVALID_PHONE"

    def __init__(self, message: str) -> None:
        super().__init__("phone_number", message)


class InvalidPackage(InvalidOrder):
    code = "INVALID_PACKAGE"

    def __init__(self, message: str) -> None:
        super().__init__("size_gb", message)


class UnsupportedNetwork(InvalidOrder):
    code = "UNSUPPORTED_NETWORK"

    def __init__(self, message: str) -> None:
        super().__init__("network", message)


class MalformedMessage(FulfillmentError):
    code = "MALFORMED_MESSAGE"


class ActionRefused(FulfillmentError):
    """An admin action the order's state forbids (retry a success, trigger a failed order)."""

    code = "ACTION_REFUSED"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class OrderNotFound(FulfillmentError):
    code = "ORDER_NOT_FOUND"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"no order with id {order_id}")
        self.order_id = order_id


# -- infrastructure -----------------------------------------------------------------------


class BrokerUnavailable(FulfillmentError):
    """Redis, the broker, did not answer a read or a write (Dramatiq's dead-letter queue)."""

    code = "BROKER_UNAVAILABLE"


class PublishError(BrokerUnavailable):
    """A message could not be sent (or sent again) on its queue."""

    code = "PUBLISH_FAILED"


class ConfigurationError(FulfillmentError, RuntimeError):
    code = "CONFIGURATION_ERROR"


class StoreError(FulfillmentError):
    code = "STORE_FAILED"


class SchemaTooOld(ConfigurationError):
    """The database is at a schema version older than this code needs: run `fulfillment
    migrate` first (a rolling deploy migrates, then upgrades hosts)."""

    code = "SCHEMA_TOO_OLD"


class MigrationError(StoreError):
    """A migration step failed; the database stays at the version before it."""

    code = "MIGRATION_FAILED"


class SchemaDrift(MigrationError):
    """The database is not what its recorded version says: changed by hand, or a step's file
    edited after it was applied."""

    code = "SCHEMA_DRIFT"


class UnknownSchemaVersion(MigrationError, ValueError):
    """`--to` a version that no step has."""

    code = "UNKNOWN_SCHEMA_VERSION"


# -- vendor -------------------------------------------------------------------------------


class VendorError(FulfillmentError):
    """The AT-iShare API failed; `raw` keeps what it answered, for the audit trail."""

    code = "VENDOR_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        raw: object = None,
        latency_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.http_status = http_status
        self.raw = raw
        self.latency_ms = latency_ms


class TransientVendorError(VendorError):
    code = "VENDOR_TRANSIENT"


class OutcomeUnknown(TransientVendorError):
    """The request may have reached the vendor: ask for the reference before buying again."""

    code = "OUTCOME_UNKNOWN"


class VendorTimeout(OutcomeUnknown):
    code = "TIMEOUT"


class VendorConnectionError(OutcomeUnknown):
    code = "CONNECTION_ERROR"


class VendorServerError(OutcomeUnknown):
    code = "VENDOR_5XX"


class VendorProtocolError(OutcomeUnknown):
    code = "BAD_VENDOR_RESPONSE"


class VendorUnauthorized(TransientVendorError):
    """Our credentials or clock, not the order: retried without spending an attempt."""

    code = "UNAUTHORIZED"


class InsufficientBalance(TransientVendorError):
    """Our account, not the order: retried without spending an attempt."""

    code = "INSUFFICIENT_BALANCE"


class RateLimited(TransientVendorError):
    code = "RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        http_status: int | None = None,
        raw: object = None,
        latency_ms: int | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, raw=raw, latency_ms=latency_ms)
        self.retry_after_s = retry_after_s


class PermanentVendorError(VendorError):
    code = "VENDOR_REJECTED"
