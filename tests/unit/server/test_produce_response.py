"""The hand-written ProduceResponse encoder agrees byte for byte with the generated codec."""

from __future__ import annotations

import pytest
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse

from streams.protocol.apis import decode_request, encode_response
from streams.server.broker import encode_produce_response

_P = ProduceResponse.TopicProduceResponse.PartitionProduceResponse


def _request(version: int):
    req = ProduceRequest(transactional_id=None, acks=-1, timeout_ms=1, topic_data=[])
    req.with_header(correlation_id=77, client_id="x")
    return decode_request(bytes(req.encode(version=version, header=True)))


@pytest.mark.parametrize("version", [3, 4, 5, 6, 7, 8])
def test_matches_generic_encoder(version: int) -> None:
    results = [
        ("orders", [(0, 0, 42, 0, None), (3, 45, -1, -1, "sequence gap: expected 7, got 9")]),
        ("ünïcode-topic", [(1, 10, -1, -1, "batch of 2000000 bytes is larger than max.message.bytes")]),
    ]
    request = _request(version)
    generic = ProduceResponse(
        responses=[
            ProduceResponse.TopicProduceResponse(
                name=name,
                partition_responses=[
                    _P(index=i, error_code=e, base_offset=b, log_append_time_ms=-1, log_start_offset=s, error_message=m)
                    for i, e, b, s, m in parts
                ],
            )
            for name, parts in results
        ],
        throttle_time_ms=0,
    )
    assert encode_produce_response(request, results) == encode_response(request, generic)
