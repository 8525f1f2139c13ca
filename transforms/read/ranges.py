"""Byte ranges of large seller files, so several workers read one file: where a file may be
split (uncompressed CSV of an encoding whose delimiter and quote bytes are never part of a
character), how many ranges, and a range opened as a stream of its bytes.
"""

import io
import math
import os
from typing import NamedTuple, Optional

from transforms.common.files import compressed_by_name, filesystems, uncompressed
from transforms.read.csv_ranges import record_splits, splittable_encoding
from transforms.read.headers import split_csv_line

__all__ = ['FileRange', 'MAX_RANGE_BYTES', 'MIN_RANGE_BYTES', 'open_range', 'plan_ranges',
           'splittable']


# A CSV file read by several workers is cut into ranges of at least MIN_RANGE_BYTES (smaller
# ones cost more in start-up than they save) and at most MAX_RANGE_BYTES.
MIN_RANGE_BYTES = 16 << 20


MAX_RANGE_BYTES = 256 << 20


class FileRange(NamedTuple):
    """What one reader reads: a whole file, or the records of a CSV file from byte ``start``
    (a record start) to ``end``, numbered from ``first_row``."""
    path: str
    start: int = 0
    end: Optional[int] = None
    first_row: int = 1

    @property
    def whole(self):
        return self.start == 0 and self.end is None


def splittable(path: str, size: int, table) -> bool:
    """Whether several workers can share the file: an uncompressed CSV file of at least two
    ranges, in an encoding where the delimiter and quote bytes are never part of a character."""
    return (size >= 2 * MIN_RANGE_BYTES and table.format == 'csv'
            and not compressed_by_name(path)
            and splittable_encoding(table.encoding, table.delimiter, table.quote))


def plan_ranges(metadata, table, workers):
    """The ranges one file is read in: whole, or for a large CSV file read by several workers,
    a multiple of ``workers`` ranges cut at record starts (see transforms.read.csv_ranges)."""
    path, size = metadata.path, metadata.size_in_bytes
    if path.endswith(('/', os.sep)):
        return []  # a directory matched by the pattern, as fileio.ReadMatches skips it
    count = workers * max(1, math.ceil(size / (workers * MAX_RANGE_BYTES)))
    count = min(count, size // MIN_RANGE_BYTES)
    if count < 2 or not splittable(path, size, table):
        return [FileRange(path)]
    with filesystems().open(path, compression_type=uncompressed()) as f:
        header = f.readline() if table.header else b''
        width = (len(split_csv_line(header.decode(table.encoding, 'replace'), table.delimiter,
                                    table.quote) or []) if table.header
                 else len(table.schema.field_names))
        splits = record_splits(f, len(header), [len(header) + (size - len(header)) * k // count
                                                for k in range(1, count)],
                               delimiter=table.delimiter, quote=table.quote, width=width)
    splits = [s for s in splits or [] if s.offset < size]
    if not splits:
        return [FileRange(path)]
    starts = [(0, 0)] + [(s.offset, s.rows_before) for s in splits]
    ends = [s.offset for s in splits] + [None]
    return [FileRange(path, start, end, rows_before + 1)
            for (start, rows_before), end in zip(starts, ends)]


class _RangeStream(io.RawIOBase):
    """The bytes of ``raw`` up to ``length`` (None: all of them)."""

    def __init__(self, raw, length):
        super().__init__()
        self._raw = raw
        self._left = length
        self._read = 0

    def readable(self):
        return True

    def tell(self):
        return self._read  # bytes of the range read so far

    def read(self, size=-1):
        if self._left is None:
            chunk = self._raw.read(size)
        else:
            size = self._left if size is None or size < 0 else min(size, self._left)
            chunk = self._raw.read(size)
            self._left -= len(chunk)
        self._read += len(chunk)
        return chunk

    def readinto(self, buffer):
        chunk = self.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def open_range(file_range):
    """A readable stream of the range's bytes; a whole file is decompressed as its name says."""
    if file_range.whole:
        return filesystems().open(file_range.path)
    f = filesystems().open(file_range.path, compression_type=uncompressed())
    f.seek(file_range.start)
    end = file_range.end
    return _RangeStream(f, None if end is None else end - file_range.start)
