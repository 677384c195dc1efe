"""Which APIs and versions the store speaks, and the request/response codec for them.

Message bodies are encoded and decoded by kafka-python's classes, which are generated from
Kafka's own JSON message definitions (flexible versions and tagged fields included). This module
owns everything around them: the advertised version ranges (only what the server implements and
tests), the request header, and strict bounds checks — the generated decoders slice without
checking that a declared length fits, so a truncated field is detected here by position.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.protocol.admin.configs import (
    AlterConfigsRequest,
    AlterConfigsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
)
from kafka.protocol.admin.groups import (
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    ListGroupsRequest,
    ListGroupsResponse,
)
from kafka.protocol.admin.topics import (
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteRecordsRequest,
    DeleteRecordsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
)
from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest, FindCoordinatorResponse
from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.protocol.producer.transaction import InitProducerIdRequest, InitProducerIdResponse

from .header import MalformedRequest, RequestHeader, encode_response_header, parse_request_header, skip_tagged_fields

__all__ = [
    "API_VERSIONS_KEY",
    "PRODUCE_KEY",
    "SUPPORTED_APIS",
    "ApiKey",
    "ApiSpec",
    "DecodedRequest",
    "UnsupportedApi",
    "api_versions_error_response",
    "decode_request",
    "encode_response",
    "frame",
]


class ApiKey:
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    INCREMENTAL_ALTER_CONFIGS = 44
    OFFSET_DELETE = 47


PRODUCE_KEY = ApiKey.PRODUCE
API_VERSIONS_KEY = ApiKey.API_VERSIONS


@dataclass(frozen=True, slots=True)
class ApiSpec:
    """An API the store serves: its codec classes and the versions advertised in ApiVersions.

    ``serve_min`` can be above ``min_version``: Produce advertises v0 because librdkafka before
    2.11.1 only enables compression when the broker's minimum is 0 (KAFKA-18659), but v0-2
    (legacy message sets) are refused, as Kafka 4 does.
    """

    key: int
    name: str
    request: Any
    response: Any
    min_version: int
    max_version: int
    serve_min: int

    def flexible(self, version: int) -> bool:
        return bool(self.request.flexible_version_q(version))


def _spec(key: int, request: Any, response: Any, lo: int, hi: int, serve_min: int | None = None) -> ApiSpec:
    return ApiSpec(key, request.name, request, response, lo, hi, lo if serve_min is None else serve_min)


SUPPORTED_APIS: dict[int, ApiSpec] = {
    s.key: s
    for s in (
        _spec(ApiKey.PRODUCE, ProduceRequest, ProduceResponse, 0, 8, serve_min=3),
        _spec(ApiKey.FETCH, FetchRequest, FetchResponse, 4, 11),
        _spec(ApiKey.LIST_OFFSETS, ListOffsetsRequest, ListOffsetsResponse, 1, 5),
        _spec(ApiKey.METADATA, MetadataRequest, MetadataResponse, 0, 8),
        _spec(ApiKey.FIND_COORDINATOR, FindCoordinatorRequest, FindCoordinatorResponse, 0, 2),
        _spec(ApiKey.API_VERSIONS, ApiVersionsRequest, ApiVersionsResponse, 0, 4),
        # Kafka 4 dropped CreateTopics v0-1 and DeleteTopics v0 (and their schemas with them).
        _spec(ApiKey.CREATE_TOPICS, CreateTopicsRequest, CreateTopicsResponse, 2, 4),
        _spec(ApiKey.DELETE_TOPICS, DeleteTopicsRequest, DeleteTopicsResponse, 1, 3),
        _spec(ApiKey.INIT_PRODUCER_ID, InitProducerIdRequest, InitProducerIdResponse, 0, 1),
        # Group coordination and offsets (non-flexible versions; see the README's table).
        _spec(ApiKey.OFFSET_COMMIT, OffsetCommitRequest, OffsetCommitResponse, 2, 7),
        _spec(ApiKey.OFFSET_FETCH, OffsetFetchRequest, OffsetFetchResponse, 1, 5),
        _spec(ApiKey.JOIN_GROUP, JoinGroupRequest, JoinGroupResponse, 0, 5),
        _spec(ApiKey.HEARTBEAT, HeartbeatRequest, HeartbeatResponse, 0, 3),
        _spec(ApiKey.LEAVE_GROUP, LeaveGroupRequest, LeaveGroupResponse, 0, 3),
        _spec(ApiKey.SYNC_GROUP, SyncGroupRequest, SyncGroupResponse, 0, 3),
        _spec(ApiKey.DESCRIBE_GROUPS, DescribeGroupsRequest, DescribeGroupsResponse, 0, 4),
        _spec(ApiKey.LIST_GROUPS, ListGroupsRequest, ListGroupsResponse, 0, 4),
        _spec(ApiKey.DELETE_GROUPS, DeleteGroupsRequest, DeleteGroupsResponse, 0, 1),
        _spec(ApiKey.OFFSET_DELETE, OffsetDeleteRequest, OffsetDeleteResponse, 0, 0),
        # Admin surface.
        _spec(ApiKey.DESCRIBE_CONFIGS, DescribeConfigsRequest, DescribeConfigsResponse, 1, 3),
        _spec(ApiKey.ALTER_CONFIGS, AlterConfigsRequest, AlterConfigsResponse, 0, 1),
        _spec(ApiKey.INCREMENTAL_ALTER_CONFIGS, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, 0, 0),
        _spec(ApiKey.CREATE_PARTITIONS, CreatePartitionsRequest, CreatePartitionsResponse, 0, 1),
        _spec(ApiKey.DELETE_RECORDS, DeleteRecordsRequest, DeleteRecordsResponse, 0, 1),
    )
}

_DECODE_ERRORS = (struct.error, IndexError, ValueError, UnicodeDecodeError, TypeError, OverflowError, KeyError)


class UnsupportedApi(MalformedRequest):
    """The request names an API or version the store does not serve."""

    def __init__(self, header: RequestHeader, message: str) -> None:
        super().__init__(message)
        self.header = header


@dataclass(slots=True)
class DecodedRequest:
    header: RequestHeader
    spec: ApiSpec
    body: Any
    peer: str = ""
    """``host:port`` of the client (set by the server; shown by DescribeGroups)."""

    @property
    def version(self) -> int:
        return self.header.api_version

    @property
    def flexible(self) -> bool:
        return self.spec.flexible(self.header.api_version)


_decoders: dict[tuple[int, int], Callable[[memoryview, int], tuple[Any, int]]] = {}


def _decoder(spec: ApiSpec, version: int) -> Callable[[memoryview, int], tuple[Any, int]]:
    fn = _decoders.get((spec.key, version))
    if fn is None:
        flexible = spec.flexible(version)
        fn = spec.request._struct.compiled_decode_from(
            version, compact=flexible, tagged=flexible, data_class=spec.request
        )
        _decoders[(spec.key, version)] = fn
    return fn


def decode_request(frame_body: bytes | bytearray | memoryview, served: frozenset[int] | None = None) -> DecodedRequest:
    """Decode one request frame (without its length prefix).

    Raises :class:`UnsupportedApi` for an API/version outside the served ranges (except that an
    ApiVersions request of any version is answered, see :func:`api_versions_error_response`) and
    :class:`MalformedRequest` for bytes that do not decode.
    """
    header, pos = parse_request_header(frame_body)
    spec = SUPPORTED_APIS.get(header.api_key)
    if spec is None or (served is not None and header.api_key not in served):
        raise UnsupportedApi(header, f"API key {header.api_key} is not supported by this store")
    version = header.api_version
    if not spec.serve_min <= version <= spec.max_version:
        raise UnsupportedApi(
            header,
            f"{spec.name} v{version} is not supported (this store serves v{spec.serve_min}-{spec.max_version})",
        )
    view = memoryview(frame_body)
    try:
        if spec.flexible(version):
            pos = skip_tagged_fields(view, pos)
        body, end = _decoder(spec, version)(view, pos)
    except MalformedRequest:
        raise
    except _DECODE_ERRORS as exc:
        raise MalformedRequest(f"{spec.name} v{version} request does not decode: {exc}") from exc
    if end > len(view):
        raise MalformedRequest(f"{spec.name} v{version} request declares fields past its end")
    _check_nulls(spec.request._struct, body, version, spec.name)
    return DecodedRequest(header, spec, body)


def _nullable(field: Any, version: int) -> bool:
    scalar = field.type_str not in ("string", "bytes", "records") and not field.type_str.startswith("[]")
    if scalar and not getattr(field, "_fields", None):
        return True  # numbers and bit fields: the codec gives None a meaning of its own
    versions = field._nullable_versions
    return versions is not None and versions[0] <= version <= versions[1]


_Plan = list[tuple[str, str, bool, Any]]
_plans: dict[tuple[int, int], _Plan] = {}


def _plan(struct: Any, version: int) -> _Plan:
    """(attribute, wire name, nullable, nested struct or None) per field, computed once."""
    key = (id(struct), version)
    plan = _plans.get(key)
    if plan is None:
        plan = []
        for field in struct.untagged_fields(version):
            inner = getattr(field, "array_of", None)
            if inner is None or not hasattr(inner, "untagged_fields"):
                inner = field if hasattr(field, "untagged_fields") and field._fields else None
            plan.append((field.name, field._name, _nullable(field, version), inner))
        _plans[key] = plan
    return plan


def _check_nulls(struct: Any, obj: Any, version: int, where: str) -> None:
    """Reject a null in a field that is not nullable in this version, as Kafka's parser does.

    The generated decoder accepts a -1 length anywhere, so without this a hostile request could
    hand handlers a None where the schema promises a list or a string.
    """
    for name, wire_name, nullable, inner in _plan(struct, version):
        value = getattr(obj, name, None)
        if value is None:
            if not nullable:
                raise MalformedRequest(f"{where}: non-nullable field {wire_name} is null")
        elif inner is not None:
            if isinstance(value, list):
                for item in value:
                    _check_nulls(inner, item, version, f"{where}.{wire_name}")
            else:
                _check_nulls(inner, value, version, f"{where}.{wire_name}")


def frame(parts: bytes) -> bytes:
    return struct.pack(">i", len(parts)) + parts


def encode_response(request: DecodedRequest, response: Any) -> bytes:
    """A complete response frame (length prefix, header, body) for ``request``."""
    version = request.version
    # ApiVersions responses always use header v0, even for flexible versions (KIP-511).
    flexible_header = request.flexible and request.spec.key != ApiKey.API_VERSIONS
    # A None in a field that is not nullable in this version would be written as length -1, which
    # strict clients (the Java client) refuse to parse: catch it here, loudly, as a server bug.
    _check_nulls(response._struct, response, version, type(response).__name__)
    body = response.encode(version=version)
    return frame(encode_response_header(request.header.correlation_id, flexible_header) + body)


def api_versions_entries(served: frozenset[int] | None = None) -> list[Any]:
    """The ApiVersions list: every API in ``served`` (default: every API with a codec)."""
    return [
        ApiVersionsResponse.ApiVersion(api_key=s.key, min_version=s.min_version, max_version=s.max_version)
        for s in sorted(SUPPORTED_APIS.values(), key=lambda s: s.key)
        if served is None or s.key in served
    ]


def api_versions_error_response(correlation_id: int, served: frozenset[int] | None = None) -> bytes:
    """Kafka's answer to an ApiVersions version it does not know: a v0 body with error 35.

    Clients (librdkafka, the Java client, kafka-python 3) then retry with the highest version in
    the enclosed list.
    """
    body = ApiVersionsResponse(error_code=35, api_keys=api_versions_entries(served)).encode(version=0)
    return frame(encode_response_header(correlation_id, False) + body)
