"""Request and response headers (Kafka header versions 1/2 for requests, 0/1 for responses)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["MalformedRequest", "RequestHeader", "encode_response_header", "parse_request_header", "skip_tagged_fields"]

_FIXED = struct.Struct(">hhih")


class MalformedRequest(ValueError):
    """A request's bytes do not decode as the API and version it claims; the connection closes."""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def _read_uvarint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise MalformedRequest("truncated varint in request header")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise MalformedRequest("varint longer than 5 bytes in request header")


def skip_tagged_fields(buf: bytes | bytearray | memoryview, pos: int) -> int:
    """Skip a tagged-field section (KIP-482), checking every length against what remains."""
    count, pos = _read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = _read_uvarint(buf, pos)
        size, pos = _read_uvarint(buf, pos)
        if pos + size > len(buf):
            raise MalformedRequest("tagged field runs past the end of the request")
        pos += size
    return pos


def parse_request_header(frame: bytes | bytearray | memoryview) -> tuple[RequestHeader, int]:
    """Decode the v1 part of a request header; return it and the offset where the rest starts.

    Whether a v2 header's tagged fields follow depends on the API and version, which only the
    caller knows, so the caller skips them with :func:`skip_tagged_fields`.
    """
    if len(frame) < _FIXED.size:
        raise MalformedRequest(f"request of {len(frame)} bytes is shorter than a request header")
    api_key, api_version, correlation_id, client_len = _FIXED.unpack_from(frame, 0)
    pos = _FIXED.size
    client_id: str | None = None
    if client_len >= 0:
        if pos + client_len > len(frame):
            raise MalformedRequest("client id runs past the end of the request")
        try:
            client_id = bytes(frame[pos : pos + client_len]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedRequest("client id is not valid UTF-8") from exc
        pos += client_len
    elif client_len != -1:
        raise MalformedRequest(f"client id length {client_len} is invalid")
    return RequestHeader(api_key, api_version, correlation_id, client_id), pos


def encode_response_header(correlation_id: int, flexible: bool) -> bytes:
    """Response header v0 (correlation id) or v1 (plus an empty tagged-field section)."""
    head = struct.pack(">i", correlation_id)
    return head + b"\x00" if flexible else head
