"""Sorted fixed-width keys: per-key state for tens of millions of keys in a few bytes each.

A string key becomes a fixed-width byte string (its UTF-8, then a 0x01 terminator, so NumPy's zero
padding loses no byte and no key is a prefix of another); an array of them sorts, searches and
compares in NumPy without a Python object per key. Parts built apart (batches, byte ranges of a
file) are kept sorted, so merging them is a stable sort over already sorted runs, which is fast,
and the result stays a few arrays rather than a hash table of strings. State too large for one
process is split into partitions by a hash of the key (``partition_of``), each merged alone.
"""

from typing import Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['fit_width', 'fixed_width', 'group_starts', 'key_column', 'keys_of', 'merge_order',
           'merge_runs', 'partition_of', 'sorted_run', 'split_by_partition', 'split_rows',
           'split_table',
           'string_hashes', 'texts']

_CHUNK = 1 << 18  # keys per step: bounds the temporary index arrays


def fixed_width(strings: pa.Array) -> np.ndarray:
    """The keys of a (non-null) string array as ``S<width>``, ``width`` being the longest key
    plus its terminator, built chunk by chunk from Arrow's buffers."""
    strings = strings.cast(pa.binary()) if len(strings) else pa.array([], pa.binary())
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    lengths = pc.binary_length(strings).to_numpy(zero_copy_only=False) \
        if len(strings) else np.zeros(0, dtype=np.int32)
    width = int(lengths.max()) + 1 if len(lengths) else 1
    out = np.zeros((len(strings), width), dtype=np.uint8)
    for start in range(0, len(strings), _CHUNK):
        part = strings.slice(start, _CHUNK)
        offsets = np.frombuffer(part.buffers()[1], dtype=np.int32)[
            part.offset:part.offset + len(part) + 1]
        data = np.frombuffer(part.buffers()[2], dtype=np.uint8) \
            if part.buffers()[2] is not None else np.zeros(0, dtype=np.uint8)
        n = lengths[start:start + len(part)]
        rows = np.repeat(np.arange(len(part)), n)
        cols = np.arange(len(rows)) - np.repeat(np.cumsum(n) - n, n)
        out[start + rows, cols] = data[np.repeat(offsets[:-1], n) + cols]
        out[start + np.arange(len(part)), n] = 1
    return out.view(f'S{width}').ravel()


def sorted_run(keys: np.ndarray, *columns: np.ndarray) -> Tuple[np.ndarray, ...]:
    """``keys`` and the ``columns`` beside them, ordered by key (stable: equal keys keep their
    order)."""
    order = np.argsort(keys, kind='stable')
    return (keys[order],) + tuple(c[order] for c in columns)


def merge_runs(runs: Sequence[Tuple[np.ndarray, ...]]) -> Tuple[np.ndarray, ...]:
    """One sorted run from several, each ``(keys, *columns)`` as ``sorted_run`` gives. Keys are
    widened to the widest run's width; equal keys keep the order of ``runs``."""
    runs = list(runs)
    if len(runs) == 1:
        return runs[0]
    keys, order = merge_order([run[0] for run in runs])
    return (keys,) + tuple(np.concatenate([run[i] for run in runs])[order]
                           for i in range(1, len(runs[0])))


def merge_order(keys: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """The sorted keys of several sorted runs, and where each came from in the runs laid end to
    end (a stable sort: timsort finds the runs, so this is near-linear)."""
    width = max(k.dtype.itemsize for k in keys)
    together = np.concatenate([k.astype(f'S{width}') for k in keys])
    order = np.argsort(together, kind='stable')
    return together[order], order


def group_starts(keys: np.ndarray) -> np.ndarray:
    """Where each distinct key starts in a sorted key array."""
    if not len(keys):
        return np.zeros(0, dtype=np.intp)
    return np.concatenate([[0], np.flatnonzero(keys[1:] != keys[:-1]) + 1])


def texts(keys: np.ndarray) -> list:
    """The strings of fixed-width keys (NumPy drops the padding; the terminator goes here)."""
    return [k[:-1].decode('utf-8') for k in keys.tolist()]


def fit_width(keys: np.ndarray, width: int) -> np.ndarray:
    """Keys at another width, to compare with an array of that width; a key too long for it
    becomes b'' (it can match nothing)."""
    if keys.dtype.itemsize <= width:
        return keys.astype(f'S{width}')
    matrix = keys.view(np.uint8).reshape(len(keys), keys.dtype.itemsize)
    fitted = np.ascontiguousarray(matrix[:, :width]).view(f'S{width}').ravel()
    fitted[matrix[:, width:].any(axis=1)] = b''
    return fitted


# One odd 64-bit multiplier per byte position (SplitMix64 of the position): a zero byte adds
# nothing, so a key hashes alike at every padded width.
def _multipliers(width: int) -> np.ndarray:
    with np.errstate(over='ignore'):
        z = np.arange(1, width + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) | np.uint64(1)


def partition_of(keys: np.ndarray, parts: int) -> np.ndarray:
    """The partition (0 .. parts - 1) of each key, the same for a key at any width. A spread,
    not a secret: partitions hold keys in the clear and are encrypted where they are stored."""
    if parts == 1 or not len(keys):
        return np.zeros(len(keys), dtype=np.intp)
    matrix = keys.view(np.uint8).reshape(len(keys), keys.dtype.itemsize)
    h = np.zeros(len(keys), dtype=np.uint64)
    with np.errstate(over='ignore'):
        for i, m in enumerate(_multipliers(keys.dtype.itemsize)):
            h += matrix[:, i] * m
        h ^= h >> np.uint64(33)  # MurmurHash3's finalizer: every input bit moves the low bits
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return (h % np.uint64(parts)).astype(np.intp)


def split_by_partition(keys: np.ndarray, parts: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(order, bounds)``: partition p of ``keys`` is ``keys[order[bounds[p]:bounds[p + 1]]]``,
    in the order of ``keys`` (sorted keys stay sorted in each partition)."""
    of = partition_of(keys, parts)
    order = np.argsort(of, kind='stable')
    return order, np.searchsorted(of[order], np.arange(parts + 1))


def string_hashes(strings) -> np.ndarray:
    """A 64-bit hash of each string (nulls as empty), from Arrow's buffers in a few NumPy
    passes over the bytes: no Python code per string, nor a fixed-width copy of long keys."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    strings = pc.fill_null(strings, '').cast(pa.binary())
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[
        strings.offset:strings.offset + n + 1].astype(np.int64)
    first, last = int(offsets[0]), int(offsets[-1]) if n else 0
    data = np.frombuffer(strings.buffers()[2], dtype=np.uint8)[first:last] \
        if n and strings.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    starts = offsets[:-1] - first
    h = lengths.astype(np.uint64)
    with np.errstate(over='ignore'):
        if len(data):
            position = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
            weighted = data.astype(np.uint64) * (position.astype(np.uint64) *
                                                 np.uint64(0x9E3779B97F4A7C15) + np.uint64(1))
            nonempty = lengths > 0  # reduceat's segments: from each start to the next one
            h[nonempty] += np.add.reduceat(weighted, starts[nonempty])
        h ^= h >> np.uint64(33)  # MurmurHash3's finalizer
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return h


def split_table(table: pa.Table, column: str, parts: int):
    """(part, rows of ``table`` whose ``column`` falls in it) for each part holding any, by a
    hash of the column's text. Each part is a copy of its rows, not a slice: a pickled slice
    would carry the whole table's buffers."""
    yield from split_rows(table, (string_hashes(table.column(column)) % np.uint64(parts))
                          .astype(np.intp), parts)


def split_rows(table: pa.Table, of: np.ndarray, parts: int):
    """(part, rows of ``table`` in it) for each part holding any: ``of`` is each row's part.
    Each part is a copy of its rows, not a slice (see ``split_table``)."""
    order = np.argsort(of, kind='stable')
    bounds = np.searchsorted(of[order], np.arange(parts + 1))
    for part in range(parts):
        if bounds[part] < bounds[part + 1]:
            yield part, table.take(pa.array(order[bounds[part]:bounds[part + 1]]))


def key_column(keys: np.ndarray) -> pa.Array:
    """Fixed-width keys (or any fixed-width bytes) as an Arrow fixed_size_binary array, without a
    copy."""
    keys = np.ascontiguousarray(keys)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(keys.dtype.itemsize), len(keys),
                                                [None, pa.py_buffer(keys)])


def keys_of(column) -> np.ndarray:
    """The fixed-width keys of a ``key_column``, without a copy."""
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    width = column.type.byte_width
    if not len(column):
        return np.zeros(0, dtype=f'S{width}')
    data = np.frombuffer(column.buffers()[1], dtype=f'S{width}')
    return data[column.offset:column.offset + len(column)]
