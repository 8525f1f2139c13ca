"""Helpers for the Arrow record batches that travel through the pipeline (pure).

Every batch carries two provenance columns until it is written: ``__source`` (the seller file)
and ``__row`` (1-based record number in that file, header not counted). They let every dead
letter and every count point back to its source row without a per-row Python object.
"""

import numpy as np
import pyarrow as pa

__all__ = ['ROW', 'SOURCE', 'row_dicts', 'strip_provenance', 'with_provenance']

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
    """The rows at ``indices`` as (source, row, {field: value}) for dead letters."""
    picked = batch.take(pa.array(indices, type=pa.int64())).to_pylist()
    return [(r.pop(SOURCE), r.pop(ROW), r) for r in picked]
