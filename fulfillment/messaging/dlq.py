"""Dramatiq's own dead-letter queue: the raw messages it gave up on, to read, requeue or delete.

Dramatiq's Redis broker keeps them in `<namespace>:<queue>.XQ` (ids by time) and
`<namespace>:<queue>.XQ.msgs` (id -> encoded message) for a week. The order-level dead-letter
list lives in PostgreSQL; this is the message-level view under it. Redis failures leave as
BrokerUnavailable (PublishError when a message could not be sent again).
"""

from __future__ import annotations

import builtins
import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
from redis.exceptions import RedisError

from fulfillment.domain.constants import FULFILLMENT_QUEUE
from fulfillment.domain.errors import BrokerUnavailable, PublishError

MAX_BODY_CHARS = 4000


@dataclass(frozen=True, slots=True)
class DeadMessage:
    id: str
    queue: str
    actor: str | None
    args: Any
    failed_at: str | None
    body: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queue": self.queue,
            "actor": self.actor,
            "args": self.args,
            "failed_at": self.failed_at,
            "body": self.body,
        }


class DeadMessageQueue:
    def __init__(
        self, client: Any, namespace: str, broker: Any, queue: str = FULFILLMENT_QUEUE
    ) -> None:
        self.client = client
        self.broker = broker
        self.queue = queue
        self.ids_key = f"{namespace}:{queue}.XQ"
        self.msgs_key = f"{namespace}:{queue}.XQ.msgs"

    def count(self) -> int:
        try:
            return int(self.client.zcard(self.ids_key))
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc

    def list(self, limit: int = 100) -> builtins.list[DeadMessage]:
        try:
            entries = self.client.zrevrange(self.ids_key, 0, max(limit, 1) - 1, withscores=True)
            ids = [e[0] for e in entries]
            bodies = self.client.hmget(self.msgs_key, ids) if ids else []
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc
        result = []
        for (raw_id, score), body in zip(entries, bodies, strict=True):
            result.append(self._parse(raw_id, score, body))
        return result

    def requeue(self, ids: builtins.list[str]) -> int:
        """Send each message again on its queue (a new delivery) and drop it from the DLQ."""
        done = 0
        for message_id in ids:
            try:
                body = self.client.hget(self.msgs_key, message_id)
                if body is None:
                    continue
                message = dramatiq.Message.decode(body)
                # a fresh start: no retries counted, no old traceback (copy() would merge)
                message = dataclasses.replace(
                    message,
                    options={k: v for k, v in message.options.items() if k in ("max_retries",)},
                )
                self.broker.enqueue(message)
                self._remove(message_id)
            except (RedisError, ValueError, KeyError) as exc:
                raise PublishError(f"could not requeue {message_id}: {exc}") from exc
            done += 1
        return done

    def delete(self, ids: builtins.list[str]) -> int:
        try:
            return sum(self._remove(message_id) for message_id in ids)
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis unavailable: {type(exc).__name__}") from exc

    def _remove(self, message_id: str) -> int:
        pipe = self.client.pipeline()
        pipe.zrem(self.ids_key, message_id)
        pipe.hdel(self.msgs_key, message_id)
        removed, _ = pipe.execute()
        return int(removed)

    def _parse(self, raw_id: Any, score: Any, body: Any) -> DeadMessage:
        message_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        text = (body or b"").decode("utf-8", "replace")
        actor, args = None, None
        try:
            data = json.loads(text)
            actor, args = data.get("actor_name"), data.get("args")
        except (ValueError, AttributeError):
            pass
        failed = datetime.fromtimestamp(score / 1000, UTC).isoformat().replace("+00:00", "Z")
        return DeadMessage(message_id, self.queue, actor, args, failed, text[:MAX_BODY_CHARS])
