"""Sorted fixed-width keys: per-key state for tens of millions of keys in a few bytes each.

A string key becomes a fixed-width byte string (its UTF-8, then a 0x01 terminator, so NumPy's zero
padding loses no byte and no key is a prefix of another); an array of them sorts, searches and
compares in NumPy without a Python object per key. Parts built apart (batches, byte ranges of a
file) are kept sorted, so merging them is a stable sort over already sorted runs, which is fast,
and the result stays a few arrays rather than a hash table of strings.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['fixed_width', 'group_starts', 'merge_order', 'merge_runs', 'sorted_run', 'texts']

_CHUNK = 1 << 18  # keys per step: bounds the temporary index arrays


def fixed_width(strings: pa.Array, width: Optional[int] = None) -> np.ndarray:
    """The keys of a (non-null) string array as ``S<width>``, built chunk by chunk from Arrow's
    buffers. ``width`` defaults to the longest key plus its terminator; a key too long for a
    given width becomes b'' (it can match nothing)."""
    strings = strings.cast(pa.binary()) if len(strings) else pa.array([], pa.binary())
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    lengths = pc.binary_length(strings).to_numpy(zero_copy_only=False) \
        if len(strings) else np.zeros(0, dtype=np.int32)
    width = width or (int(lengths.max()) + 1 if len(lengths) else 1)
    out = np.zeros((len(strings), width), dtype=np.uint8)
    for start in range(0, len(strings), _CHUNK):
        part = strings.slice(start, _CHUNK)
        offsets = np.frombuffer(part.buffers()[1], dtype=np.int32)[
            part.offset:part.offset + len(part) + 1]
        data = np.frombuffer(part.buffers()[2], dtype=np.uint8) \
            if part.buffers()[2] is not None else np.zeros(0, dtype=np.uint8)
        n = lengths[start:start + len(part)]
        fits = n < width
        copied = np.where(fits, n, 0)  # bytes copied per key
        rows = np.repeat(np.arange(len(part)), copied)
        cols = np.arange(len(rows)) - np.repeat(np.cumsum(copied) - copied, copied)
        out[start + rows, cols] = data[np.repeat(offsets[:-1], copied) + cols]
        out[start + np.flatnonzero(fits), n[fits]] = 1
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
