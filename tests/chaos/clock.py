"""Injected wall-clock jumps for the chaos campaign's relays and consumer workers (test-only).

A process that calls :func:`install` at start-up (before it imports ``kafka``, ``consumers`` or
``relay``) gets Python's clock functions replaced by the real clocks plus offsets that a daemon
thread re-reads from a per-process file; the campaign rewrites the file (:func:`write_offset`).

- ``time.time``/``time.time_ns`` (the wall clock) step forward and backward, as an NTP step or a
  badly set host clock would. kafka-python 2.x timed its linger, request timeouts, backoffs and
  heartbeats with ``time.time()``; 3.x (installed) moved them all to ``time.monotonic()``.
- ``time.monotonic``/``time.monotonic_ns`` only ever leap *forward*: CLOCK_MONOTONIC never goes
  back on a real machine, but a process can find it far ahead after a VM pause, a host under
  memory pressure or a stopped container — every Python-level deadline (kafka-python's request
  and session timeouts, linger and backoff, asyncio's timers, the relay's and SDK's timers) is
  then due at once while the peers saw no pause. A SIGSTOP does this for real, to the whole
  process; this does it without stopping the process and its heartbeats.

Timeouts C code keeps with CLOCK_MONOTONIC (lock and Event waits, socket timeouts, libpq and
librdkafka) and ``datetime.now()``/``time.localtime()`` are not shifted.

Why not libfaketime (the first attempt, removed): 0.9.10 as packaged fakes CLOCK_MONOTONIC with
the faked *wall* clock (about 1.8e9 s instead of the uptime) and does not intercept
``sem_clockwait``, which CPython >= 3.11 on glibc >= 2.30 uses for every timed lock wait; the
deadline handed to the kernel is then ~56 years ahead, so ``threading.Event().wait(0.001)`` never
returns even at offset +0 (strace: ``futex(..., FUTEX_WAIT_BITSET, ..., {tv_sec=1795813195})``).
With ``FAKETIME_DONT_FAKE_MONOTONIC=1`` the wait works but ``time.sleep`` fails with EINVAL: its
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` deadline is shifted by the wall-clock offset
into negative seconds. The relay that "hung in Event.wait" was libfaketime's doing, not the relay's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

__all__ = ["CLOCK_FILE_ENV", "install", "installed_offset", "read_offset", "write_offset"]

logger = logging.getLogger(__name__)

CLOCK_FILE_ENV = "CHAOS_CLOCK_FILE"

_real_time = time.time
_real_time_ns = time.time_ns
_real_monotonic = time.monotonic
_real_monotonic_ns = time.monotonic_ns
_wall_ns = 0
_mono_ns = 0
_installed: Path | None = None


def read_offset(path: Path) -> tuple[float, float]:
    """``(wall, monotonic)`` offsets in seconds the file holds (0 for what is missing or unreadable)."""
    try:
        parts = path.read_text().split()
        return float(parts[0]) if parts else 0.0, float(parts[1]) if len(parts) > 1 else 0.0
    except (OSError, ValueError):
        return 0.0, 0.0


def write_offset(path: Path, wall: float, monotonic: float = 0.0) -> None:
    """Set the offsets atomically (a reader never sees half a file). ``monotonic`` must not decrease."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{wall:+.3f} {monotonic:+.3f}\n")
    os.replace(tmp, path)


def installed_offset() -> tuple[float, float]:
    """The ``(wall, monotonic)`` offsets this process applies now, in seconds."""
    return _wall_ns / 1e9, _mono_ns / 1e9


def _fake_time() -> float:
    return _real_time() + _wall_ns / 1e9


def _fake_time_ns() -> int:
    return _real_time_ns() + _wall_ns


def _fake_monotonic() -> float:
    return _real_monotonic() + _mono_ns / 1e9


def _fake_monotonic_ns() -> int:
    return _real_monotonic_ns() + _mono_ns


def _refresh(path: Path) -> None:
    global _wall_ns, _mono_ns
    wall, mono = (int(x * 1e9) for x in read_offset(path))
    if wall != _wall_ns:
        logger.warning("clock: wall clock offset %+.3f s -> %+.3f s", _wall_ns / 1e9, wall / 1e9)
        _wall_ns = wall
    if mono > _mono_ns:  # never backwards, whatever the file says
        logger.warning("clock: monotonic clock leaps %+.3f s (offset %+.3f s)", (mono - _mono_ns) / 1e9, mono / 1e9)
        _mono_ns = mono


def _watch(path: Path, interval: float) -> None:
    stop = threading.Event()  # never set: the thread dies with the process
    last: tuple[int, int] | None = None
    while not stop.wait(interval):
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except OSError:
            continue
        if stamp != last:
            last = stamp
            _refresh(path)


def install(path: Path | str | None = None, *, interval: float = 0.05) -> bool:
    """Shift Python's wall and monotonic clocks by the offsets in ``path`` (default: ``$CHAOS_CLOCK_FILE``).

    Returns False (and changes nothing) when no file is named. Idempotent per process.
    """
    global _installed
    if path is None:
        path = os.environ.get(CLOCK_FILE_ENV) or None
    if path is None:
        return False
    path = Path(path)
    if _installed is not None:
        return True
    _installed = path
    _refresh(path)
    time.time = _fake_time
    time.time_ns = _fake_time_ns
    time.monotonic = _fake_monotonic
    time.monotonic_ns = _fake_monotonic_ns
    threading.Thread(target=_watch, args=(path, interval), name="chaos-clock", daemon=True).start()
    return True
