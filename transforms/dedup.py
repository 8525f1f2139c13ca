"""Duplicates: the same primary key twice in a table becomes ``duplicate_key`` dead letters.

``DuplicateKeys`` reads the table a second time (key pass) and keeps one small entry per key, so
memory grows with the number of keys, never with the rows: the main path is not held back in
memory while keys are counted. ``DropDuplicates`` then refuses, in the main path, every copy
(``keep: none``) or every copy but the one with the greatest ``order_by`` (``keep: latest``;
ties go to the last row read).
"""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.batches import ROW, SOURCE, row_dicts
from transforms.conform import Conform
from transforms.masking import string_form
from transforms.read import ReadTable
from transforms.reasons import DeadLetter

__all__ = ['DropDuplicates', 'DuplicateKeys', 'duplicate_rows', 'key_facts']


def key_facts(batch: pa.RecordBatch, table):
    """(key, (has_order, order, source, row)) for each row of a conformed batch."""
    keys = string_form(batch.column(table.schema.primary_key)).to_pylist()
    orders = batch.column(table.order_by).to_pylist() if table.order_by else [None] * len(keys)
    sources = batch.column(SOURCE).to_pylist()
    rows = batch.column(ROW).to_pylist()
    return [(k, (o is not None, o, s, r)) for k, o, s, r in zip(keys, orders, sources, rows)]


class _CountAndBest(beam.CombineFn):
    """(copies, the best (has_order, order, source, row)) of one key."""

    def create_accumulator(self):
        return 0, None

    def add_input(self, acc, fact):
        return acc[0] + 1, fact if acc[1] is None or _rank(fact) > _rank(acc[1]) else acc[1]

    def merge_accumulators(self, accs):
        count, best = 0, None
        for c, b in accs:
            count += c
            if b is not None and (best is None or _rank(b) > _rank(best)):
                best = b
        return count, best

    def extract_output(self, acc):
        return acc


def _rank(fact):
    has_order, order, source, row = fact
    return (has_order, order if has_order else 0, source, row)


class DuplicateKeys(beam.PTransform):
    """{key: (source, row) of the copy to keep, or None to keep none} for duplicated keys."""

    def __init__(self, table):
        super().__init__()
        self._table = table

    def expand(self, pbegin):
        conformed = (pbegin
                     | 'Read' >> ReadTable(self._table, purpose='(key pass)')
                     )[ReadTable.ROWS] | 'Conform' >> Conform(self._table)
        keep_latest = self._table.keep_duplicates == 'latest'
        return (conformed[Conform.ROWS]
                | 'Keys' >> beam.FlatMap(key_facts, self._table)
                | 'Count' >> beam.CombinePerKey(_CountAndBest())
                | 'Duplicated' >> beam.Filter(lambda kv: kv[1][0] > 1)
                | 'Winner' >> beam.Map(
                    lambda kv: (kv[0], kv[1][1][2:] if keep_latest else None)))


def duplicate_rows(batch: pa.RecordBatch, table, duplicates: dict) -> np.ndarray:
    """Boolean mask of the rows refused as duplicates."""
    if not duplicates:
        return np.zeros(batch.num_rows, dtype=bool)
    keys = string_form(batch.column(table.schema.primary_key))
    candidates = np.flatnonzero(pc.is_in(keys, pa.array(list(duplicates), pa.string()))
                                .to_numpy(zero_copy_only=False))
    refused = np.zeros(batch.num_rows, dtype=bool)
    if len(candidates):
        sources = batch.column(SOURCE).to_pylist()
        rows = batch.column(ROW).to_pylist()
        key_list = keys.to_pylist()
        for i in candidates:
            refused[i] = duplicates[key_list[i]] != (sources[i], rows[i])
    return refused


class DropDuplicates(beam.PTransform):
    """Main path: ``rows`` without refused copies, ``dead`` their duplicate_key letters."""
    ROWS = 'rows'
    DEAD = 'dead'

    def __init__(self, table, duplicates):
        super().__init__()
        self._table = table
        self._duplicates = duplicates

    def expand(self, batches):
        return batches | 'Drop' >> beam.ParDo(
            _DropFn(self._table), beam.pvalue.AsDict(self._duplicates)).with_outputs(
                self.DEAD, main=self.ROWS)


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
