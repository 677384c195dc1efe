"""Write ``decoder/*.bin``: inputs that once broke (or were written to break) the store's decoder.

Each file holds the raw bytes one connection sends (length-prefixed frames, possibly cut short).
Sources: tests/e2e/test_hostile_input.py (length prefixes, CRC-valid batches with undecodable
records or a false record count, the producer-field batches the fuzzer found — commit 83333db —,
truncated frames), and the codec fuzz finding of commit aa8e3c7 (a mutated header naming another
API whose body then decodes). New findings: add a file by hand (any name, ``.bin``); this script
only (re)writes its own files. Run: ``python -m tests.chaos.corpus.make_decoder_corpus``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import crc32c
from kafka.protocol.metadata.api_versions import ApiVersionsRequest
from kafka.protocol.metadata.metadata import MetadataRequest
from kafka.protocol.producer.produce import ProduceRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from tests.e2e._wire import build_batch, encode_request

OUT = Path(__file__).parent / "decoder"
TS = 1_700_000_000_000


def _produce(records: bytes, version: int = 8, topic: str = "corpus") -> bytes:
    part = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=records)
    req = ProduceRequest(
        transactional_id=None, acks=-1, timeout_ms=1000,
        topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[part])],
    )  # fmt: skip
    return encode_request(req, version, 7)


def _recrc(batch: bytearray) -> bytes:
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch)


def _producer_batch(pid: int, epoch: int, seq: int) -> bytes:
    b = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=pid, producer_epoch=epoch,
        base_sequence=seq, batch_size=1 << 20,
    )  # fmt: skip
    b.append(0, timestamp=TS, key=b"k", value=b"odd producer fields", headers=[])
    return bytes(b.build())


def cases() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for prefix in (2**31 - 1, 2 * 1024**3 - 4, 8 * 1024 * 1024 + 1, -1, -(2**31), -5):
        out[f"length-prefix-{prefix}"] = struct.pack(">i", prefix) + b"\x00\x12\x00\x00"
    good = build_batch([(b"k", b"v" * 30, [])], timestamp=TS)
    bad = bytearray(good)
    bad[61:] = bytes((i * 37 + 11) % 256 for i in range(len(bad) - 61))
    out["crc-valid-undecodable-records"] = _produce(_recrc(bad))
    lie = bytearray(good)
    struct.pack_into(">i", lie, 23, 2)
    struct.pack_into(">i", lie, 57, 3)
    out["crc-valid-record-count-too-high"] = _produce(_recrc(lie))
    crc = bytearray(good)
    crc[-1] ^= 0xFF
    out["bad-crc"] = _produce(bytes(crc))
    huge = bytearray(good)
    struct.pack_into(">i", huge, 8, 2**31 - 1)  # batch length far beyond the bytes present
    out["batch-length-overflow"] = _produce(bytes(huge))
    out["producer-id-without-sequence"] = _produce(_producer_batch(5, 0, -1))
    out["negative-producer-id"] = _produce(_producer_batch(-1_099_511_627_777, 0, -1))
    out["producer-extreme-values"] = _produce(_producer_batch(2**63 - 1, 32767, 2**31 - 1))
    meta = encode_request(MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name="corpus")],
                                          allow_auto_topic_creation=True), 8, 9)  # fmt: skip
    other = bytearray(meta)
    struct.pack_into(">h", other, 4, 18)  # the header now names ApiVersions: another API's body
    out["header-names-another-api"] = bytes(other)
    api = encode_request(ApiVersionsRequest(client_software_name="x", client_software_version="1"), 3, 1)
    out["truncated-frame"] = api[: len(api) // 2]
    bogus_array = bytearray(meta)
    # Metadata v8 body starts with the topics array length (after the header): claim 2**31-1 entries.
    header_len = 4 + 2 + 2 + 4 + 2 + len(b"e2e-wire")
    struct.pack_into(">i", bogus_array, header_len, 2**31 - 1)
    out["array-length-int32-max"] = bytes(bogus_array)
    out["unknown-api-key"] = struct.pack(">ihhih", 10, 9999, 0, 1, -1)
    out["negative-string-length"] = struct.pack(">ihhih", 10, 18, 3, 1, -7)
    out["random-garbage"] = bytes((i * 131 + 7) % 256 for i in range(64))
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in cases().items():
        (OUT / f"{name}.bin").write_bytes(data)
    print(f"wrote {len(cases())} files to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
