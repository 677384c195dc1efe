"""Simulated power cut: damage a SIGKILLed store's data dir the way losing power could have.

The store ran with ``STREAMS_WRITE_LEDGER`` (see ``streams._faults.WriteLedger``), so the ledger
says which writes reached each file since that file's last fsync, and which directory entries
changed since the directory's last fsync. A power cut keeps, for every file, an *arbitrary
subset* of those unsynced writes (disks and the page cache write back pages in any order, and
across files in any order), and may forget directory entries not made durable by a directory
fsync. :func:`power_cut` applies one such outcome, chosen by a seeded RNG, and returns every
decision as a line of text (also logged).

The model, and why:

* Each unsynced write (newest first) is independently **kept**, **dropped** or **torn** (a
  prefix of it survives, cut at a 512-byte sector boundary of the file, since sectors are the
  unit a disk writes atomically). Dropped bytes that overwrote older content get that content
  back (the ledger saved it before the write); dropped bytes that extended the file become
  zeros. Undoing newest-first gives a later write that survived on top of an earlier one that
  did not, i.e. reordering.
* The file size then either stays (probability 0.3: the inode size reached the disk before
  the data, leaving zero-filled holes and a zero tail, as XFS and ext4 with delayed
  allocation can) or shrinks to the end of the last surviving byte past the size at the last
  fsync (the tail that never reached the disk is simply absent).
* A directory entry created (or renamed over) since its directory's last fsync vanishes with
  probability 0.5; a replaced one (``rename`` over an existing name, e.g. ``atomic_write``)
  reverts to the old file's content with probability 0.5. Entries are decided independently,
  which is harsher than an ext4 journal (that commits metadata in order) and like ALICE's
  abstract model.
* fsync and fdatasync count the same; a write racing an fsync counts as unsynced.

Not modelled (said so the gaps are known): truncates are taken as durable at once, deleted
files never come back, the content of a file whose inode is gone is not reconstructed, and
nothing *below* what was synced is ever damaged (that is disk corruption, not a power cut;
tests/e2e/test_torn_tail.py covers it).

``python -m tests.chaos.powercut DATA_DIR LEDGER --seed N`` applies it by hand.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PowerCutReport", "power_cut", "read_ledger"]

logger = logging.getLogger("chaos.powercut")

SECTOR = 512
P_KEEP_SIZE = 0.3
P_VANISH = 0.5
P_REVERT = 0.5
WRITE_FATES = (("keep", 0.4), ("drop", 0.35), ("tear", 0.25))


@dataclass
class _Write:
    seq: int
    path: str
    off: int
    length: int
    size_before: int
    prior: bytes


@dataclass
class LedgerState:
    """What the ledger says was not yet durable when the process died."""

    pending: dict[int, list[_Write]] = field(default_factory=dict)  # inode -> unsynced writes, oldest first
    durable_dirs: dict[str, dict[str, int]] = field(default_factory=dict)  # dir -> name -> inode
    old_content: dict[int, bytes | None] = field(default_factory=dict)  # replaced inode -> content
    lines: int = 0


@dataclass
class PowerCutReport:
    decisions: list[str] = field(default_factory=list)
    writes_kept: int = 0
    writes_dropped: int = 0
    writes_torn: int = 0
    entries_vanished: int = 0
    entries_reverted: int = 0

    def note(self, text: str) -> None:
        self.decisions.append(text)
        logger.info("power cut: %s", text)

    def summary(self) -> str:
        return (
            f"unsynced writes kept/dropped/torn {self.writes_kept}/{self.writes_dropped}/{self.writes_torn}, "
            f"directory entries vanished {self.entries_vanished}, reverted {self.entries_reverted}"
        )


def read_ledger(path: Path) -> LedgerState:
    """Replay the ledger into the set of unsynced writes and the durable directory entries."""
    state = LedgerState()
    started: dict[int, tuple[int, int | None, str | None, dict[str, int] | None]] = {}
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return state
    for seq, line in enumerate(raw.split(b"\n")):
        if not line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            break  # a line the kill cut short: nothing after it happened
        state.lines += 1
        op = doc["op"]
        if op == "w":
            w = _Write(seq, doc["path"], doc["off"], doc["len"], doc["size"], base64.b64decode(doc["prior"]))
            state.pending.setdefault(doc["ino"], []).append(w)
        elif op == "t":
            size = doc["size"]
            kept = []
            for w in state.pending.get(doc["ino"], []):
                if w.off >= size:
                    continue  # the truncate removed it, whatever happened to it
                if w.off + w.length > size:
                    w.length = size - w.off
                w.prior = w.prior[: w.length]
                w.size_before = min(w.size_before, size)
                kept.append(w)
            state.pending[doc["ino"]] = kept
        elif op == "sb":
            started[doc["id"]] = (seq, doc["ino"], None, None)
        elif op == "db":
            started[doc["id"]] = (seq, None, doc["path"], doc["entries"])
        elif op == "se":
            begin = started.pop(doc["id"], None)
            if begin is None:
                continue
            at, ino, dir_path, entries = begin
            if ino is not None:
                state.pending[ino] = [w for w in state.pending.get(ino, []) if w.seq > at]
            elif dir_path is not None and entries is not None:
                state.durable_dirs[dir_path] = entries
        elif op == "dd":
            state.durable_dirs[doc["path"]] = doc["entries"]
        elif op == "r":
            state.old_content[doc["old_ino"]] = base64.b64decode(doc["old"]) if doc["saved"] else None
    return state


def power_cut(data_dir: Path, ledger: Path, rng: random.Random) -> PowerCutReport:
    """Damage ``data_dir`` (its store must be dead) like a power cut at the end of ``ledger``."""
    state = read_ledger(ledger)
    report = PowerCutReport()
    root = os.path.realpath(data_dir)
    reverted = _damage_directories(root, state, rng, report)
    inodes: dict[int, str] = {}
    for directory, _, files in os.walk(root):
        for name in files:
            file_path = os.path.join(directory, name)
            inodes[os.lstat(file_path).st_ino] = file_path
    for ino in sorted(state.pending):
        writes = state.pending[ino]
        path = inodes.get(ino)
        if not writes or path is None or path in reverted:
            continue
        if path != writes[-1].path and not writes[-1].path.endswith(".tmp"):
            report.note(f"skip inode {ino}: written as {writes[-1].path}, now {path} (inode reused?)")
            continue
        _damage_file(path, writes, rng, report)
    report.note(f"summary: {report.summary()} ({state.lines} ledger lines)")
    return report


def _damage_directories(root: str, state: LedgerState, rng: random.Random, report: PowerCutReport) -> set[str]:
    reverted: set[str] = set()
    for directory, dirs, files in os.walk(root, topdown=True):
        durable = state.durable_dirs.get(directory, {})
        for name in sorted([*dirs, *files]):
            path = os.path.join(directory, name)
            try:
                ino = os.lstat(path).st_ino
            except FileNotFoundError:
                continue
            old = durable.get(name)
            if old == ino:
                continue
            if old is None or name in dirs:
                if rng.random() < P_VANISH:
                    report.entries_vanished += 1
                    report.note(f"vanish {path} (created after the last fsync of its directory)")
                    if name in dirs:
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                else:
                    report.note(f"keep new entry {path}")
                continue
            content = state.old_content.get(old)
            if rng.random() < P_REVERT:
                if content is None:
                    report.note(f"cannot revert {path} to inode {old}: its content was not saved; keeping it")
                    continue
                report.entries_reverted += 1
                report.note(f"revert {path} to its replaced content ({len(content)} bytes)")
                with open(path, "r+b") as f:
                    f.truncate(0)
                    f.write(content)
                reverted.add(path)
            else:
                report.note(f"keep replaced entry {path}")
        dirs[:] = sorted(d for d in dirs if os.path.isdir(os.path.join(directory, d)))
    return reverted


def _damage_file(path: str, writes: list[_Write], rng: random.Random, report: PowerCutReport) -> None:
    size_now = os.path.getsize(path)
    base = min(w.size_before for w in writes)  # the size the last fsync made durable, at most
    surviving_end = base
    fates = [name for name, _ in WRITE_FATES]
    weights = [p for _, p in WRITE_FATES]
    with open(path, "r+b") as f:
        for w in reversed(writes):
            end = min(w.off + w.length, size_now)
            if end <= w.off:
                continue
            fate = rng.choices(fates, weights)[0]
            cut = w.off
            if fate == "tear":
                sectors = range((w.off // SECTOR + 1) * SECTOR, end, SECTOR)
                if len(sectors) == 0:
                    fate = "drop"
                else:
                    cut = rng.choice(sectors)
            if fate == "keep":
                report.writes_kept += 1
                surviving_end = max(surviving_end, end)
                continue
            if fate == "tear":
                report.writes_torn += 1
                surviving_end = max(surviving_end, cut)
            else:
                report.writes_dropped += 1
            old_end = min(end, w.size_before)
            if cut < old_end:
                f.seek(cut)
                f.write(w.prior[cut - w.off : old_end - w.off])
            zero_from = max(cut, w.size_before)
            if zero_from < end:
                f.seek(zero_from)
                f.write(bytes(end - zero_from))
            report.note(
                f"{fate} write {os.path.basename(path)}@{w.off}+{w.length}" + (f" at {cut}" if fate == "tear" else "")
            )
        if surviving_end < size_now:
            if rng.random() < P_KEEP_SIZE:
                report.note(f"{os.path.basename(path)}: size {size_now} kept (zero-filled holes)")
            else:
                f.truncate(surviving_end)
                report.note(f"{os.path.basename(path)}: cut from {size_now} to {surviving_end} bytes")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.powercut", description=__doc__.split("\n")[0])
    p.add_argument("data_dir", type=Path)
    p.add_argument("ledger", type=Path)
    p.add_argument("--seed", type=int, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = power_cut(args.data_dir, args.ledger, random.Random(args.seed))
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
