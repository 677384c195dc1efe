"""Events: what application code publishes into the outbox.

An :class:`Event` is a frozen pydantic model. Typed events are subclasses that fix their topic and
type with ``Literal`` fields (a value other than the default is then a validation error) and give
their payload a model type::

    class OrderPayload(BaseModel):
        order_id: int
        total: Decimal

    class OrderPlaced(Event):
        topic: Literal["orders"] = "orders"
        type: Literal["order.placed"] = "order.placed"
        payload: OrderPayload

    OrderPlaced(key="order-17", payload=OrderPayload(order_id=17, total=Decimal("9.90")))

Construction validates field types (pydantic's ``ValidationError``). :func:`check_event`, which
``publish`` calls before it sends anything to the database, validates everything again (events can
be built with ``model_construct`` or hold mutable payloads) and also serialises the payload and
checks the size; it raises :class:`~outbox.errors.InvalidEventError` naming the problem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictStr, field_validator

from outbox._hashing import key_hash
from outbox.errors import InvalidEventError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "RESERVED_HEADERS",
    "Event",
    "PreparedEvent",
    "check_event",
    "record_size",
]

#: The stream store's (and Kafka's) default ``max.message.bytes``: the largest record batch a
#: topic accepts. A single event must fit in one batch on its own.
DEFAULT_MAX_MESSAGE_BYTES = 1048588

#: Headers the relay sets on every record; an event may not set them itself.
RESERVED_HEADERS = frozenset({"event-id", "event-type", "content-type"})

_TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]{1,249}")

# Record batch v2 framing, upper bounds (Kafka's DefaultRecordBatch / DefaultRecord):
# the batch header is 61 bytes; a record has a length, attributes, timestamp delta, offset delta,
# key length, value length and header count (varints, at most 5 bytes each, 10 for the timestamp
# delta); each header has a key length and a value length (varints, 5 bytes each at most).
_BATCH_OVERHEAD = 61
_RECORD_OVERHEAD = 5 + 1 + 10 + 5 + 5 + 5 + 5
_HEADER_OVERHEAD = 5 + 5
_CONTENT_TYPE = "application/json"
_UUID_TEXT_LEN = 36


def _now() -> datetime:
    return datetime.now(UTC)


def topic_problem(topic: object) -> str | None:
    """Why ``topic`` is not a valid Kafka topic name, or None if it is."""
    if not isinstance(topic, str):
        return f"topic must be a str, not {type(topic).__name__}"
    if topic in (".", ".."):
        return f"topic {topic!r} is not allowed (Kafka reserves '.' and '..')"
    if not _TOPIC_RE.fullmatch(topic):
        if not topic:
            return "topic is empty"
        if len(topic) > 249:
            return f"topic is {len(topic)} characters long; Kafka allows at most 249"
        bad = sorted({c for c in topic if not _TOPIC_RE.fullmatch(c)})
        return f"topic {topic!r} contains {''.join(bad)!r}; Kafka allows only ASCII letters, digits, '.', '_' and '-'"
    return None


def _text_problem(what: str, value: object, *, empty_ok: bool = True) -> str | None:
    """Why ``value`` cannot be stored as PostgreSQL text / sent as UTF-8, or None."""
    if not isinstance(value, str):
        return f"{what} must be a str, not {type(value).__name__}"
    if not empty_ok and not value:
        return f"{what} is empty"
    if "\x00" in value:
        return f"{what} contains a NUL character, which PostgreSQL text cannot store"
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        return f"{what} is not valid Unicode ({exc.reason} at index {exc.start}); it cannot be encoded as UTF-8"
    return None


class Event(BaseModel):
    """An event to publish: the relay turns it into one Kafka record.

    The record's key is ``key`` (UTF-8), its value the JSON of ``payload``, its timestamp
    ``created_at``, and its headers ``headers`` plus ``event-id``, ``event-type`` and
    ``content-type: application/json`` (set by the relay, so reserved here). Events of one
    ``(topic, key)`` reach their partition in the order their transactions committed; events without
    a key have no order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID = Field(default_factory=uuid4)
    topic: StrictStr
    key: StrictStr | None = None
    type: StrictStr
    payload: Any = None
    headers: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    created_at: AwareDatetime = Field(default_factory=_now)

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        problem = topic_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str | None) -> str | None:
        problem = None if value is None else _text_problem("key", value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        problem = _text_problem("type", value, empty_ok=False)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        problem = _headers_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def payload_json(self) -> bytes:
        """The payload as the exact JSON bytes the relay will send as the record value.

        A pydantic model is serialised with its own serializer (``model_dump_json``); any other
        value must be JSON: dict (str keys), list, str, int, float (finite), bool or None.

        :raises InvalidEventError: the payload is not JSON-serialisable.
        """
        return _payload_json(self.payload, self.id)


def _headers_problem(headers: object) -> str | None:
    if not isinstance(headers, dict):
        return f"headers must be a dict of str to str, not {type(headers).__name__}"
    for name, value in headers.items():
        problem = _text_problem("header name", name, empty_ok=False) or _text_problem(
            f"value of header {name!r}", value
        )
        if problem:
            return problem
        if name.lower() in RESERVED_HEADERS:
            return (
                f"header {name!r} is reserved: the relay sets event-id, event-type and content-type "
                "from the event itself"
            )
    return None


def _json_default(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(
        f"a value of type {type(value).__name__} is not JSON-serialisable; convert it first "
        "(e.g. str(uuid), dt.isoformat(), str(decimal)) or make the payload a pydantic model, "
        "which serialises such types itself"
    )


def _payload_json(payload: object, event_id: object) -> bytes:
    try:
        if isinstance(payload, BaseModel):
            return payload.__pydantic_serializer__.to_json(payload)
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default)
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidEventError(
            f"payload contains a string that is not valid Unicode ({exc.reason}); it cannot be encoded as UTF-8",
            event_id=event_id,
        ) from exc
    except ValueError as exc:  # NaN/Infinity, circular references, pydantic serialisation errors
        reason = str(exc)
        if "Out of range float" in reason:
            reason = "it contains NaN or Infinity, which JSON cannot represent (use None or a string)"
        raise InvalidEventError(f"payload is not JSON-serialisable: {reason}", event_id=event_id) from exc
    except (TypeError, RecursionError) as exc:
        raise InvalidEventError(f"payload is not JSON-serialisable: {exc}", event_id=event_id) from exc


def record_size(key: bytes | None, value: bytes, headers: dict[str, str], event_type: str) -> int:
    """Upper bound of the size of a record batch holding this one event, as the relay sends it."""
    size = _BATCH_OVERHEAD + _RECORD_OVERHEAD + len(value) + (len(key) if key is not None else 0)
    relay_headers = (
        ("event-id", _UUID_TEXT_LEN),
        ("event-type", len(event_type.encode())),
        ("content-type", len(_CONTENT_TYPE)),
    )
    for name, value_len in relay_headers:
        size += _HEADER_OVERHEAD + len(name) + value_len
    for name, header_value in headers.items():
        size += _HEADER_OVERHEAD + len(name.encode()) + len(header_value.encode())
    return size


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event checked and serialised for the outbox table (what ``publish`` sends)."""

    event_id: UUID
    topic: str
    key: str | None
    type: str
    payload: bytes
    headers: str  # JSON object text, stored as jsonb
    created_at: datetime
    key_hash: int  # key_hash(topic, key), or of (topic, str(event_id)) without a key: the bucket's source

    @property
    def lock_key(self) -> int | None:
        """The advisory lock of (topic, key); None for an event without a key (nothing to order)."""
        return None if self.key is None else self.key_hash


def check_event(event: object, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> PreparedEvent:
    """Validate ``event`` completely and serialise it; nothing touches the database.

    :raises InvalidEventError: naming the first problem found.
    """
    if not isinstance(event, Event):
        raise InvalidEventError(f"expected an outbox.Event (or a list of them), got {type(event).__name__}")
    event_id = event.id
    if not isinstance(event_id, UUID):
        raise InvalidEventError(f"id must be a UUID, not {type(event_id).__name__}")
    problem = (
        topic_problem(event.topic)
        or (None if event.key is None else _text_problem("key", event.key))
        or _text_problem("type", event.type, empty_ok=False)
        or _headers_problem(event.headers)
    )
    if problem is None and not (isinstance(event.created_at, datetime) and event.created_at.tzinfo is not None):
        problem = "created_at must be a timezone-aware datetime (e.g. datetime.now(UTC))"
    if problem:
        raise InvalidEventError(problem, event_id=event_id)
    payload = _payload_json(event.payload, event_id)
    key_bytes = None if event.key is None else event.key.encode()
    size = record_size(key_bytes, payload, event.headers, event.type)
    if size > max_message_bytes:
        raise InvalidEventError(
            f"event is too large: {size} bytes as a record batch (payload {len(payload)} bytes) but topics "
            f"accept at most {max_message_bytes} (max.message.bytes); make the payload smaller, or raise "
            "the topic's max.message.bytes and pass the same value as max_message_bytes",
            event_id=event_id,
        )
    headers = json.dumps(event.headers, ensure_ascii=False, separators=(",", ":")) if event.headers else "{}"
    return PreparedEvent(
        event_id=event_id,
        topic=event.topic,
        key=event.key,
        type=event.type,
        payload=payload,
        headers=headers,
        created_at=event.created_at,
        key_hash=key_hash(event.topic, str(event_id) if event.key is None else event.key),
    )
