"""Named crash points for fault-injection tests: ``crashpoint("relay.after_ack")`` kills the process.

Disarmed unless a command-line entry point calls :func:`arm` (the ``outbox`` CLI does, from
``OUTBOX_CRASH_POINTS``: ``name[:probability][,name...]``, e.g. ``relay.after_ack:0.05``), so a
production process never pays more than one dict lookup. The process dies by SIGKILL, exactly
like ``kill -9``: no finally blocks, no atexit, no flushed buffers.
"""

from __future__ import annotations

import logging
import os
import random
import signal

__all__ = ["arm", "armed", "crashpoint"]

log = logging.getLogger(__name__)

_armed: dict[str, float] = {}


def arm(spec: str | None) -> None:
    """Arm the crash points named in ``spec`` (``name[:probability],...``; probability default 1)."""
    _armed.clear()
    for item in (spec or "").split(","):
        name, _, probability = item.strip().partition(":")
        if not name:
            continue
        try:
            p = float(probability) if probability else 1.0
        except ValueError:
            raise ValueError(f"crash point {item!r}: probability must be a number from 0 to 1") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"crash point {item!r}: probability must be a number from 0 to 1")
        _armed[name] = p
    if _armed:
        log.warning("crash points armed (tests only): %s", ", ".join(f"{n}:{p}" for n, p in sorted(_armed.items())))


def armed() -> dict[str, float]:
    return dict(_armed)


def crashpoint(name: str) -> None:
    """Die here (SIGKILL) if ``name`` is armed and the dice say so."""
    p = _armed.get(name)
    if p is not None and random.random() < p:
        log.critical("crash point %s: killing this process (SIGKILL)", name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
