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


def key_facts(batch: pa.RecordBatch, table) -> pa.Table:
    """The key pass's view of a conformed batch: key, order (if any), source and row."""
    source = batch.column(SOURCE)
    if not pa.types.is_dictionary(source.type):  # one path per row would dominate the facts
        source = pc.dictionary_encode(source)
    columns = {'key': string_form(batch.column(table.schema.primary_key)), 'source': source,
               'row': batch.column(ROW)}
    if table.order_by:
        columns['order'] = batch.column(table.order_by)
    return pa.table(columns)


class _DuplicatedKeys(beam.CombineFn):
    """Key facts of every row -> {duplicated key: (source, row) of the copy to keep, or None}.

    Facts stay Arrow tables (a few bytes per key) and are counted with one vectorized group-by;
    only the duplicated keys, a small share, are ranked in Python.
    """

    def __init__(self, keep_latest):
        self._keep_latest = keep_latest

    def create_accumulator(self):
        return []

    def add_input(self, acc, facts):
        acc.append(facts)
        return acc

    def merge_accumulators(self, accs):
        return [facts for acc in accs for facts in acc]

    def compact(self, acc):
        return [pa.concat_tables(acc)] if len(acc) > 1 else acc

    def extract_output(self, acc):
        if not acc:
            return {}
        facts = pa.concat_tables(acc)
        counts = facts.group_by('key').aggregate([('key', 'count')])
        duplicated = counts.filter(pc.greater(counts['key_count'], 1)).column('key')
        if not self._keep_latest:
            return dict.fromkeys(duplicated.to_pylist())
        best = {}
        for fact in facts.filter(pc.is_in(facts['key'], duplicated)).to_pylist():
            rank = _rank(fact)
            if fact['key'] not in best or rank > best[fact['key']]:
                best[fact['key']] = rank
        return {key: rank[2:] for key, rank in best.items()}


def _rank(fact):
    """Greatest wins: rows with an order value, then the order, then the last read."""
    order = fact.get('order')
    return (order is not None, order if order is not None else 0, fact['source'], fact['row'])


class DuplicateKeys(beam.PTransform):
    """One dict: {key: (source, row) of the copy to keep, or None to keep none} for every
    duplicated key."""

    def __init__(self, table, *, workers=1):
        super().__init__()
        self._table = table
        self._workers = workers

    def expand(self, pbegin):
        conformed = (pbegin
                     | 'Read' >> ReadTable(self._table, purpose='(key pass)',
                                           workers=self._workers)
                     )[ReadTable.ROWS] | 'Conform' >> Conform(self._table)
        return (conformed[Conform.ROWS]
                | 'Keys' >> beam.Map(key_facts, self._table)
                | 'Count' >> beam.CombineGlobally(
                    _DuplicatedKeys(self._table.keep_duplicates == 'latest')))


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
            _DropFn(self._table), beam.pvalue.AsSingleton(self._duplicates)).with_outputs(
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
