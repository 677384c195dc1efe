"""Admin APIs of the store: topic configs, partition counts, record deletion.

Each handler takes the :class:`~streams.server.broker.Broker` and the decoded request and returns
the response frame parts, like the broker's own handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.protocol.apis import DecodedRequest

    from .broker import Broker, Reply

__all__ = ["ADMIN_HANDLERS"]

ADMIN_HANDLERS: dict[int, Callable[[Broker, DecodedRequest], Reply]] = {}
"""API key -> handler; the broker registers (and advertises) every entry."""
