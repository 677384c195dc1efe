"""Shared bench plumbing: client processes, progress on stderr, percentiles, disk probes.

Every load generator runs in its own ``spawn``-ed process (the parent only orchestrates), so one
Python interpreter's GIL is never the ceiling of a figure and no librdkafka thread is ever forked.
Workers connect and warm up, report ``ready``, wait for a common ``go`` and then measure; the
parent aggregates ``count / (last end - first start)`` on the system-wide monotonic clock.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BenchError",
    "PhaseResult",
    "WorkerFn",
    "append_fdatasync",
    "fsync_probe",
    "log",
    "percentile",
    "proc_cpu_seconds",
    "run_workers",
]

_T0 = time.monotonic()

MSG_SIZE = 1024

ReadyFn = Callable[[], None]
WorkerFn = Callable[[dict[str, Any], Any, ReadyFn], dict[str, Any]]


class BenchError(RuntimeError):
    """A phase could not be measured (the message says why); the table shows it as a failure."""


def log(msg: str) -> None:
    """One progress line on stderr, prefixed with the time since the bench started."""
    _clear_progress()
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


_progress_shown = False


def _clear_progress() -> None:
    global _progress_shown
    if _progress_shown:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
        _progress_shown = False


def _show_progress(text: str) -> None:
    global _progress_shown
    if sys.stderr.isatty():
        print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)
        _progress_shown = True
    else:
        print(text, file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (p in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def proc_cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), from /proc; None if unknown."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def system_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (user+nice+system+irq+softirq+steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class PhaseResult:
    """What one measured phase produced."""

    count: int = 0
    seconds: float = 0.0
    nbytes: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float | None = None  # CPU seconds the server used during the phase
    client_cpu: float = 0.0  # CPU seconds all client processes used during the phase
    machine_cpu: float | None = None  # CPU seconds the whole machine used during the phase
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def cpu_text(self) -> str:
        if self.seconds <= 0 or (self.server_cpu is None and not self.client_cpu):
            return ""
        server = f"server {self.server_cpu / self.seconds:.0%}" if self.server_cpu is not None else "server ?"
        text = f"CPU: {server}, clients {self.client_cpu / self.seconds:.0%}"
        if self.machine_cpu is not None:
            other = max(0.0, self.machine_cpu - (self.server_cpu or 0.0) - self.client_cpu)
            text += f", other processes {other / self.seconds:.0%}"
        return text + " (100% = one core)"


def _worker_entry(fn: WorkerFn, args: dict[str, Any], idx: int, counter: Any, go: Any, q: Any) -> None:
    """Runs in the child: call ``fn`` with a ``ready`` hook that reports in and waits for ``go``."""
    cpu0 = [0.0]

    def ready() -> None:
        q.put(("ready", idx, None))
        if not go.wait(300):
            raise BenchError("no go signal from the parent within 300 s")
        cpu0[0] = time.process_time()

    try:
        result = fn(args, counter, ready)
        result["cpu"] = time.process_time() - cpu0[0]
        q.put(("done", idx, result))
    except BaseException:
        q.put(("error", idx, traceback.format_exc()))


def run_workers(
    fn: WorkerFn,
    args_list: Sequence[dict[str, Any]],
    label: str,
    *,
    total: int | None = None,
    timeout: float = 300.0,
    server_pid: int | None = None,
) -> list[dict[str, Any]]:
    """Run ``fn`` once per args in its own process; return their result dicts (after ``go``).

    Each result has ``count``, ``t0``/``t1`` (time.monotonic), ``errors``, optionally ``nbytes``,
    ``lat`` (latencies in seconds) and ``first_error``; ``cpu`` (process CPU after ``go``) is added.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    go = ctx.Event()
    counters = [ctx.Value("q", 0, lock=False) for _ in args_list]
    procs = [
        ctx.Process(target=_worker_entry, args=(fn, a, i, counters[i], go, q), daemon=True, name=f"{label}-{i}")
        for i, a in enumerate(args_list)
    ]
    for p in procs:
        p.start()
    results: dict[int, dict[str, Any]] = {}
    try:
        ready = 0
        deadline = time.monotonic() + 120
        while ready < len(procs):
            first = _get(q, procs, deadline, label)
            if first[0] == "ready":
                ready += 1
            elif first[0] == "error":
                raise BenchError(f"{label}: worker {first[1]} failed before start:\n{first[2]}")
        cpu_before = proc_cpu_seconds(server_pid)
        busy_before = system_busy_seconds()
        started = time.monotonic()
        go.set()
        deadline = started + timeout
        last_show = 0.0
        while len(results) < len(procs):
            msg: tuple[str, int, Any] | None
            try:
                msg = q.get(timeout=0.5)
            except queue.Empty:
                msg = None
            now = time.monotonic()
            if msg is not None:
                if msg[0] == "error":
                    raise BenchError(f"{label}: worker {msg[1]} failed:\n{msg[2]}")
                if msg[0] == "done":
                    results[msg[1]] = msg[2]
            if now > deadline:
                raise BenchError(f"{label}: workers did not finish within {timeout:.0f} s")
            if not any(p.is_alive() for p in procs) and q.empty() and len(results) < len(procs):
                time.sleep(0.2)
                if q.empty():
                    raise BenchError(f"{label}: a worker died without a result (exit codes {[p.exitcode for p in procs]})")
            tty_step = 0.5 if sys.stderr.isatty() else 5.0
            if now - last_show >= tty_step:
                last_show = now
                done = sum(c.value for c in counters)
                elapsed = now - started
                of = f"/{total:,}" if total else ""
                _show_progress(f"    {label}: {done:,}{of} msgs, {done / max(elapsed, 1e-9):,.0f}/s, {elapsed:.1f}s")
        cpu_after = proc_cpu_seconds(server_pid)
        busy = system_busy_seconds() - busy_before
        _clear_progress()
        out = [results[i] for i in range(len(procs))]
        for r in out:
            r["machine_cpu"] = busy
        if cpu_before is not None and cpu_after is not None:
            for r in out:
                r["server_cpu"] = cpu_after - cpu_before
        return out
    finally:
        _clear_progress()
        go.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        with contextlib.suppress(Exception):
            q.close()


def _get(q: Any, procs: Sequence[Any], deadline: float, label: str) -> tuple[str, int, Any]:
    while True:
        try:
            msg: tuple[str, int, Any] = q.get(timeout=0.5)
            return msg
        except queue.Empty:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{label}: workers were not ready within 120 s")
        if not any(p.is_alive() for p in procs) and q.empty():
            raise BenchError(f"{label}: workers exited before they were ready ({[p.exitcode for p in procs]})")


def aggregate(results: Sequence[dict[str, Any]]) -> PhaseResult:
    """Sum counts over workers; the phase lasts from the first worker's start to the last one's end."""
    t0 = min(r["t0"] for r in results)
    t1 = max(r["t1"] for r in results)
    lat: list[float] = []
    for r in results:
        lat.extend(r.get("lat", ()))
    lat.sort()
    errors = sum(r.get("errors", 0) for r in results)
    first = next((r["first_error"] for r in results if r.get("first_error")), "")
    return PhaseResult(
        count=sum(r["count"] for r in results),
        seconds=t1 - t0,
        nbytes=sum(r.get("nbytes", r["count"] * MSG_SIZE) for r in results),
        errors=errors,
        latencies=lat,
        server_cpu=results[0].get("server_cpu"),
        machine_cpu=results[0].get("machine_cpu"),
        client_cpu=sum(r.get("cpu", 0.0) for r in results),
        note=f"first error: {first}" if first else "",
    )


# -- disk -------------------------------------------------------------------------------------


def fsync_probe(directory: Path, seconds: float = 1.0) -> dict[str, float]:
    """Quick fsync cost: 4 KiB append+fdatasync and 8 KiB overwrite+fdatasync, ops/s and median µs."""
    out: dict[str, float] = {}
    path = directory / "fsync-probe.bin"
    for name, size, overwrite in (("append4k", 4096, False), ("overwrite8k", 8192, True)):
        block = os.urandom(size)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if overwrite:
                os.write(fd, block)
                os.fsync(fd)
            times: list[float] = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t = time.perf_counter()
                if overwrite:
                    os.pwrite(fd, block, 0)
                else:
                    os.write(fd, block)
                os.fdatasync(fd)
                times.append(time.perf_counter() - t)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
        out[f"{name}_ops"] = len(times) / sum(times)
        out[f"{name}_p50_us"] = statistics.median(times) * 1e6
    return out


def append_fdatasync(directory: Path, total_bytes: int, max_seconds: float, chunk: int = 1 << 20) -> PhaseResult:
    """The disk's limit for this workload: append 1 MiB chunks of 1 KiB records, fdatasync each."""
    path = directory / "raw-append.bin"
    data = os.urandom(chunk)
    lat: list[float] = []
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    try:
        t0 = time.monotonic()
        end = t0 + max_seconds
        while written < total_bytes and time.monotonic() < end:
            t = time.perf_counter()
            os.write(fd, data)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
            written += chunk
        t1 = time.monotonic()
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    lat.sort()
    return PhaseResult(
        count=written // MSG_SIZE,
        seconds=t1 - t0,
        nbytes=written,
        latencies=lat,
        note=f"{written >> 20} MiB in 1 MiB write+fdatasync; per chunk p50 {percentile(lat, 50) * 1e3:.2f} ms, "
        f"p99 {percentile(lat, 99) * 1e3:.2f} ms",
    )
