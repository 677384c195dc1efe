"""Records as handlers see them: decoding the relay's format, record identity, handler dispatch."""

from __future__ import annotations

import builtins
import dataclasses
import inspect
import json
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydantic

from consumers.errors import ConsumerError, HandlerError
from outbox.events import RESERVED_HEADERS, Event

__all__ = [
    "IDENTITY_NAMESPACE",
    "ConsumedEvent",
    "HandlerSpec",
    "decode_record",
    "identity_id",
]

#: Namespace of the UUIDs that stand for records without a UUID ``event-id`` header:
#: ``uuid5(IDENTITY_NAMESPACE, "topic/partition/offset")`` (or of the header's text).
IDENTITY_NAMESPACE = uuid.UUID("6f0d3c1e-8a57-4c1b-9d2e-0b7a5e4f3c21")


def identity_id(topic: str, partition: int, offset: int) -> uuid.UUID:
    """The id of a record that carries no ``event-id`` header: its position in the log."""
    return uuid.uuid5(IDENTITY_NAMESPACE, f"{topic}/{partition}/{offset}")


@dataclass(frozen=True, slots=True)
class ConsumedEvent:
    """One record, as a handler receives it.

    ``id`` and ``type`` come from the relay's ``event-id`` and ``event-type`` headers. A record from
    another producer has no ``event-id``: its ``id`` is derived from its position
    (:func:`identity_id`) and ``has_event_id`` is False; its ``type`` is the ``event-type`` header or
    None. ``payload`` is the record value parsed as JSON (None for a null value); a value that is not
    JSON is left as ``bytes`` unless the record says ``content-type: application/json``, in which
    case handing it to a handler fails (a failed attempt). ``headers`` are the record's headers
    without the relay's three, decoded as UTF-8.
    """

    id: uuid.UUID
    key: str | None
    type: str | None
    payload: Any
    headers: Mapping[str, str]
    topic: str
    partition: int
    offset: int
    timestamp: datetime
    has_event_id: bool = True
    value: bytes | None = field(default=None, repr=False)
    raw_headers: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    key_bytes: bytes | None = field(default=None, repr=False)
    problem: str | None = field(default=None, repr=False)

    def as_event(self, model: builtins.type[Event]) -> Event:
        """Validate this record into ``model`` (an :class:`outbox.Event` subclass).

        :raises HandlerError: the record is not a valid ``model`` (counts as a failed attempt).
        """
        if self.problem is not None:
            raise HandlerError(self.problem)
        data = {
            "id": self.id,
            "topic": self.topic,
            "key": self.key,
            "type": self.type,
            "payload": self.payload,
            "headers": dict(self.headers),
            "created_at": self.timestamp,
        }
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise HandlerError(
                f"record {self.topic}/{self.partition}@{self.offset} is not a valid {model.__name__}: {exc}"
            ) from exc


_json_decode = json.JSONDecoder().decode
_new_event = object.__new__
_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(ConsumedEvent))
#: The slots' own setters: building a frozen event without its ``__init__``'s per-field
#: ``object.__setattr__`` calls (decoding runs once per record, so this is on the hot path).
_EVENT_SETTERS = tuple(ConsumedEvent.__dict__[name].__set__ for name in _EVENT_FIELDS)


_UUID = uuid.UUID
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_set_attr = object.__setattr__


def _parse_uuid(text: str) -> uuid.UUID:
    """``uuid.UUID(text)``, a few times faster for the canonical 36-character form the relay writes
    (same value, same errors: ``UUID.__init__`` does the same ``int(hex, 16)``)."""
    if len(text) != 36 or text[8] != "-" or text[13] != "-" or text[18] != "-" or text[23] != "-":
        return _UUID(text)
    value = int(text.replace("-", ""), 16)
    if value >> 128:
        return _UUID(text)
    event_id = _new_event(_UUID)
    _set_attr(event_id, "int", value)
    _set_attr(event_id, "is_safe", _SAFE_UNKNOWN)
    return event_id


def _parse_json(value: bytes) -> Any:
    """``json.loads(value)``, with a fast path for the common case: UTF-8 text without a BOM."""
    try:
        return _json_decode(value.decode())
    except ValueError:  # not UTF-8, a BOM, UTF-16/32, or not JSON: let json.loads decide
        return json.loads(value)


def decode_record(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> ConsumedEvent:
    """Decode one record; never raises (problems are kept and raised when a handler needs the event)."""
    problems: list[str] = []
    plain: dict[str, str] = {}
    event_id_text: str | None = None
    event_type: str | None = None
    content_type: str | None = None
    raw_headers: tuple[tuple[str, bytes], ...] = ()
    if headers:
        raw_headers = tuple((name, raw if raw is not None else b"") for name, raw in headers)
        for name, raw in raw_headers:
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                problems.append(f"header {name!r} is not valid UTF-8")
                continue
            lowered = name.lower()
            if lowered == "event-id":
                event_id_text = text
            elif lowered == "event-type":
                event_type = text
            elif lowered == "content-type":
                content_type = text
            elif lowered not in RESERVED_HEADERS:
                plain[name] = text
    if event_id_text is None:
        has_id = False
        event_id = identity_id(topic, partition, offset)
    else:
        has_id = True
        try:
            event_id = _parse_uuid(event_id_text)
        except ValueError:
            event_id = uuid.uuid5(IDENTITY_NAMESPACE, event_id_text)
    key_text: str | None = None
    if key is not None:
        try:
            key_text = key.decode()
        except UnicodeDecodeError:
            problems.append("record key is not valid UTF-8")
    payload: Any = None
    if value is not None:
        try:
            payload = _parse_json(value)
        except ValueError as exc:
            if content_type is not None and content_type.split(";")[0].strip() == "application/json":
                problems.append(f"record value is not the JSON its content-type promises: {exc}")
            payload = value
    event = _new_event(ConsumedEvent)
    for setter, field_value in zip(
        _EVENT_SETTERS,
        (
            event_id,
            key_text,
            event_type,
            payload,
            plain,
            topic,
            partition,
            offset,
            datetime.fromtimestamp(max(timestamp_ms, 0) / 1000, tz=UTC),
            has_id,
            value,
            raw_headers,
            key,
            (f"record {topic}/{partition}@{offset}: " + "; ".join(problems)) if problems else None,
        ),
        strict=True,
    ):
        setter(event, field_value)
    return event


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler and how to call it."""

    func: Callable[..., Any]
    model: type[Event] | None
    is_async: bool
    batch: bool = False  # called as func(events, conn) with a list of consecutive records of its type

    def argument(self, event: ConsumedEvent) -> Any:
        """What the handler gets as its first argument (validated model or the event itself)."""
        if self.model is not None:
            return event.as_event(self.model)
        if event.problem is not None:
            raise HandlerError(event.problem)
        return event


def batch_argument(event: ConsumedEvent) -> ConsumedEvent:
    """``event`` as an element of a batch handler's list (a record that cannot be decoded fails alone)."""
    if event.problem is not None:
        raise HandlerError(event.problem)
    return event


def handler_spec(func: Callable[..., Any], *, want_async: bool, batch: bool = False) -> HandlerSpec:
    """Inspect a handler: its first parameter's annotation may name an ``outbox.Event`` subclass
    (a batch handler's first parameter is a list of :class:`ConsumedEvent`: no model)."""
    if not callable(func):
        raise ConsumerError(f"a handler must be callable, got {type(func).__name__}")
    is_async = inspect.iscoroutinefunction(func)
    if want_async and not is_async:
        raise ConsumerError(
            f"AsyncConsumer handlers must be `async def` functions; {getattr(func, '__name__', func)!r} is not "
            "(use Consumer for plain functions)"
        )
    if not want_async and is_async:
        raise ConsumerError(
            f"{getattr(func, '__name__', func)!r} is an `async def` function: use AsyncConsumer for async "
            "handlers, or make it a plain function"
        )
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ConsumerError(f"cannot inspect handler {func!r}: {exc}") from exc
    if len(params) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params):
        what = "(events, conn): a list of events" if batch else "(event, conn): the event"
        raise ConsumerError(
            f"handler {getattr(func, '__name__', func)!r} must take two arguments, {what} and "
            "the database connection inside the open transaction"
        )
    if batch:
        return HandlerSpec(func=func, model=None, is_async=is_async, batch=True)
    model: type[Event] | None = None
    if params and params[0].annotation is not inspect.Parameter.empty:
        first = params[0]
        try:
            hint = typing.get_type_hints(func).get(first.name)
        except Exception as exc:
            text = first.annotation if isinstance(first.annotation, str) else ""
            if text.split(".")[-1] in ("ConsumedEvent", "Any", "object"):
                hint = None  # e.g. imported under TYPE_CHECKING: no model wanted
            else:
                raise ConsumerError(
                    f"cannot resolve the annotation {first.annotation!r} of the first parameter of handler "
                    f"{getattr(func, '__name__', func)!r} ({exc}): define the event model at module level so it "
                    "can be validated into"
                ) from exc
        if isinstance(hint, type) and issubclass(hint, Event):
            model = hint
    return HandlerSpec(func=func, model=model, is_async=is_async)
