"""The stable 64-bit hash behind per-key locks and key buckets.

``key_hash(topic, key)`` is the first 8 bytes of SHA-256 over the UTF-8 bytes of
``topic + ":" + key``, read as a big-endian *signed* 64-bit integer (PostgreSQL's ``bigint``).
A topic name cannot contain ``:`` (Kafka's rules), so the split is unambiguous. The SQL function
``<schema>.<table>_key_hash(topic, key)`` created by the migrations computes the same value,
so code in other languages (or plain SQL) can take the same locks and get the same buckets.

Other advisory locks of the library hash strings with a ``/`` before any ``:`` (for example
``doorbell/outbox.events``); a topic cannot contain ``/``, so they never equal a key's lock.
"""

from __future__ import annotations

import hashlib

__all__ = ["key_hash", "string_hash"]


def string_hash(text: str) -> int:
    """First 8 bytes of SHA-256 of ``text`` (UTF-8), as a signed big-endian 64-bit integer."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def key_hash(topic: str, key: str) -> int:
    """The advisory-lock key of ``(topic, key)``; also what the bucket of a keyed event is computed from."""
    return string_hash(f"{topic}:{key}")
