"""The injected clock of the chaos campaign (tests/chaos/clock.py), in a child process of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.chaos.clock import read_offset, write_offset
from tests.support._proc import REPO_ROOT

CHILD = """
import sys, threading, time
from pathlib import Path
from tests.chaos import clock
path = Path(sys.argv[1])
clock.install(path)
wall = time.time() - clock._real_time()
mono = time.monotonic() - clock._real_monotonic()
wall_ns = time.time_ns() // 10**9 - int(clock._real_time())
clock.write_offset(path, -3600.0, 5.0)  # asks the monotonic clock to go back: refused
clock._refresh(path)
waited = threading.Event().wait(0.001)  # what libfaketime 0.9.10 never returned from
print(round(wall), round(mono), clock.installed_offset()[1], waited, wall_ns)
"""


def test_offsets_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.clock"
    assert read_offset(path) == (0.0, 0.0)
    write_offset(path, -3600.5, 30.0)
    assert read_offset(path) == (-3600.5, 30.0)


def test_child_clocks_are_shifted_and_monotonic_never_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "c.clock"
    write_offset(path, -3600.0, 10.0)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out[:4] == ["-3600", "10", "10.0", "False"]
    assert int(out[4]) in (-3601, -3600)  # time_ns is shifted like time
