"""Mask: apply each field's masking operator to whole batches, keys built once per worker."""

import apache_beam as beam
import pyarrow as pa

from transforms.common.batches import ROW, SOURCE, holding_batches
from transforms.keys.crypto import cached_keyed_ops
from transforms.mask.methods import MaskContext, string_form

__all__ = ['KeyedBatchFn', 'Mask', 'mask_batch']


class Mask(beam.PTransform):
    """Batches in the delivered schema (plus provenance), masked per the table's policy."""

    def __init__(self, table, keys_path):
        super().__init__()
        self._table = table
        self._keys_path = keys_path

    def expand(self, batches):
        return holding_batches(batches | 'Apply' >> beam.ParDo(
            KeyedBatchFn(_masked, self._table, self._keys_path)))


def mask_batch(batch: pa.RecordBatch, table, keyed_ops) -> pa.RecordBatch:
    ctx = MaskContext(keyed_ops=keyed_ops,
                      subjects=string_form(batch.column(table.subject_key)))
    delivered = table.delivered_schema
    columns = [rule.operator.apply(batch.column(rule.field.name), ctx)
               for rule in table.rules if rule.delivered]
    return pa.RecordBatch.from_arrays(
        columns + [batch.column(SOURCE), batch.column(ROW)],
        schema=pa.schema(list(delivered) + [batch.schema.field(SOURCE),
                                            batch.schema.field(ROW)]))


def _masked(batch, table, keyed_ops):
    yield mask_batch(batch, table, keyed_ops)


class KeyedBatchFn(beam.DoFn):
    """``fn(batch, table, keyed_ops)``'s outputs for each batch, the keys opened once per
    worker (in ``setup``)."""

    def __init__(self, fn, table, keys_path):
        self._fn = fn
        self._table = table
        self._keys_path = keys_path
        self._ops = None

    def setup(self):
        self._ops = cached_keyed_ops(self._keys_path)

    def process(self, batch):
        yield from self._fn(batch, self._table, self._ops)
