"""``python -m tests.chaos.relay_main ARGS...`` = ``outbox relay ARGS...`` with the injected clock.

The chaos campaign starts its relays through this wrapper: it installs :mod:`tests.chaos.clock`
from ``$CHAOS_CLOCK_FILE`` before the relay (and kafka-python) is imported, then hands the same
arguments to the real command-line entry point. :class:`ClockedRelay` is the launcher.
"""

from __future__ import annotations

import sys

from tests.chaos import clock
from tests.support.relay import RelayProcess

__all__ = ["ClockedRelay"]


class ClockedRelay(RelayProcess):
    """A :class:`RelayProcess` run through this module (its ``env`` names the clock file)."""

    def command(self) -> list[str]:
        real = super().command()
        assert real[1:4] == ["-m", "outbox.cli", "relay"], real
        return [self.python, "-m", "tests.chaos.relay_main", *real[4:]]


def main(argv: list[str] | None = None) -> int:
    clock.install()
    from outbox.cli import main as outbox_main  # after the clock is in place

    return outbox_main(["relay", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
