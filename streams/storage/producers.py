"""Idempotent-producer state of one partition (Kafka's ``ProducerStateManager``, minus transactions).

Per producer id the partition remembers the current epoch and the metadata of the last five
batches it appended, which is how many in-flight requests an idempotent client may have. A retry
of one of those batches is recognised and answered with its original offsets instead of being
written twice. The state is not persisted: the log is the source of truth, and the partition
rebuilds it at open from batch headers alone, so a retry that arrives after a restart is still
recognised as long as its batch is still in the log.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from streams.protocol.records import NO_PRODUCER_ID, BatchHeader

from .errors import InvalidProducerEpochError, InvalidRecordError, OutOfOrderSequenceError

__all__ = ["MAX_RETAINED_BATCHES", "BatchMetadata", "ProducerState"]

MAX_RETAINED_BATCHES = 5
"""Kafka's max.in.flight.requests.per.connection bound for idempotent producers."""
_INT32_MAX = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclass(slots=True)
class _Entry:
    epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=MAX_RETAINED_BATCHES))

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


class ProducerState:
    """Sequence/epoch bookkeeping for every producer id seen on one partition."""

    def __init__(self, max_producers: int = 10_000) -> None:
        self._max_producers = max_producers
        self._entries: OrderedDict[int, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, header: BatchHeader) -> BatchMetadata | None:
        """Validate a batch about to be appended; return the original if it is a duplicate.

        Raises InvalidProducerEpochError or OutOfOrderSequenceError like Kafka's broker does.
        """
        pid = header.producer_id
        if pid == NO_PRODUCER_ID:
            return None
        if header.base_sequence < 0:
            raise InvalidRecordError(
                f"batch of producer id {pid} has no sequence number ({header.base_sequence}); "
                "an idempotent producer must number its batches",
            )
        entry = self._entries.get(pid)
        if entry is None:
            return None  # unknown producer (new, evicted or its batches were deleted): accept
        epoch = header.producer_epoch
        if epoch < entry.epoch:
            raise InvalidProducerEpochError(
                f"producer id {pid} sent epoch {epoch} but epoch {entry.epoch} is current; "
                "this producer has been fenced by a newer instance and must stop",
            )
        if epoch == entry.epoch:
            last_seq = header.last_sequence
            for batch in entry.batches:
                if batch.first_seq == header.base_sequence and batch.last_seq == last_seq:
                    return batch
            expected = 0 if entry.last_seq == _INT32_MAX else entry.last_seq + 1
            if header.base_sequence != expected:
                raise OutOfOrderSequenceError(
                    f"producer id {pid} epoch {epoch} sent sequence {header.base_sequence}, expected "
                    f"{expected}; a batch was lost in between, the producer must reset its sequence",
                )
        elif header.base_sequence != 0:
            raise OutOfOrderSequenceError(
                f"producer id {pid} started epoch {epoch} at sequence {header.base_sequence}; "
                "a new epoch must start at sequence 0",
            )
        return None

    def update(self, header: BatchHeader, base_offset: int, last_offset: int) -> None:
        """Record an appended (or, at open, a scanned) batch."""
        pid = header.producer_id
        if pid == NO_PRODUCER_ID or header.base_sequence < 0:
            return
        entry = self._entries.get(pid)
        if entry is None:
            entry = self._entries[pid] = _Entry(header.producer_epoch)
            if len(self._entries) > self._max_producers:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(pid)
            if header.producer_epoch > entry.epoch:
                entry.epoch = header.producer_epoch
                entry.batches.clear()
            elif header.producer_epoch < entry.epoch:
                return  # cannot happen for checked appends; ignore stray history at open
        meta = BatchMetadata(header.base_sequence, header.last_sequence, base_offset, last_offset)
        entry.batches.append(meta)

    def epoch_of(self, producer_id: int) -> int | None:
        entry = self._entries.get(producer_id)
        return None if entry is None else entry.epoch
