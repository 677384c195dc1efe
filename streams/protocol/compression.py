"""Bounded decompression of record-batch payloads (gzip, snappy, lz4, zstd), for validation only.

The store never stores or serves decompressed data; it decompresses a producer's batch once to
check that its records are well formed, as Kafka's LogValidator does. Every decoder here stops at
``limit`` output bytes, so a small hostile batch cannot expand into gigabytes of memory.
"""

from __future__ import annotations

import io
import struct
import zlib

__all__ = ["DecompressionError", "decompress"]

_XERIAL_MAGIC = b"\x82SNAPPY\x00"


class DecompressionError(ValueError):
    """The payload does not decompress with its codec, or expands past the limit."""


def decompress(codec: int, data: bytes | memoryview, limit: int) -> bytes:
    """Decompress ``data`` (Kafka codec id 1-4) to at most ``limit`` bytes."""
    try:
        if codec == 1:
            return _gzip(data, limit)
        if codec == 2:
            return _snappy(bytes(data), limit)
        if codec == 3:
            return _lz4(bytes(data), limit)
        if codec == 4:
            return _zstd(bytes(data), limit)
    except DecompressionError:
        raise
    except Exception as exc:  # each library has its own error types
        raise DecompressionError(f"batch does not decompress: {exc}") from exc
    raise DecompressionError(f"unknown compression codec {codec}")


def _too_large(limit: int) -> DecompressionError:
    return DecompressionError(f"batch decompresses to more than {limit} bytes")


def _gzip(data: bytes | memoryview, limit: int) -> bytes:
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = dec.decompress(data, limit + 1)
    if len(out) > limit or dec.unconsumed_tail:
        raise _too_large(limit)
    if not dec.eof:
        raise DecompressionError("gzip stream is truncated")
    return out


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise DecompressionError("bad snappy length preamble")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _snappy_block(block: bytes, budget: int) -> bytes:
    import snappy  # python-snappy (cramjam backend)

    size, _ = _uvarint(block, 0)
    if size > budget:
        raise _too_large(budget)
    return bytes(snappy.uncompress(block))


def _snappy(data: bytes, limit: int) -> bytes:
    """Raw snappy, or the xerial block framing the Java client and librdkafka write."""
    if not data.startswith(_XERIAL_MAGIC):
        return _snappy_block(data, limit)
    out = bytearray()
    pos = 16
    while pos < len(data):
        if pos + 4 > len(data):
            raise DecompressionError("truncated xerial snappy block header")
        (size,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if size < 0 or pos + size > len(data):
            raise DecompressionError("xerial snappy block runs past the payload")
        out += _snappy_block(data[pos : pos + size], limit - len(out))
        pos += size
    return bytes(out)


def _lz4(data: bytes, limit: int) -> bytes:
    import lz4.frame

    dec = lz4.frame.LZ4FrameDecompressor()
    out = dec.decompress(data, max_length=limit + 1)
    if len(out) > limit or (not dec.eof and not dec.needs_input):
        raise _too_large(limit)
    if not dec.eof:
        raise DecompressionError("lz4 frame is truncated")
    return bytes(out)


def _zstd(data: bytes, limit: int) -> bytes:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    out = reader.read(limit + 1)
    if len(out) > limit:
        raise _too_large(limit)
    return bytes(out)
