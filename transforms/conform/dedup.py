"""Duplicates: the same primary key twice in a table becomes ``duplicate_key`` dead letters.

Whether a row is a refused copy is known only once every row's key has been seen, so
``DropDuplicates`` parks the conformed rows in the run's scratch files while it counts their
keys, and takes them back once the duplicated keys are known: the rows wait on disk (encrypted),
not in memory, and the table is read and conformed once. Of each row it keeps a few bytes (the
key, and where the row is) in scratch files split by a hash of the key
(``transforms.common.scratch``), and finds the duplicated keys one partition at a time: memory
follows
a partition, not the table. It then refuses every copy (``keep: none``) or every copy but the
one with the greatest ``order_by`` (``keep: latest``; ties go to the last row read).
"""

import collections

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.common.batches import ROW, SOURCE, holding_batches, row_dicts
from transforms.mask.methods import string_form
from transforms.common.reasons import DeadLetter
from transforms.common.scratch import SPILL_ROWS, Partitions, write_partitions
from transforms.common.sorted_keys import fixed_width, group_starts, keys_of, merge_order, texts

__all__ = ['DropDuplicates', 'KeyFacts', 'duplicate_rows', 'duplicated_keys', 'key_facts']

# A parked file closes once it holds this many rows: with a CSV batch or two per file, the files
# are many and alike, so the workers that take them back get even shares (with four times as
# many rows per file, one of two workers sat idle for the last 2 s of 8 at 1M customers).
PARK_ROWS = 1 << 15


# The duplicate check's view of a batch: its keys as a sorted run (transforms.common.sorted_keys)
# and, when
# the copy to keep is ranked (keep: latest), the rank of each key's row in the same order.
KeyFacts = collections.namedtuple('KeyFacts', 'keys ranks')


def key_facts(batch: pa.RecordBatch, table) -> KeyFacts:
    """The duplicate check's facts of a conformed batch: about (key length + 2) bytes a row, plus
    source, row and order for ``keep: latest``."""
    keys = fixed_width(string_form(batch.column(table.schema.primary_key)))
    order = np.argsort(keys, kind='stable')
    if table.keep_duplicates != 'latest':
        return KeyFacts(keys[order], None)
    source = batch.column(SOURCE)
    if not pa.types.is_dictionary(source.type):  # one path per row would dominate the facts
        source = pc.dictionary_encode(source)
    ranks = {'source': source, 'row': batch.column(ROW)}
    if table.order_by:
        ranks['order'] = batch.column(table.order_by)
    return KeyFacts(keys[order], pa.table(ranks).take(order))


def _merged(facts) -> KeyFacts:
    """One ``KeyFacts`` run from several."""
    if len(facts) == 1:
        return facts[0]
    keys, order = merge_order([f.keys for f in facts])
    if facts[0].ranks is None:
        return KeyFacts(keys, None)
    # One chunk, one dictionary of sources: each partition's file is then one record batch.
    ranks = pa.concat_tables([f.ranks for f in facts])
    return KeyFacts(keys, ranks.take(order).combine_chunks())


def duplicated_keys(facts) -> dict:
    """{duplicated key: (source, row) of the copy to keep, or None} from ``KeyFacts`` runs.

    Only the copies of duplicated keys, a small share, are ranked in Python; the ranks of the
    others are never gathered.
    """
    if not facts:
        return {}
    keys, order = merge_order([f.keys for f in facts])
    starts = group_starts(keys)
    copies = np.diff(np.append(starts, len(keys)))
    if facts[0].ranks is None:
        return dict.fromkeys(texts(keys[starts[copies > 1]]))
    rows = np.flatnonzero(np.repeat(copies > 1, copies))
    ranks = pa.concat_tables([f.ranks for f in facts]).take(pa.array(order[rows]))
    best = {}
    for key, fact in zip(texts(keys[rows]), ranks.to_pylist()):
        rank = _rank(fact)
        if key not in best or rank > best[key]:
            best[key] = rank
    return {key: rank[2:] for key, rank in best.items()}


def _rank(fact):
    """Greatest wins: rows with an order value, then the order, then the last read."""
    order = fact.get('order')
    return (order is not None, order if order is not None else 0, fact['source'], fact['row'])


class _SpillKeyFactsFn(beam.DoFn):
    """Key facts of each batch, merged up to SPILL_ROWS rows at a time and written to scratch by
    partition; outputs ``(partition, path)``."""

    def __init__(self, table, scratch, parts):
        self._table = table
        self._scratch = scratch
        self._parts = parts
        self._facts, self._rows = None, 0

    def start_bundle(self):
        self._facts, self._rows = [], 0

    def process(self, batch):
        self._facts.append(key_facts(batch, self._table))
        self._rows += batch.num_rows
        if self._rows >= SPILL_ROWS:
            yield from self._spill()

    def finish_bundle(self):
        for written in self._spill():
            yield GlobalWindows.windowed_value(written)

    def _spill(self):
        if not self._facts:
            return []
        facts = _merged(self._facts)
        self._facts, self._rows = [], 0
        ranks = {} if facts.ranks is None else dict(zip(facts.ranks.column_names,
                                                        facts.ranks.columns))
        return write_partitions(self._scratch, 'keys', self._parts, facts.keys, ranks)


def _duplicated_in_partition(partition, table, scratch, spilled):
    latest = table.keep_duplicates == 'latest'
    facts = []
    for p, path in spilled:
        if p == partition:
            read = scratch.read(path)
            facts.append(KeyFacts(keys_of(read.column('key')),
                                  read.drop_columns(['key']) if latest else None))
    return duplicated_keys(facts).items()


def duplicate_rows(batch: pa.RecordBatch, table, duplicates: dict) -> np.ndarray:
    """Boolean mask of the rows refused as duplicates."""
    if not duplicates:
        return np.zeros(batch.num_rows, dtype=bool)
    keys = string_form(batch.column(table.schema.primary_key))
    candidates = np.flatnonzero(pc.is_in(keys, pa.array(list(duplicates), pa.string()))
                                .to_numpy(zero_copy_only=False))
    refused = np.zeros(batch.num_rows, dtype=bool)
    if len(candidates):
        at = pa.array(candidates)
        kept = zip(keys.take(at).to_pylist(), batch.column(SOURCE).take(at).to_pylist(),
                   batch.column(ROW).take(at).to_pylist())
        refused[candidates] = [duplicates[key] != (source, row) for key, source, row in kept]
    return refused


class DropDuplicates(beam.PTransform):
    """Conformed batches in; ``rows`` without refused copies, ``dead`` their duplicate_key
    letters.

    ``scratch``: the run's ``transforms.common.scratch.Scratch``; ``parts``: how many partitions the
    keys are split into (``scratch.partitions_for`` the table's size).
    """
    ROWS = 'rows'
    DEAD = 'dead'

    def __init__(self, table, scratch, *, parts=1):
        super().__init__()
        self._table = table
        self._scratch = scratch
        self._parts = parts

    def expand(self, batches):
        spilled = batches | 'SpillKeys' >> beam.ParDo(
            _SpillKeyFactsFn(self._table, self._scratch, self._parts))
        parked = batches | 'Park' >> beam.ParDo(_ParkRowsFn(self._scratch, self._table.name))
        duplicates = (batches.pipeline | 'Partitions' >> Partitions(self._parts)
                      ) | 'Duplicated' >> beam.FlatMap(
            _duplicated_in_partition, self._table, self._scratch, beam.pvalue.AsList(spilled))
        # The Reshuffle ends the stage: rows come back once every key has been counted.
        unparked = holding_batches(parked | 'Spread' >> beam.Reshuffle()
                                   | 'Unpark' >> beam.FlatMap(self._scratch.read_batches))
        unique = unparked | 'Drop' >> beam.ParDo(
            _DropFn(self._table), beam.pvalue.AsDict(duplicates)).with_outputs(
                self.DEAD, main=self.ROWS)
        holding_batches(unique[self.ROWS])
        return unique


class _ParkRowsFn(beam.DoFn):
    """Conformed batches written to scratch files that close at PARK_ROWS rows or more; outputs
    each file's path."""

    def __init__(self, scratch, table_name):
        self._scratch = scratch
        self._prefix = f'rows-{table_name}'
        self._file = None

    def start_bundle(self):
        self._file = None

    def process(self, batch):
        if not batch.num_rows:
            return
        if self._file is not None and not batch.schema.equals(self._file.schema):
            yield self._file.close()
            self._file = None
        if self._file is None:
            self._file = self._scratch.batch_file(self._prefix, batch.schema)
        self._file.write(batch)
        if self._file.rows >= PARK_ROWS:
            yield self._file.close()
            self._file = None

    def finish_bundle(self):
        if self._file is not None:
            yield GlobalWindows.windowed_value(self._file.close())
            self._file = None


class _DropFn(beam.DoFn):
    def __init__(self, table):
        self._table = table

    def process(self, batch, duplicates):
        refused = duplicate_rows(batch, self._table, duplicates)
        if refused.any():
            what = ('copies of this key with a greater ' + self._table.order_by + ' (or read '
                    'later) are kept') if self._table.keep_duplicates == 'latest' \
                else 'every copy of a duplicated key is refused (duplicates: keep none)'
            for source, row, raw in row_dicts(batch, np.flatnonzero(refused)):
                yield beam.pvalue.TaggedOutput(DropDuplicates.DEAD, DeadLetter(
                    reason='duplicate_key', stage='conform', table=self._table.name,
                    source_file=source, row=row, field=self._table.schema.primary_key,
                    problem=what, subject=str(raw[self._table.subject_key]), raw=raw))
            batch = batch.filter(pa.array(~refused))
        if batch.num_rows:
            yield batch
