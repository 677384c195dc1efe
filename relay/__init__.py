"""The relay: moves committed outbox rows to the stream store or Kafka, in per-key commit order.

::

    from relay import Relay, RelayConfig

    Relay(RelayConfig(database_url="postgresql://...", bootstrap_servers="127.0.0.1:9092")).run()

or ``outbox relay --database-url ... --bootstrap-servers ...``. See ``relay/app.py`` for the loop,
``relay/leadership.py`` for bucket ownership and fencing, ``outbox/doorbell.py`` for the wake-up.
"""

from relay.app import Relay
from relay.config import RelayConfig
from relay.errors import ConfigError, PublishError, RelayError
from relay.metrics import RelayMetrics
from relay.status import Status, format_status, read_status

__all__ = [
    "ConfigError",
    "PublishError",
    "Relay",
    "RelayConfig",
    "RelayError",
    "RelayMetrics",
    "Status",
    "format_status",
    "read_status",
]
