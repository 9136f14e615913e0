"""The request and response models of the platform and admin JSON APIs (fulfillment/web/api.py).

Pydantic models and the annotated field types they share (Text, PhoneSearch, Reason, ...):
they validate what callers send and are what the OpenAPI document shows. Text is refused
when PostgreSQL could not store it (a NUL, a lone surrogate), and each rule is also stated as
a pattern so the document shows it. ErrorResponse and `errors(...)` describe the app's JSON
error shape for a route's OpenAPI `responses`. Pure data: no routes, no authentication.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

from fulfillment.domain.pause import MAX_PAUSE_REASON
from fulfillment.services.admin import MAX_REASON, MAX_ROW_ID, MAX_TRANSACTION_ID

#: Order ids one retry or dismiss call may name (allFiltered names none: the service walks it).
MAX_IDS = 1000
#: Action results one answer lists (the counts always cover all of them).
MAX_RESULTS = 1000

# -- shared types ----------------------------------------------------------------------------


def _storable(text: str) -> str:
    """Text PostgreSQL can store: no NUL character, valid Unicode (no lone surrogates)."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode") from exc
    return text


#: No NUL anywhere (the same rule as _storable, stated in the OpenAPI document).
NO_NUL = r"^[^\x00]*$"
#: ...and at least one character that str.strip() keeps.
VISIBLE = r"^[^\x00]*[^\s\x00-\x1f][^\x00]*$"
Text = Annotated[str, StringConstraints(pattern=NO_NUL), AfterValidator(_storable)]
#: Empty (no filter), or something with a digit to search for.
PHONE_SEARCH = r"^$|^[^\x00]*[0-9][^\x00]*$"
PhoneSearch = Annotated[
    str, StringConstraints(max_length=40, pattern=PHONE_SEARCH), AfterValidator(_storable)
]
Reason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_REASON, pattern=VISIBLE),
    AfterValidator(_storable),
]
OrderIdText = Annotated[Text, Field(min_length=1, max_length=64)]
StatusFilter = Literal[
    "all",
    "pending",
    "processing",
    "outcome_unknown",
    "success",
    "failed",
    "dead_lettered",
    "open_dead_letters",
]


#: A network code (fulfillment.domain.constants.KNOWN_NETWORKS, which a test keeps in step).
NetworkCode = Literal["at-bigtime", "at-ishare", "mtn", "telecel"]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorInfo(BaseModel):
    code: str = Field(examples=["ORDER_NOT_FOUND"])
    message: str


class ErrorResponse(BaseModel):
    success: Literal[False] = False
    error: ErrorInfo


_ERROR_TEXT = {
    400: "The body could not be read (not UTF-8).",
    401: "Missing or wrong bearer token (`WWW-Authenticate: Bearer`).",
    403: "A dashboard-session call that changes state without the session's X-CSRF-Token.",
    404: "No such order.",
    409: "The order's state refuses the action (the code says why).",
    413: "The body is too large.",
    422: "Malformed request: body, query or id.",
    429: "Too many wrong tokens from this address: every token is refused from it until "
    "`Retry-After` seconds have passed.",
    503: "PostgreSQL or Redis is unavailable; try again.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries of the JSON error shape."""
    return {s: {"model": ErrorResponse, "description": _ERROR_TEXT[s]} for s in statuses}


# -- the platform API --------------------------------------------------------------------------


class FulfillmentAction(CamelModel):
    action: Literal["trigger", "retry"] = Field(
        description="trigger: publish a pending order; retry: one more attempt for a failed "
        "(or dead-lettered) order."
    )
    order_id: UUID
    reason: Text | None = Field(
        default=None, max_length=MAX_REASON, description="why (retry only; goes to the audit)"
    )


class FulfillmentRef(CamelModel):
    order_id: str
    status: str = Field(
        description="pending, processing, outcome_unknown (the vendor may have delivered: a "
        "person decides, never refund it), success, failed or dead_lettered"
    )
    reference: str = Field(description="the vendor reference (the order id)")


class ActionResponse(BaseModel):
    success: Literal[True] = True
    message: str
    fulfillment: FulfillmentRef


class LatestAttempt(CamelModel):
    attempt_number: int
    action: str
    status: str
    error_code: str | None
    error_message: str | None
    http_status: int | None
    latency_ms: int | None
    retry_after: str | None
    created_at: str | None


class FulfillmentState(CamelModel):
    order_id: str
    reference: str
    status: str
    attempts: int | None
    last_error_code: str | None
    last_error_message: str | None
    next_retry_at: str | None
    dead_letter_reason: str | None
    fulfilled_at: str | None
    transaction_id: str | None
    latest_attempt: LatestAttempt | None


class StatusResponse(BaseModel):
    success: Literal[True] = True
    fulfillment: FulfillmentState


# -- the admin API -------------------------------------------------------------------------------


class OrderView(BaseModel):
    """An order as admins see it (services.admin.view_row): masked phone, ISO-8601 UTC times."""

    id: str
    created_at: str | None
    phone: str | None
    network: str | None
    size_gb: str | None
    package_name: str | None
    status: str
    attempts: int | None
    last_error_code: str | None
    last_error_message: str | None
    next_retry_at: str | None
    dead_letter_reason: str | None
    dead_lettered_at: str | None
    dismissed_at: str | None
    fulfilled_at: str | None
    vendor_transaction_id: str | None


class OrderPage(BaseModel):
    success: Literal[True] = True
    orders: list[OrderView]
    next_cursor: str | None = Field(
        alias="nextCursor", description="pass as `cursor` for the next page; null on the last"
    )


class AttemptView(BaseModel):
    """One fulfillment_logs row (phone masked)."""

    id: int
    action: str
    status: str
    attempt_number: int
    max_attempts: int
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    latency_ms: int | None = None
    retry_after: str | None = None
    fulfilled_at: str | None = None
    vendor_transaction_id: str | None = None
    worker: str | None = None
    phone: str | None = None
    api_response: Any = Field(default=None, description="the vendor's raw answer")
    created_at: str | None = None


class AuditEntry(BaseModel):
    id: int
    actor: str
    action: str
    order_id: str | None = None
    reason: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None


class NotificationView(BaseModel):
    id: int
    kind: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    webhook_state: str
    webhook_attempts: int
    webhook_last_error: str | None = None
    delivered_at: str | None = None
    created_at: str | None = None


class SmsView(BaseModel):
    """One customer SMS of an order (services.admin.outbox_view): never the phone number; its
    text and errors with phone-like text masked."""

    id: int
    generation: int = Field(description="the order's outcome generation (an admin retry: +1)")
    kind: str = Field(description="delivered | failed")
    status: str = Field(description="queued | sent | delivered | failed | undeliverable | skipped")
    provider_status: str | None = None
    provider_message_id: str | None = None
    client_reference: str
    attempts: int
    status_checks: int
    in_flight: bool = Field(description="a send whose answer was not read: looked up first")
    content: str | None = Field(default=None, description="the text sent (or to send)")
    last_error: str | None = None
    skip_reason: str | None = None
    sent_at: str | None = None
    next_attempt_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class EventView(BaseModel):
    """One outcome event of an order, as the platform is told it."""

    id: int
    event_id: str = Field(description="the platform deduplicates on it")
    generation: int
    type: str = Field(description="order.fulfilled | order.failed | order.resolved")
    status: str = Field(description="pending | delivered | failed")
    attempts: int
    last_http_status: int | None = None
    last_error: str | None = None
    delivered_at: str | None = None
    next_attempt_at: str | None = None
    created_at: str | None = None


class OrderDetail(BaseModel):
    success: Literal[True] = True
    order: OrderView
    attempts: list[AttemptView]
    audit: list[AuditEntry]
    notifications: list[NotificationView]
    sms: list[SmsView] = Field(description="the customer's SMS, one per outcome and kind")
    events: list[EventView] = Field(description="what the platform is told, in order")


class Stats(BaseModel):
    total: int
    success: int
    failed: int
    processing: int = Field(description="a worker or the vendor is on it (not outcome unknown)")
    pending: int
    outcome_unknown: int = Field(
        description="the vendor may have delivered; held for a person (never failed)"
    )
    dead_lettered: int
    open_dead_letters: int
    success_rate: float | None = Field(description="success / (success + dead-lettered)")
    median_fulfil_s_24h: float | None = Field(
        description="median seconds from order to delivery over the last 24 h"
    )


class StatsResponse(BaseModel):
    success: Literal[True] = True
    stats: Stats


class FilterBody(BaseModel):
    status: StatusFilter = "all"
    phone: PhoneSearch | None = Field(default=None, description="any way typed")
    network: NetworkCode | None = None


class RetrySelected(CamelModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    order_ids: list[OrderIdText] = Field(min_length=1, max_length=MAX_IDS)
    reason: Reason


class RetryFiltered(CamelModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    all_filtered: FilterBody = Field(
        description="retry every failed or dead-lettered order this filter matches"
    )
    reason: Reason


class DismissBody(CamelModel):
    order_ids: list[OrderIdText] = Field(min_length=1, max_length=MAX_IDS)
    reason: Reason


class DecisionBody(CamelModel):
    """A decision on an outcome unknown: why, for the audit trail."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    reason: Reason


class MarkDeliveredBody(DecisionBody):
    transaction_id: Text | None = Field(
        default=None,
        max_length=MAX_TRANSACTION_ID,
        description="the vendor's transaction id, when its dashboard shows one",
    )


class DecisionResponse(CamelModel):
    success: Literal[True] = True
    code: str = Field(examples=["RECHECK_SCHEDULED"])
    message: str
    order: OrderView = Field(description="the order after the decision")


class ActionResultView(CamelModel):
    order_id: str
    ok: bool
    code: str
    message: str


class ActionsResponse(BaseModel):
    success: Literal[True] = True
    total: int
    succeeded: int
    refused: int
    results: list[ActionResultView] = Field(description=f"the first {MAX_RESULTS} results")


# -- the outboxes' failures -----------------------------------------------------------------

#: the largest whole number JSON carries exactly everywhere (a double's 53 bits; a schema's
#: maximum of MAX_ROW_ID would be read back as 2**63 by many clients)
MAX_JSON_ID = min(MAX_ROW_ID, 2**53 - 1)
#: an SMS or event id (a bigserial)
RowId = Annotated[int, Field(ge=1, le=MAX_JSON_ID)]


class FailedSmsView(BaseModel):
    """An SMS an admin may retry (given up, or failed at the provider)."""

    id: int
    order_id: str
    generation: int
    kind: str
    status: str
    provider_status: str | None = None
    attempts: int
    last_error: str | None = None
    updated_at: str | None = None


class FailedSmsResponse(BaseModel):
    success: Literal[True] = True
    count: int = Field(description="every failed SMS (the list shows the newest `limit`)")
    sms: list[FailedSmsView]


class FailedEventView(BaseModel):
    """An outcome event given up on, for an admin to resend."""

    id: int
    event_id: str
    order_id: str
    generation: int
    type: str
    status: str
    attempts: int
    last_http_status: int | None = None
    last_error: str | None = None
    updated_at: str | None = None


class FailedEventsResponse(BaseModel):
    success: Literal[True] = True
    count: int = Field(description="every failed event (the list shows the newest `limit`)")
    events: list[FailedEventView]


class OutboxIds(BaseModel):
    """SMS or event ids to retry or resend, and why (for the audit trail)."""

    model_config = ConfigDict(extra="forbid")
    ids: list[RowId] = Field(min_length=1, max_length=MAX_IDS)
    reason: Reason


class OutboxResultView(CamelModel):
    id: int = Field(description="the SMS or event")
    order_id: str | None = Field(description="its order; null when no row has the id")
    ok: bool
    code: str = Field(examples=["SMS_QUEUED", "SMS_NOT_FAILED", "EVENT_NOT_FOUND"])
    message: str


class OutboxActionsResponse(BaseModel):
    success: Literal[True] = True
    total: int
    succeeded: int
    refused: int
    results: list[OutboxResultView] = Field(description=f"the first {MAX_RESULTS} results")


class DeadMessageView(BaseModel):
    id: str
    queue: str
    actor: str | None
    args: Any
    failed_at: str | None
    body: str


class DlqResponse(BaseModel):
    success: Literal[True] = True
    count: int
    messages: list[DeadMessageView]


class DlqIds(BaseModel):
    ids: list[Annotated[Text, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=MAX_IDS
    )


class DlqActionResponse(BaseModel):
    success: Literal[True] = True
    done: int = Field(description="messages requeued or deleted (unknown ids are skipped)")


# -- the runtime pause ---------------------------------------------------------------------------

#: No control character anywhere (fulfillment.domain.pause refuses them: a reason is printed
#: by the CLI), and at least one character that str.strip() keeps.
PRINTABLE = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
PauseReason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PAUSE_REASON, pattern=PRINTABLE),
    AfterValidator(_storable),
]


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    network: NetworkCode | None = Field(
        default=None, description="the network to pause; absent or null: the whole fleet"
    )
    reason: PauseReason = Field(description="why (shown with the pause, kept in the audit)")


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    network: NetworkCode | None = Field(
        default=None, description="the network to resume; absent or null: the whole fleet"
    )


class PauseInfo(BaseModel):
    """A pause in force (services.pauses.PauseView)."""

    scope: str = Field(description='"*" for the whole fleet, or a network code')
    label: str = Field(examples=["the whole fleet", "network mtn"])
    reason: str
    paused_by: str
    paused_at: str = Field(description="ISO-8601 UTC")
    age_s: float = Field(description="seconds since paused_at")
    already_paused: bool = Field(
        default=False, description="a pause call found the scope paused: its first pause is kept"
    )
    message: str


class PausesResponse(BaseModel):
    success: Literal[True] = True
    paused: bool = Field(description="any pause in force (the whole fleet or a network)")
    pauses: list[PauseInfo]


class PauseResponse(PauseInfo):
    success: Literal[True] = True


class ResumeResponse(BaseModel):
    """services.pauses.ResumeResult."""

    success: Literal[True] = True
    scope: str
    label: str
    was_paused: bool
    requeued: int = Field(description="waiting orders re-enqueued, oldest due first")
    more_waiting: bool = Field(
        description="as many re-enqueued as one resume may: the reconciler re-enqueues the rest "
        "after its grace period"
    )
    still_paused: list[str] = Field(
        description="scopes still paused that hold some of this scope's orders"
    )
    message: str
