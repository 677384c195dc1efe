"""Property test: random appends, syncs, reads, deletions, clean reopens and crashes.

A crash is modelled as power loss: the store is dropped without syncing, then everything past
the fsynced high watermark may be cut anywhere (later segment files vanish) and junk may follow.
After every reopen the log must hold exactly the batches that survived the cut, byte for byte,
with the next append at the right offset and idempotent retries still recognised.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.storage import PartitionLog, Store

from .helpers import make_batch, open_store, read_all

PID = 7

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 4), st.integers(0, 300), st.booleans()),
        st.tuples(st.just("retry"), st.integers(0, 4)),
        st.tuples(st.just("sync")),
        st.tuples(st.just("sync_during_append")),
        st.tuples(st.just("checkpoint")),
        st.tuples(st.just("read"), st.floats(0, 1), st.integers(1, 2000)),
        st.tuples(st.just("delete_records"), st.floats(0, 1)),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("crash"), st.floats(0, 1), st.binary(max_size=100)),
    ),
    max_size=40,
)


@dataclass
class Appended:
    data: bytes
    base: int
    last: int
    seq: tuple[int, int] | None  # (first, last) for the idempotent producer


class Model:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = self._open()
        self.store.create_topic("t", 1, {"segment.bytes": "700"})
        self.batches: list[Appended] = []
        self.hw = 0
        self.log_start = 0
        self.next_seq = 0
        self.tag = 0

    def _open(self) -> Store:
        return open_store(self.root, index_interval_bytes=128)

    @property
    def plog(self) -> PartitionLog:
        return self.store.log("t", 0)

    def end(self) -> int:
        return self.batches[-1].last + 1 if self.batches else self.log_start

    def append(self, count: int, size: int, idempotent: bool) -> None:
        self.tag += 1
        pid, epoch, seq0 = (PID, 0, self.next_seq) if idempotent else (-1, -1, -1)
        batch, header = make_batch(
            count, value_size=size, tag=self.tag, producer_id=pid, epoch=epoch, sequence=seq0
        )
        result = self.plog.append(batch, header, 1_000, 1 << 20)
        assert not result.duplicate
        assert result.base_offset == self.end()
        seq = (self.next_seq, self.next_seq + count - 1) if idempotent else None
        if idempotent:
            self.next_seq += count
        self.batches.append(Appended(bytes(batch), result.base_offset, result.last_offset, seq))

    def retry(self, back: int) -> None:
        # Only batches still in the log: like Kafka, the store rebuilds producer state from the
        # log at open, so a batch deleted (DeleteRecords, retention) before a restart is forgotten.
        mine = [b for b in self.batches if b.seq is not None and b.last >= self.log_start][-5:]
        if not mine:
            return
        original = mine[-1 - back % len(mine)]
        assert original.seq is not None
        count = original.last - original.base + 1
        batch, header = make_batch(count, producer_id=PID, epoch=0, sequence=original.seq[0])
        result = self.plog.append(batch, header, 1_000, 1 << 20)
        assert result.duplicate
        assert (result.base_offset, result.last_offset) == (original.base, original.last)

    def sync(self) -> None:
        self.plog.sync()
        self.hw = self.end()

    def sync_during_append(self) -> None:
        ticket = self.plog.begin_sync()
        captured = self.end()
        self.append(1, 20, False)
        if ticket is not None:
            ticket.run()
            self.plog.finish_sync(ticket)
            self.hw = captured
        assert self.plog.high_watermark == self.hw

    def checkpoint(self) -> None:
        self.store.write_checkpoint()

    def read(self, where: float, max_bytes: int) -> None:
        if self.hw == self.log_start:
            assert self.plog.read(self.hw, max_bytes) is None
            return
        offset = self.log_start + int(where * (self.hw - self.log_start - 1))
        sl = self.plog.read(offset, max_bytes)
        assert sl is not None
        with sl:
            data = sl.read_bytes()
        first = next(i for i, b in enumerate(self.batches) if b.last >= offset)
        expected = b""
        bases = {seg.base_offset for seg in self.plog._segments}  # a read never crosses a segment
        for b in self.batches[first:]:
            if b.last >= self.hw or (expected and (len(expected) + len(b.data) > max_bytes or b.base in bases)):
                break
            expected += b.data
        assert data == expected
        assert sl.first_offset == self.batches[first].base

    def delete_records(self, where: float) -> None:
        target = self.log_start + int(where * (self.hw - self.log_start))
        assert self.plog.delete_records(target) == max(target, self.log_start)
        self.log_start = max(target, self.log_start)

    def present(self) -> list[Appended]:
        return [b for b in self.batches if b.last >= self.log_start]

    def check(self) -> None:
        plog = self.plog
        assert plog.offline_reason is None
        assert plog.log_end_offset == self.end()
        assert plog.high_watermark == self.hw
        assert plog.log_start_offset == self.log_start
        data = read_all(plog)
        first_base = plog._segments[0].base_offset
        assert data == b"".join(b.data for b in self.batches if b.last >= self.log_start and b.last < self.hw)
        assert all(b.base >= first_base or b.last < self.log_start for b in self.batches if b.last < self.hw)

    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()
        self.hw = self.end()
        self.check()

    def crash(self, where: float, junk: bytes) -> None:
        plog = self.plog
        part = plog.path
        segments = [(s.base_offset, s.size) for s in plog._segments]
        hw_seg_index = next(i for i, s in enumerate(plog._segments) if s is plog._hw_segment)
        hw_pos = sum(size for _, size in segments[:hw_seg_index]) + plog._hw_position
        for p in self.store.logs():
            p.close()
        self.store._lock.release()
        total = sum(size for _, size in segments)
        cut = hw_pos + int(where * (total - hw_pos))
        start = 0
        for base, size in segments:
            path = part / f"{base:020d}.log"
            if start + size <= cut and not (start + size == cut and junk):
                pass
            elif start <= cut:
                with path.open("r+b") as f:
                    f.truncate(cut - start)
                    f.seek(0, 2)
                    f.write(junk)
            else:
                path.unlink()
            start += size
        self.store = self._open()
        # Survivors: the batches that end at or before the cut.
        first_base = segments[0][0]
        pos = 0
        survivors = [b for b in self.batches if b.base < first_base]
        for b in self.batches:
            if b.base < first_base:
                continue
            if pos + len(b.data) > cut:
                break
            survivors.append(b)
            pos += len(b.data)
        assert len(survivors) >= len([b for b in self.batches if b.last < self.hw])
        self.batches = survivors
        mine = [b for b in survivors if b.seq is not None]
        self.next_seq = mine[-1].seq[1] + 1 if mine and mine[-1].seq else 0
        self.hw = self.end()
        self.check()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_random_operations_keep_the_log_consistent(operations) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = Model(Path(tmp))
        try:
            for op in operations:
                getattr(model, op[0])(*op[1:])
            model.check()
            model.reopen()
        finally:
            model.store.close()
