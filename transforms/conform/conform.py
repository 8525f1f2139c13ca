"""Conform: cast each batch to its table's schema; rows that cannot be cast are dead letters."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.common.batches import ROW, SOURCE, holding_batches, row_dicts
from transforms.conform.casting import cast_column
from transforms.common.reasons import DeadLetter

__all__ = ['Conform']


class Conform(beam.PTransform):
    """Typed batches on ``rows``; ``malformed`` and ``missing_required`` rows on ``dead``.

    A dead letter names the fields and what was expected of them, never the value.
    """
    ROWS = 'rows'
    DEAD = 'dead'

    def __init__(self, table):
        super().__init__()
        self._table = table

    def expand(self, batches):
        conformed = batches | 'Cast' >> beam.ParDo(_ConformFn(self._table)).with_outputs(
            self.DEAD, main=self.ROWS)
        holding_batches(conformed[self.ROWS])
        return conformed


def conform_batch(batch: pa.RecordBatch, table, absent=None):
    """Cast ``batch`` to the table schema: (typed batch of good rows, [DeadLetter]).

    ``absent``: field -> boolean mask of the rows that do not carry it (a change feed's
    partial rows): there a required field is not missing, only not sent."""
    schema = table.schema
    columns, problems, missing = [], [], []
    for field in schema.fields:
        result = cast_column(batch.column(field.name), field, zone=table.timezone,
                             null_values=table.null_values)
        columns.append(result.values)
        if result.bad is not None:
            problems.append((field.name, result.bad.to_numpy(zero_copy_only=False),
                             result.expected))
        if not field.nullable:
            empty = pc.is_null(result.values).to_numpy(zero_copy_only=False)
            if absent and field.name in absent:
                empty = empty & ~absent[field.name]
            missing.append((field.name, empty))
    typed = pa.RecordBatch.from_arrays(
        columns + [batch.column(SOURCE), batch.column(ROW)],
        schema=pa.schema(list(schema.arrow_schema) + [batch.schema.field(SOURCE),
                                                      batch.schema.field(ROW)]))
    bad = np.zeros(batch.num_rows, dtype=bool)
    for _, mask, _ in problems:
        bad |= mask
    absent = np.zeros(batch.num_rows, dtype=bool)
    for _, mask in missing:
        absent |= mask
    refused = bad | absent
    if not refused.any():
        return typed, []
    indices = np.flatnonzero(refused)
    dead = []
    for i, (source, row, raw) in zip(indices, row_dicts(batch, indices)):
        if bad[i]:
            fields = [(name, expected) for name, mask, expected in problems if mask[i]]
            reason, problem = 'malformed', '; '.join(f'{n}: expected {e}' for n, e in fields)
        else:
            fields = [(name, None) for name, mask in missing if mask[i]]
            reason, problem = 'missing_required', 'required but empty'
        dead.append(DeadLetter(
            reason=reason, stage='conform', table=table.name, source_file=source, row=row,
            field=', '.join(n for n, _ in fields), problem=problem,
            subject=_text(raw.get(table.subject_key)), raw=raw))
    return typed.filter(pa.array(~refused)), dead


def _text(value):
    return None if value is None else str(value)


class _ConformFn(beam.DoFn):
    def __init__(self, table):
        self._table = table

    def process(self, batch):
        typed, dead = conform_batch(batch, self._table)
        if typed.num_rows:
            yield typed
        for letter in dead:
            yield beam.pvalue.TaggedOutput(Conform.DEAD, letter)
