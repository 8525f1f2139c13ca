"""Each row's changes in its log's order, once: a change older than one already decided for the
same row is ``superseded``, the same change again a ``repeat``; neither is delivered.

Why the stream, not the acquirer, keeps the order: a MySQL binlog's timestamps are statement
start times at second precision and go backwards along the log, and feed files land late, so
neither commit time nor arrival can order two changes of one row; the log position can, within
the log it belongs to (``Change.source``). Keeping the last position decided for each row (its
table and primary key) costs memory that follows the rows changed, not the changes seen, and
on Dataflow it is keyed state spread over the workers; the acquirer then applies each epoch's
rows in their order with a plain upsert, and a late change can never overwrite a newer one.

``last_order`` and ``verdict`` are pure; ``InKeyOrder`` keys ``Decided`` changes by a shard of
their row and keeps, per shard, ``(table, key) -> (source, position, part, committed_at)`` in an
append-only log (``stream_consent.ShardLogs``). Everything else passes through.
"""

import zlib
from typing import Optional, Tuple

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.transforms.userstate import BagStateSpec

from transforms.keys.crypto import StateCipher
from transforms.stream.consent import Batch, Counted, Decided, ShardLogs

__all__ = ['InKeyOrder', 'SHARDS', 'verdict']

SHARDS = 16  # keys of the key order's state; the most workers that can order at once

Order = Tuple[str, tuple, int, int]  # source, position, part, commit time


def order_of(change) -> Order:
    return (change.source, change.position, change.part, change.committed_at)


def verdict(last: Optional[Order], new: Order) -> Optional[str]:
    """None when ``new`` follows ``last`` (the row's latest change decided), else ``repeat``
    (the same change) or ``superseded`` (older). Within one source the position and part
    order; across sources (a seller who moved a table between logs), the commit time."""
    if last is None:
        return None
    if new[0] == last[0]:
        if new[1:3] == last[1:3]:
            return 'repeat'
        return None if new[1:3] > last[1:3] else 'superseded'
    return 'superseded' if new[3] < last[3] else None


def _apply(rows, records):
    rows.update(records)


def _records(rows):
    return list(rows.items())


class InKeyOrder(beam.PTransform):
    """``Batch``es of decided changes -> the same, without repeats and superseded changes
    (each a ``Counted`` instead). A change refused for consent still counts as decided: its
    repeat is a repeat, not a second dead letter."""

    def __init__(self, *, keys_path: str, run_id: str, shards: int = SHARDS):
        """What the state holds (rows' keys, which can be customer ids) is encrypted with the
        dead-letter key of the keyring at ``keys_path``, bound to ``run_id``."""
        super().__init__()
        self._shards = shards
        self._cipher = StateCipher(keys_path, run_id)

    def expand(self, items):
        return (items
                | 'ByRow' >> beam.FlatMap(_by_row, self._shards).with_output_types(
                    beam.typehints.Tuple[str, beam.typehints.Any])
                | 'Order' >> beam.ParDo(_KeyOrderFn(self._cipher)))


def _row_shard(decided: Decided, shards: int) -> str:
    event = decided.event
    text = f'{event.change.table}\x00{event.key}'
    return str(zlib.crc32(text.encode('utf-8')) % shards)


def _by_row(item, shards):
    if not isinstance(item, Batch) or not any(isinstance(i, Decided) for i in item.items):
        yield '', item
        return
    by_shard, other = {}, []
    for i in item.items:
        if isinstance(i, Decided):
            by_shard.setdefault(_row_shard(i, shards), []).append(i)
        else:
            other.append(i)
    if other:
        yield '', Batch(tuple(other))
    for shard in sorted(by_shard):
        yield shard, Batch(tuple(by_shard[shard]))


class _KeyOrderFn(beam.DoFn):
    LOG = BagStateSpec('log', BytesCoder())

    def __init__(self, cipher):
        self._cipher = cipher
        self._logs = None

    def setup(self):
        self._logs = ShardLogs(_apply, _records, self._cipher, 'key_order')

    def process(self, element, log=beam.DoFn.StateParam(LOG)):
        shard, item = element
        if shard == '':
            yield item
            return
        chunks, rows = self._logs.read(shard, log)
        records, out = [], []
        for decided in item.items:
            event = decided.event
            row = (event.change.table, event.key)
            new = order_of(event.change)
            outcome = verdict(rows.get(row), new)
            if outcome is None:
                rows[row] = new
                records.append((row, new))
                out.append(decided)
            elif event.index >= 0:
                out.append(Counted(event.source, event.line, event.index, outcome,
                                   event.change.committed_at))
            else:  # a key change's old key: the line it came from is counted once
                out.append(Counted(event.source, event.line, event.index, 'part_of_line',
                                   event.change.committed_at))
        self._logs.append(shard, log, chunks, records, rows)
        yield Batch(tuple(out))
