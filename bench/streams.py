"""Stream store benchmark: the store against Apache Kafka, NATS JetStream and the raw disk.

Run from the repo root: ``make bench`` or ``.venv/bin/python bench/streams.py [--quick] [--only ...]``.
It prints figures and never asserts on time. Workload: 1 KiB incompressible messages, acks=all,
confluent-kafka clients (nats-py for JetStream), one partition, every client in its own process
on the same machine as the server (see the machine facts it prints first).

Phases per system, in this order:
  produce  batching producers (linger.ms=5, ~1 MB batches; idempotent with --idempotent) write ``--messages`` records
  fetch    one catch-up consumer reads that topic from the beginning with assign()
  1-rec    producers that send ONE record per request (linger.ms=0, batch.num.messages=1,
           5 in flight each, not idempotent: see _kafka_clients.SINGLE) for ``--single-seconds``
  latency  one producer at a fixed 2,000 msg/s (linger.ms=0, not idempotent); produce() -> delivery report
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on sys.path, where this file would shadow the
# ``streams`` package; the repo root goes there instead (``bench.*`` and ``tests.support.*``).
sys.path[:] = [str(_REPO), *(p for p in sys.path if Path(p or ".").resolve() != _REPO / "bench")]

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from bench._util import (  # noqa: E402
    BenchError,
    PhaseResult,
    aggregate,
    append_fdatasync,
    fsync_probe,
    log,
    percentile,
    run_workers,
)

PHASES = ("produce", "single", "fetch", "latency")

# Targets from the issue (this 2-vCPU box, everything co-located, fsync before ack).
TARGET_PRODUCE = 300_000
TARGET_SINGLE = 30_000
TARGET_FETCH = 500_000
TARGET_P99_MS = 5.0
KAFKA_VERSION = "4.2.0"


@dataclass(frozen=True)
class SystemSpec:
    key: str
    label: str
    durability: str


SYSTEMS: dict[str, SystemSpec] = {
    s.key: s
    for s in (
        SystemSpec("store", "stream store, --fsync always", "fdatasync before ack (group commit)"),
        SystemSpec("kafka", f"Apache Kafka {KAFKA_VERSION}, defaults", "no fsync: page cache, OS flushes later"),
        SystemSpec("kafka-flush", f"Apache Kafka {KAFKA_VERSION}, flush.messages=1", "fsync per append (log.flush.interval.messages=1)"),
        SystemSpec("jetstream", "NATS JetStream (file, R1)", "no fsync per message (sync_interval 2 min)"),
        SystemSpec("disk", "raw append+fdatasync, 1 MiB", "fdatasync per 1 MiB chunk: the disk's limit"),
    )
}
ALIASES = {"nats": "jetstream", "kafka-flush1": "kafka-flush", "kafka_flush": "kafka-flush", "raw": "disk"}


@dataclass
class Settings:
    messages: int
    produce_seconds: float
    single_seconds: float
    fetch_seconds: float
    latency_seconds: float
    rate: float
    producers: int
    single_producers: int
    nats_window: int
    warmup_seconds: float
    work_dir: Path
    store_args: list[str]
    profile_store: Path | None
    keep: bool
    own_work_dir: bool = True
    phases: tuple[str, ...] = PHASES
    idempotent: bool = False


@dataclass
class SystemResult:
    spec: SystemSpec
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- running one system ---------------------------------------------------------------------


def _phase(res: SystemResult, name: str, fn: Callable[[], PhaseResult]) -> None:
    label = f"{res.spec.key} {name}"
    log(f"{label}: start")
    try:
        r = fn()
    except Exception as exc:
        msg = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
        res.failures[name] = msg.strip()
        log(f"{label}: FAILED: {msg.strip().splitlines()[-1] if msg.strip() else type(exc).__name__}")
        return
    res.phases[name] = r
    extra = ""
    if r.latencies:
        extra = f", p50 {percentile(r.latencies, 50) * 1e3:.2f} ms, p99 {percentile(r.latencies, 99) * 1e3:.2f} ms"
    errors = f", {r.errors} errors" if r.errors else ""
    log(f"{label}: {r.count:,} msgs in {r.seconds:.2f} s = {r.rate:,.0f} msg/s, {r.mbps:,.1f} MB/s{extra}{errors}; {r.cpu_text()}")


def _kafka_phases(res: SystemResult, bootstrap: str, server_pid: int | None, st: Settings, group_id: str | None) -> None:
    from bench import _kafka_clients as kc

    topics = {"produce": "bench-batched", "single": "bench-single", "latency": "bench-latency", "warmup": "bench-warmup"}
    try:
        kc.create_topics(bootstrap, list(topics.values()))
    except Exception as exc:
        res.notes.append(f"CreateTopics failed ({exc}); relying on auto-create")
        log(f"{res.spec.key}: CreateTopics failed ({exc}); relying on auto-create")
    p = max(1, st.producers)

    def produce() -> PhaseResult:
        share = [st.messages // p + (1 if i < st.messages % p else 0) for i in range(p)]
        args = [
            {"bootstrap": bootstrap, "topic": topics["produce"],
             "conf": kc.BATCHED_IDEMPOTENT if st.idempotent else kc.BATCHED,
             "messages": n, "max_seconds": st.produce_seconds}
            for n in share
        ]
        out = aggregate(run_workers(kc.produce, args, f"{res.spec.key} produce", total=st.messages,
                                    timeout=st.produce_seconds + 180, server_pid=server_pid))
        out.note = f"{p} producer processes, idempotence {'on' if st.idempotent else 'off'}; " + out.note
        return out

    def fetch() -> PhaseResult:
        args = [{"bootstrap": bootstrap, "topic": topics["produce"], "messages": 1 << 62,
                 "max_seconds": st.fetch_seconds, "group_id": group_id}]
        results = run_workers(kc.fetch, args, f"{res.spec.key} fetch", timeout=st.fetch_seconds + 120, server_pid=server_pid)
        return _fetch_result(results, "assign() from the beginning")

    def single() -> PhaseResult:
        n = max(1, st.single_producers)
        procs = min(p, n)
        per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        args = [
            {"bootstrap": bootstrap, "topic": topics["single"], "conf": kc.SINGLE, "messages": 1 << 62,
             "max_seconds": st.single_seconds, "instances": k}
            for k in per
        ]
        out = aggregate(run_workers(kc.produce, args, f"{res.spec.key} 1-rec", timeout=st.single_seconds + 180,
                                    server_pid=server_pid))
        out.note = f"{n} non-idempotent producers x 5 in flight in {procs} processes; " + out.note
        return out

    def latency() -> PhaseResult:
        args = [{"bootstrap": bootstrap, "topic": topics["latency"], "conf": kc.LATENCY, "rate": st.rate,
                 "seconds": st.latency_seconds}]
        return aggregate(run_workers(kc.produce_latency, args, f"{res.spec.key} latency",
                                     timeout=st.latency_seconds + 120, server_pid=server_pid))

    if st.warmup_seconds > 0:
        log(f"{res.spec.key}: warm-up ({st.warmup_seconds:g} s batched + {st.warmup_seconds:g} s one-record, not reported)")
        try:
            for conf, instances in ((kc.BATCHED, 1), (kc.SINGLE, 4)):
                args = [{"bootstrap": bootstrap, "topic": "bench-warmup", "conf": conf, "messages": 1 << 62,
                         "max_seconds": st.warmup_seconds, "instances": instances}] * p
                run_workers(kc.produce, args, f"{res.spec.key} warm-up", timeout=st.warmup_seconds + 120)
        except BenchError as exc:
            res.notes.append(f"warm-up failed: {str(exc).splitlines()[-1]}")
    _run_phases(res, st, {"produce": produce, "fetch": fetch, "single": single, "latency": latency})


def _run_phases(res: SystemResult, st: Settings, fns: dict[str, Callable[[], PhaseResult]]) -> None:
    for name in PHASES:
        if name not in st.phases:
            continue
        if name == "fetch" and "produce" in st.phases and "produce" not in res.phases:
            res.failures["fetch"] = "skipped: the produce phase that fills its topic failed"
            continue
        _phase(res, name, fns[name])


def _nats_phases(res: SystemResult, url: str, server_pid: int | None, st: Settings) -> None:
    from bench import _nats

    _nats.create_streams(url, ["BATCHED", "SINGLE", "LATENCY", "WARMUP"])
    p = max(1, st.producers)
    if st.warmup_seconds > 0:
        log(f"jetstream: warm-up ({st.warmup_seconds:g} s, not reported)")
        args = [{"url": url, "subject": "WARMUP", "mode": "window", "window": st.nats_window, "messages": 1 << 62,
                 "max_seconds": st.warmup_seconds}] * p
        try:
            run_workers(_nats.produce, args, "jetstream warm-up", timeout=st.warmup_seconds + 120)
        except BenchError as exc:
            res.notes.append(f"warm-up failed: {str(exc).splitlines()[-1]}")

    def produce() -> PhaseResult:
        share = [st.messages // p + (1 if i < st.messages % p else 0) for i in range(p)]
        args = [{"url": url, "subject": "BATCHED", "mode": "window", "window": st.nats_window, "messages": n,
                 "max_seconds": st.produce_seconds} for n in share]
        out = aggregate(run_workers(_nats.produce, args, "jetstream produce", total=st.messages,
                                    timeout=st.produce_seconds + 180, server_pid=server_pid))
        out.note = f"{p} processes, publish_async with {st.nats_window} in flight each; " + out.note
        return out

    def fetch() -> PhaseResult:
        args = [{"url": url, "stream": "BATCHED", "subject": "BATCHED", "messages": 1 << 62, "max_seconds": st.fetch_seconds}]
        results = run_workers(_nats.fetch, args, "jetstream fetch", timeout=st.fetch_seconds + 120, server_pid=server_pid)
        return _fetch_result(results, "ordered push consumer (ack none) with a callback")

    def single() -> PhaseResult:
        n = max(1, st.single_producers) * 5  # as many in flight as the Kafka clients' 5 per producer
        procs = min(p, n)
        args = [{"url": url, "subject": "SINGLE", "mode": "await", "concurrency": n // procs, "messages": 1 << 40,
                 "max_seconds": st.single_seconds} for _ in range(procs)]
        out = aggregate(run_workers(_nats.produce, args, "jetstream 1-rec", timeout=st.single_seconds + 180,
                                    server_pid=server_pid))
        out.note = f"{n} publishers awaiting each ack (js.publish) in {procs} processes; " + out.note
        return out

    def latency() -> PhaseResult:
        args = [{"url": url, "subject": "LATENCY", "rate": st.rate, "seconds": st.latency_seconds}]
        return aggregate(run_workers(_nats.produce_latency, args, "jetstream latency",
                                     timeout=st.latency_seconds + 120, server_pid=server_pid))

    _run_phases(res, st, {"produce": produce, "fetch": fetch, "single": single, "latency": latency})


def _fetch_result(results: list[dict[str, Any]], how: str) -> PhaseResult:
    out = aggregate(results)
    r = results[0]
    capped = f", read {r['read']:,} of {r['expected']:,} (time cap)" if r["read"] < r["expected"] else ""
    out.note = (f"{how}; timed from the first delivered batch (start-up to it {r['startup']:.2f} s, "
                f"not counted){capped}; {out.note}")
    return out


def _store_process(st: Settings, work: Path) -> Any:
    from tests.support.store import StoreProcess

    args = ["--fsync", "always", *st.store_args]
    if st.profile_store is None:
        return StoreProcess(work_dir=work, extra_args=args, start_timeout=60)
    profile_out = st.profile_store.resolve()

    class ProfiledStore(StoreProcess):
        def command(self) -> list[str]:
            cmd = super().command()
            return [cmd[0], "-m", "cProfile", "-o", str(profile_out), *cmd[1:]]

    return ProfiledStore(work_dir=work, extra_args=args, start_timeout=60)


def run_system(key: str, st: Settings) -> SystemResult:
    res = SystemResult(SYSTEMS[key])
    work = st.work_dir / key
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        if key == "disk":
            # at least 256 MiB (a few seconds at most), so that the figure is not one cache burst
            size = max(st.messages * 1024, 256 << 20)
            _phase(res, "produce", lambda: append_fdatasync(work, size, min(st.produce_seconds, 10.0)))
        elif key == "store":
            store = _store_process(st, work)
            log("store: starting " + " ".join(store.command()[1:]))
            store.start()
            try:
                _kafka_phases(res, store.bootstrap, store.pid, st, group_id="bench-fetch")
            finally:
                code = store.stop(timeout=60)
                if code not in (0, None):
                    res.notes.append(f"store exited with {code}; log {store.log_path}")
                if st.profile_store is not None:
                    res.notes.append(f"cProfile of the store: {st.profile_store}")
        elif key in ("kafka", "kafka-flush"):
            from tests.support.kafka import KafkaBroker

            props = {"log.flush.interval.messages": "1"} if key == "kafka-flush" else {}
            broker = KafkaBroker(server_properties=props, heap="1g", base_dir=work)
            log(f"{key}: starting Apache Kafka {KAFKA_VERSION} {props or '(defaults)'}")
            broker.start()
            try:
                _kafka_phases(res, broker.bootstrap, broker.pid, st, group_id="bench-fetch")
            finally:
                broker.stop()
                if not st.keep:
                    broker.cleanup()
        elif key == "jetstream":
            from bench._nats import NatsServer

            server = NatsServer(work)
            log(f"jetstream: starting nats-server -js (store {work / 'js'})")
            server.start()
            try:
                _nats_phases(res, server.url, server.pid, st)
            finally:
                server.stop()
    except Exception as exc:
        msg = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
        res.failures["start"] = msg.strip()
        log(f"{key}: FAILED: {msg.strip().splitlines()[-1] if msg.strip() else exc!r}")
    finally:
        if not st.keep:
            shutil.rmtree(work, ignore_errors=True)
    log(f"{key}: done in {time.monotonic() - started:.0f} s")
    return res


# -- machine facts and the table ------------------------------------------------------------------


def machine_facts(st: Settings) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    import confluent_kafka

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    probe = fsync_probe(st.work_dir)
    try:
        nats_py = version("nats-py")
        ck = version("confluent-kafka")
    except PackageNotFoundError:
        nats_py = ck = "not installed"
    from bench._nats import nats_version

    try:
        head = subprocess.run(["git", "-C", str(_REPO), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=False, timeout=10).stdout.strip()
    except OSError:
        head = "?"
    load = os.getloadavg()
    return [
        f"cores: {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable) {cpu_model}; RAM {mem_gib:.0f} GiB; "
        f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"os: {platform.system()} {platform.release()}; python {platform.python_version()}; work dir {st.work_dir} "
        f"({_fs_of(st.work_dir)})",
        f"fsync now: 4 KiB append+fdatasync {probe['append4k_ops']:,.0f}/s (p50 {probe['append4k_p50_us']:.0f} us); "
        f"8 KiB overwrite+fdatasync {probe['overwrite8k_ops']:,.0f}/s (p50 {probe['overwrite8k_p50_us']:.0f} us)",
        f"clients: confluent-kafka {ck} (librdkafka {confluent_kafka.libversion()[0]}), "
        f"nats-py {nats_py}; servers: Apache Kafka {KAFKA_VERSION} (heap 1g), {nats_version()}, store at {head}",
        f"all clients and servers share these {os.cpu_count()} cores: every figure is client+server on one box; "
        f"producers run in {st.producers} processes",
    ]


def _fs_of(path: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, check=False, timeout=10)
        parts = out.stdout.splitlines()[-1].split()
        return f"{parts[1]} on {parts[0]}"
    except (OSError, IndexError):
        return "?"


def _fmt_rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _fmt_mb(v: float | None) -> str:
    return "—" if v is None else f"{v:,.1f}"


def _fmt_ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _metrics(r: SystemResult) -> dict[str, float | None]:
    def get(phase: str, what: Callable[[PhaseResult], float]) -> float | None:
        ph = r.phases.get(phase)
        if ph is None or ph.count == 0:
            return None
        return what(ph)

    return {
        "produce": get("produce", lambda p: p.rate),
        "produce_mb": get("produce", lambda p: p.mbps),
        "single": get("single", lambda p: p.rate),
        "fetch": get("fetch", lambda p: p.rate),
        "fetch_mb": get("fetch", lambda p: p.mbps),
        "p50": get("latency", lambda p: percentile(p.latencies, 50) * 1e3),
        "p99": get("latency", lambda p: percentile(p.latencies, 99) * 1e3),
    }


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    sep = "|-" + "-|-".join("-" * w for w in widths) + "-|"
    return [line(header), sep, *(line(r) for r in rows)]


def report(results: Sequence[SystemResult], st: Settings) -> str:
    header = ["system", "produce msg/s", "MB/s", "1-rec/req msg/s", "fetch msg/s", "MB/s", "lat p50 ms", "lat p99 ms"]
    rows: list[list[str]] = []
    metrics = {r.spec.key: _metrics(r) for r in results}
    for r in results:
        m = metrics[r.spec.key]
        rows.append([r.spec.label, _fmt_rate(m["produce"]), _fmt_mb(m["produce_mb"]), _fmt_rate(m["single"]),
                     _fmt_rate(m["fetch"]), _fmt_mb(m["fetch_mb"]), _fmt_ms(m["p50"]), _fmt_ms(m["p99"])])
    rows.append(["target for the store (issue)", f">= {TARGET_PRODUCE:,}", "", f">= {TARGET_SINGLE:,}",
                 f">= {TARGET_FETCH:,}", "", "", f"<= {TARGET_P99_MS:g}"])
    out = [
        "",
        f"Results: 1 KiB messages, acks=all, 1 partition, {st.rate:,.0f} msg/s for latency; MB = 10^6 payload bytes",
        *_table(rows, header),
    ]
    store = metrics.get("store")
    if store is not None:
        checks = [
            ("produce (batching)", store["produce"], TARGET_PRODUCE, True),
            ("produce (1 record/request)", store["single"], TARGET_SINGLE, True),
            ("fetch per consumer", store["fetch"], TARGET_FETCH, True),
            ("p99 produce latency @ 2,000 msg/s", store["p99"], TARGET_P99_MS, False),
        ]
        out.append("")
        out.append("Store vs targets:")
        for name, value, target, higher in checks:
            if value is None:
                verdict = "not measured"
            else:
                ok = value >= target if higher else value <= target
                unit = " ms" if not higher else " msg/s"
                verdict = f"{'MEETS' if ok else 'MISSES'} ({value:,.2f}{unit} vs {'>=' if higher else '<='} {target:,}{unit})"
            out.append(f"  {name:36s} {verdict}")
        ratio_rows = []
        for key in ("kafka", "kafka-flush", "jetstream", "disk"):
            other = metrics.get(key)
            if other is None:
                continue

            def ratio(a: float | None, b: float | None) -> str:
                return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}x"

            ratio_rows.append([f"store / {SYSTEMS[key].label}", ratio(store["produce"], other["produce"]),
                               ratio(store["single"], other["single"]), ratio(store["fetch"], other["fetch"]),
                               ratio(store["p99"], other["p99"])])
        if ratio_rows:
            out.append("")
            out.append("Ratios (throughput: > 1 means the store is faster; p99 latency: < 1 means the store is lower):")
            out.extend(_table(ratio_rows, ["", "produce", "1-rec/req", "fetch", "p99 latency"]))
    out.append("")
    out.append("Durability and details:")
    for r in results:
        out.append(f"  {r.spec.label}: {r.spec.durability}")
        for name in PHASES:
            ph = r.phases.get(name)
            if ph is not None:
                lat = ""
                if ph.latencies:
                    lat = (f" p99.9 {percentile(ph.latencies, 99.9) * 1e3:.2f} ms, max {ph.latencies[-1] * 1e3:.2f} ms;")
                errs = f" {ph.errors} errors;" if ph.errors else ""
                out.append(f"    {name:8s} {ph.count:,} msgs in {ph.seconds:.2f} s;{lat}{errs} {ph.cpu_text() or '-'}"
                           + (f"; {ph.note.strip('; ')}" if ph.note.strip("; ") else ""))
        for name, msg in r.failures.items():
            first = msg.splitlines()[-1] if msg else ""
            out.append(f"    {name:8s} FAILED: {first}")
        out.extend(f"    note: {n}" for n in r.notes)
    return "\n".join(out)


def print_profile(path: Path, limit: int = 30) -> None:
    """The store's hot spots from its cProfile stats (main thread only: cProfile sees no other thread)."""
    import io
    import pstats

    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).strip_dirs().sort_stats(key).print_stats(limit)
        text = buf.getvalue()
        start = text.find("   ncalls")
        print(f"\nstore profile ({path}), top {limit} by {key}:")
        print(text[start:].rstrip() if start >= 0 else text.rstrip())


# -- CLI ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[list[str], Settings]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SYSTEMS),
                    help=f"comma-separated systems to run, in this order (default: all): {', '.join(SYSTEMS)}")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma-separated phases (default all): {', '.join(PHASES)}; fetch reads what produce wrote")
    ap.add_argument("--messages", type=int, help="records written by the batching producers (default 1,000,000; quick 50,000)")
    ap.add_argument("--idempotent", action="store_true",
                    help="batching producers with enable.idempotence (costs librdkafka ~3x client CPU)")
    ap.add_argument("--quick", action="store_true", help="small counts and short phases: a smoke run of about a minute")
    ap.add_argument("--max-seconds", type=float, help="cap of the batching produce and of the fetch phase (default 30; quick 8)")
    ap.add_argument("--single-seconds", type=float, help="length of the one-record-per-request phase (default 10; quick 3)")
    ap.add_argument("--latency-seconds", type=float, help="length of the latency phase (default 10; quick 3)")
    ap.add_argument("--warmup-seconds", type=float,
                    help="untimed produce before the measured phases, per mode (default 3; quick 1; 0 = none)")
    ap.add_argument("--rate", type=float, default=2000.0, help="msg/s of the latency phase (default 2000)")
    ap.add_argument("--producers", type=int, default=2, help="producer processes (default 2, one per core here)")
    ap.add_argument("--single-producers", type=int, default=8,
                    help="producers (connections, 5 in flight each) of the one-record phase (default 8)")
    ap.add_argument("--nats-window", type=int, default=4000, help="publish_async window per JetStream producer")
    ap.add_argument("--work-dir", type=Path, help="where data dirs go (default: a temp dir on the same disk as /tmp)")
    ap.add_argument("--store-args", default="", help="extra flags for `python -m streams serve` (shell syntax)")
    ap.add_argument("--profile-store", type=Path, help="run the store under cProfile and write its stats to this file")
    ap.add_argument("--keep", action="store_true", help="keep the data dirs")
    a = ap.parse_args(argv)
    only: list[str] = []
    for name in (s.strip().lower() for s in a.only.split(",") if s.strip()):
        key = ALIASES.get(name, name)
        if key not in SYSTEMS:
            ap.error(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
        only.append(key)
    phases = tuple(x.strip() for x in a.phases.split(",") if x.strip())
    if bad := [x for x in phases if x not in PHASES]:
        ap.error(f"unknown phase(s) {bad}; choose from {', '.join(PHASES)}")
    work = a.work_dir.resolve() if a.work_dir else Path(tempfile.mkdtemp(prefix="outbox-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    st = Settings(
        messages=a.messages or (50_000 if a.quick else 1_000_000),
        produce_seconds=a.max_seconds or (8.0 if a.quick else 30.0),
        single_seconds=a.single_seconds or (3.0 if a.quick else 10.0),
        fetch_seconds=a.max_seconds or (8.0 if a.quick else 30.0),
        latency_seconds=a.latency_seconds or (3.0 if a.quick else 10.0),
        rate=a.rate,
        producers=a.producers,
        single_producers=a.single_producers,
        nats_window=a.nats_window,
        warmup_seconds=a.warmup_seconds if a.warmup_seconds is not None else (1.0 if a.quick else 3.0),
        work_dir=work,
        store_args=shlex.split(a.store_args),
        profile_store=a.profile_store,
        keep=a.keep,
        own_work_dir=a.work_dir is None,
        phases=phases,
        idempotent=a.idempotent,
    )
    return only, st


def main(argv: Sequence[str] | None = None) -> int:
    only, st = parse_args(argv)
    started = time.monotonic()
    print("Stream store benchmark (figures only, nothing is asserted)")
    print(f"systems: {', '.join(only)}; {st.messages:,} records per batching produce run "
          f"(cap {st.produce_seconds:g} s), 1-record phase {st.single_seconds:g} s, latency {st.latency_seconds:g} s "
          f"at {st.rate:,.0f} msg/s")
    print("Machine:")
    for line in machine_facts(st):
        print(f"  {line}")
    sys.stdout.flush()
    results: list[SystemResult] = []
    try:
        for key in only:
            results.append(run_system(key, st))
    except KeyboardInterrupt:
        log("interrupted; printing what was measured")
    finally:
        if not st.keep and st.own_work_dir:
            shutil.rmtree(st.work_dir, ignore_errors=True)
    print(report(results, st))
    if st.profile_store is not None and st.profile_store.exists():
        print_profile(st.profile_store)
    print(f"\n(whole run: {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
