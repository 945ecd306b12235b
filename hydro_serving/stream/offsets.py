"""Which offsets may be committed: the lowest offset of a partition whose record is not finished.

Records of one partition run concurrently (on several lanes) and finish out of order; committing
the highest finished offset would lose the unfinished ones below it after a crash. So each
partition keeps the set of offsets handed out and not yet finished, and its commit point is the
smallest of them (or one past the highest handed out, when none is pending). A record is
"finished" only once its answer or error record is acknowledged by the broker.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable


class PartitionOffsets:
    """Offsets handed out and finished for one partition."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.highest = -1
        self.committed: int | None = None

    def start(self, offset: int) -> None:
        self.pending.add(offset)
        self.highest = max(self.highest, offset)

    def finish(self, offset: int) -> None:
        self.pending.discard(offset)

    def commit_point(self) -> int | None:
        """The offset to commit (Kafka's "next record to read"), or None when nothing was handed out."""
        if self.pending:
            return min(self.pending)
        return self.highest + 1 if self.highest >= 0 else None


class OffsetBook:
    """:class:`PartitionOffsets` per partition key (any hashable, e.g. aiokafka's TopicPartition)."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, PartitionOffsets] = {}

    def start(self, tp: Hashable, offset: int) -> None:
        self._parts.setdefault(tp, PartitionOffsets()).start(offset)

    def finish(self, tp: Hashable, offset: int) -> None:
        part = self._parts.get(tp)
        if part is not None:
            part.finish(offset)

    def pending(self, tps: Iterable[Hashable] | None = None) -> int:
        """How many records are handed out and unfinished (in ``tps``, or everywhere)."""
        keys = self._parts.keys() if tps is None else [tp for tp in tps if tp in self._parts]
        return sum(len(self._parts[tp].pending) for tp in keys)

    def to_commit(self, tps: Iterable[Hashable] | None = None) -> dict[Hashable, int]:
        """Commit points that moved since the last :meth:`committed` (for ``tps``, or all)."""
        keys = list(self._parts) if tps is None else [tp for tp in tps if tp in self._parts]
        out = {}
        for tp in keys:
            part = self._parts[tp]
            point = part.commit_point()
            if point is not None and point != part.committed:
                out[tp] = point
        return out

    def committed(self, offsets: dict[Hashable, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].committed = offset

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Drop partitions no longer assigned (after a rebalance)."""
        for tp in tps:
            self._parts.pop(tp, None)
