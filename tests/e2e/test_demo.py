"""``make demo`` end to end: ``python -m demo`` as a user runs it, with a small event count.

The demo starts its own PostgreSQL, store, relay, orders service and two consumer groups, kills
the relay and a consumer on the way and verifies every effect. These tests check what it promises
its user: the ``verified:`` line with zero counts and exit status 0, and that SIGTERM stops it
with no process left behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from demo._procs import find_postgres_bin_dir
from tests.support._proc import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

_VERIFIED = re.compile(r"^verified: (\d+) events, (\d+) lost, (\d+) duplicate effects, (\d+) out of order$", re.M)


class DemoRun:
    """``python -m demo`` with its output collected line by line (readable while it runs)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None, f"the demo exited with {self.proc.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.output}"
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the demo did not end within {timeout} s:\n{self.output}")
        self._reader.join(10)
        return code

    def work_dir(self) -> Path:
        match = re.search(r"work directory (\S+)", self.output)
        assert match, self.output
        return Path(match.group(1))

    def child_pids(self) -> set[int]:
        pids: set[int] = set()
        for group in re.findall(r"\(pids? ([\d, ]+)\)", self.output):
            pids.update(int(p) for p in group.split(","))
        return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _assert_nothing_left(run: DemoRun, work: Path) -> None:
    pids = run.child_pids()
    assert len(pids) >= 4, run.output  # store, relay, two consumers (and more): the output names them
    deadline = time.monotonic() + 10  # children of the demo's children (postgres backends) end on their own
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)] + _processes_mentioning(str(work))
        if not left:
            return
        time.sleep(0.2)
    pytest.fail(f"processes left behind: {left}\n{run.output}")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OUTBOX_DATABASE_URL", "OUTBOX_DEMO_EVENTS")}
    env.update(extra)
    return env


@pytest.mark.skipif(find_postgres_bin_dir() is None, reason="needs PostgreSQL binaries (the demo starts its own)")
def test_demo_verifies_every_effect_after_crashes_and_leaves_nothing_behind() -> None:
    run = DemoRun(_env(OUTBOX_DEMO_EVENTS="1500"))
    code = run.wait(150)
    assert code == 0, run.output
    verified = _VERIFIED.findall(run.output)
    assert verified == [("1500", "0", "0", "0")], run.output
    assert "relay killed with SIGKILL" in run.output
    assert "relay restarted" in run.output
    assert "email consumer killed with SIGKILL" in run.output
    assert "email consumer restarted" in run.output
    work = run.work_dir()
    _assert_nothing_left(run, work)
    assert not work.exists(), "a good run removes its work directory"


def test_sigterm_stops_the_demo_and_every_process(database_url: str) -> None:
    # OUTBOX_DATABASE_URL: the demo uses this database (its own schemas) instead of starting PostgreSQL.
    run = DemoRun(_env(OUTBOX_DEMO_EVENTS="1000000", OUTBOX_DATABASE_URL=database_url))
    try:
        run.wait_for("orders service placing", 90)
        time.sleep(1.0)
        run.proc.send_signal(signal.SIGTERM)
        code = run.wait(60)
        assert code == 128 + signal.SIGTERM, run.output
        assert "verified:" not in run.output
        work = run.work_dir()
        _assert_nothing_left(run, work)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        match = re.search(r"work directory (\S+)", run.output)
        if match:
            shutil.rmtree(match.group(1), ignore_errors=True)
