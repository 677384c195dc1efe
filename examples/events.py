"""The events the example services exchange (shared by the producer and the consumers)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel

from outbox import Event

__all__ = ["TOPIC", "OrderPayload", "OrderPlaced"]

TOPIC = "orders"


class OrderPayload(BaseModel):
    order_id: int
    customer: str
    #: 1, 2, 3, ... per customer in commit order: consumers can check they saw each customer's
    #: orders in order.
    seq: int
    sku: str
    quantity: int
    total: Decimal
    #: When the order service placed the order (just before its transaction committed).
    placed_at: AwareDatetime


class OrderPlaced(Event):
    """``order.placed`` on topic ``orders``, keyed by customer (so per-customer order holds)."""

    topic: Literal["orders"] = "orders"
    type: Literal["order.placed"] = "order.placed"
    payload: OrderPayload
