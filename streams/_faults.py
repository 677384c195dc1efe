"""Named fault points for fault-injection tests (the store's twin of ``outbox._faults``).

``crashpoint(name)`` kills the process with SIGKILL (no finally blocks, no flushed buffers);
``failpoint(name, errno)`` raises ``OSError(errno)`` as if the system call had failed. Both are
disarmed unless ``python -m streams serve`` arms them from ``STREAMS_CRASH_POINTS``
(``name[:probability][,name...]``, e.g. ``storage.mid_append:0.01,storage.fsync_eio:0.001``), so a
production process pays one dict lookup per point.
"""

from __future__ import annotations

import logging
import os
import random
import signal

__all__ = ["arm", "armed", "crashpoint", "failpoint"]

log = logging.getLogger(__name__)

_armed: dict[str, float] = {}


def arm(spec: str | None) -> None:
    """Arm the points named in ``spec`` (``name[:probability],...``; probability default 1)."""
    _armed.clear()
    for item in (spec or "").split(","):
        name, _, probability = item.strip().partition(":")
        if not name:
            continue
        try:
            p = float(probability) if probability else 1.0
        except ValueError:
            raise ValueError(f"fault point {item!r}: probability must be a number from 0 to 1") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault point {item!r}: probability must be a number from 0 to 1")
        _armed[name] = p
    if _armed:
        log.warning("fault points armed (tests only): %s", ", ".join(f"{n}:{p}" for n, p in sorted(_armed.items())))


def armed() -> dict[str, float]:
    return dict(_armed)


def _fires(name: str) -> bool:
    p = _armed.get(name)
    return p is not None and random.random() < p


def crashpoint(name: str, detail: str = "") -> None:
    """Die here (SIGKILL) if ``name`` is armed and the dice say so; ``detail`` goes to the log first."""
    if _armed and _fires(name):
        log.critical("crash point %s: killing this process (SIGKILL) %s", name, detail)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def failpoint(name: str, errno: int) -> None:
    """Raise ``OSError(errno)`` here if ``name`` is armed and the dice say so."""
    if _armed and _fires(name):
        log.warning("fault point %s: injecting %s", name, os.strerror(errno))
        raise OSError(errno, f"{os.strerror(errno)} (injected by fault point {name})")
