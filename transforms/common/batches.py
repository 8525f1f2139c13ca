"""Helpers for the Arrow record batches that travel through the pipeline, and their coder.

Every batch carries two provenance columns until it is written: ``__source`` (the seller file)
and ``__row`` (1-based record number in that file, header not counted). They let every dead
letter and every count point back to its source row without a per-row Python object.
"""

import apache_beam as beam
import numpy as np
import pyarrow as pa

__all__ = ['ROW', 'SOURCE', 'RecordBatchCoder', 'holding_batches', 'row_dicts', 'strip_provenance',
           'with_provenance']

SOURCE = '__source'
ROW = '__row'


def with_provenance(batch: pa.RecordBatch, source: str, rows: np.ndarray) -> pa.RecordBatch:
    """Append the provenance columns; the source path is dictionary-encoded (one copy)."""
    n = batch.num_rows
    sources = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                             pa.array([source]))
    return pa.RecordBatch.from_arrays(
        list(batch.columns) + [sources, pa.array(rows, type=pa.int64())],
        names=list(batch.schema.names) + [SOURCE, ROW])


def strip_provenance(batch: pa.RecordBatch) -> pa.RecordBatch:
    keep = [i for i, name in enumerate(batch.schema.names) if name not in (SOURCE, ROW)]
    return batch.select(keep)


def row_dicts(batch: pa.RecordBatch, indices) -> list:
    """The rows at ``indices`` as (source, row, {field: value}) for dead letters. A value no
    Python type holds (a date in year 300,000) is kept as its stored number."""
    picked = batch.take(pa.array(indices, type=pa.int64()))
    try:
        rows = picked.to_pylist()
    except (OverflowError, ValueError):
        columns = {name: _python_values(column)
                   for name, column in zip(picked.schema.names, picked.columns)}
        rows = [{name: values[i] for name, values in columns.items()}
                for i in range(picked.num_rows)]
    return [(r.pop(SOURCE), r.pop(ROW), r) for r in rows]


def _python_values(column: pa.Array) -> list:
    try:
        return column.to_pylist()
    except (OverflowError, ValueError):
        return column.cast(pa.int64()).to_pylist()


class RecordBatchCoder(beam.coders.Coder):
    """A record batch as an Arrow IPC stream; the coder of every PCollection of batches.

    Beam measures each step's output by encoding a sample of its elements (the first ten of
    every bundle, then fewer): with the default pickle coder that copied whole batches several
    times per step. ``estimate_size`` reads the batch's buffer sizes instead. Batches are
    encoded for real only if they cross a stage boundary, which the pipeline avoids.
    """

    def encode(self, batch: pa.RecordBatch) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> pa.RecordBatch:
        return pa.ipc.open_stream(encoded).read_next_batch()

    def estimate_size(self, batch: pa.RecordBatch) -> int:
        return batch.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return pa.RecordBatch


beam.coders.registry.register_coder(pa.RecordBatch, RecordBatchCoder)


def holding_batches(pcoll):
    """``pcoll``, declared to hold record batches, so that Beam gives it RecordBatchCoder.

    Set directly because ``novation run`` turns off Beam's type inference, which also ignores
    ``with_output_types``.
    """
    pcoll.element_type = pa.RecordBatch
    return pcoll
