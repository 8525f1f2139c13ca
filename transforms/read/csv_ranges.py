"""Split a CSV file into byte ranges that start on record boundaries (pure, numpy).

Reading one large export is the longest step of a migration, and a file read by one worker
leaves the other cores idle. A range reader needs two things it cannot find out alone: where a
record starts (a newline inside a quoted value is not one) and how many records come before it
(so every row keeps its record number in the file).

One pass over the raw bytes finds both, vectorized: a quote's position in the file-wide count
of quotes tells whether it opens or closes a quoted value. That holds only for files quoted as
RFC 4180 says (a quote opens a value only at its start, a quote inside is doubled), so the scan
checks every quote; any other use of the quote character, or a lone carriage return as a line
end, makes the file unsplittable and it is read whole: slower, never wrong. Records are counted
as the CSV reader counts them: blank lines are not records. A chunk with no quote and no blank
line, the usual case, takes a few numpy passes at memory speed.

The scan works on bytes, so the delimiter, quote and newline bytes must never occur inside a
multi-byte character: true in UTF-8 for every ASCII byte, and in the GB encodings for bytes
below 0x30 and from 0x3A to 0x3F (``,`` ``;`` ``"`` ``'`` tab).
"""

from typing import BinaryIO, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

__all__ = ['Split', 'record_splits', 'splittable_encoding']

_LF, _CR = 0x0A, 0x0D
_CHUNK_BYTES = 8 << 20


class Split(NamedTuple):
    offset: int          # first byte of the range: just after a record's line end
    rows_before: int     # records (not blank lines) between the data start and ``offset``


def splittable_encoding(encoding: str, delimiter: str, quote: str) -> bool:
    """Whether the delimiter and quote bytes can never be part of a multi-byte character."""
    codes = [ord(delimiter), ord(quote)]
    if any(c >= 0x80 for c in codes):
        return False
    if encoding.replace('_', '-').lower() in ('utf-8', 'utf-8-sig', 'utf8'):
        return True
    return all(c < 0x30 or 0x3A <= c < 0x40 for c in codes)


def record_splits(f: BinaryIO, data_start: int, targets: List[int], *, delimiter: str,
                  quote: str, width: Optional[int] = None,
                  chunk_bytes: int = _CHUNK_BYTES) -> Optional[List[Split]]:
    """Record boundaries at or after each target offset, or None if the file cannot be split.

    ``f`` is positioned at ``data_start`` (the first byte after the header line, or 0). Each
    split is the first record start at or after its target; targets past the last record start
    give no split, and equal splits are given once. With ``width`` (the columns of a record),
    a quoted value holding a line with enough delimiters to be a record of its own makes the
    file unsplittable: it may be a stray quote, which the reader recovers from by reading the
    records inside as records, so the records before a split could not be counted here.
    """
    delim, q = ord(delimiter), ord(quote)
    pending = sorted(t for t in targets if t > data_start)
    splits: List[Split] = []
    parity = 0                 # quotes seen so far, mod 2: 1 inside a quoted value
    prev_byte = _LF            # the data starts at a line start
    last_end = data_start - 1  # position of the last record's line end
    records = 0
    for offset, chunk, next_byte in _chunks(f, data_start, chunk_bytes):
        line_ends = None if parity else _plain_line_ends(chunk, next_byte, quote)
        if line_ends is not None:
            # Every LF ends a record: memchr and one vectorized count per split.
            while pending:
                end = chunk.find(b'\n', max(0, pending[0] - 1 - offset))
                if end < 0:
                    break
                pending.pop(0)
                split = Split(offset + end + 1,
                              records + int(np.count_nonzero(line_ends[:end + 1])))
                if not splits or splits[-1].offset != split.offset:
                    splits.append(split)
            records += int(np.count_nonzero(line_ends))
            last = chunk.rfind(b'\n')
            if last >= 0:
                last_end = offset + last
            prev_byte = chunk[-1]
            if not pending:
                break
            continue
        b = np.frombuffer(chunk, dtype=np.uint8)
        quotes = np.flatnonzero(b == q)
        if not _quotes_well_formed(b, quotes, parity, prev_byte, next_byte, delim, q):
            return None
        quotes_before = lambda positions: parity + np.searchsorted(quotes, positions)  # noqa
        crs = np.flatnonzero(b == _CR)
        crs = crs[(quotes_before(crs) & 1) == 0]
        after_cr = np.append(b, next_byte if next_byte is not None else _LF)[crs + 1]
        if (after_cr != _LF).any():
            return None  # a lone CR ends a line for the reader; too rare to model
        ends = np.flatnonzero(b == _LF)
        quoted = (quotes_before(ends) & 1) == 1
        if width and quoted.any() and _holds_record_lines(b, ends, quoted, delim, width):
            return None
        ends = ends[~quoted]
        if len(ends):
            absolute = ends + offset
            gaps = absolute - np.append(last_end, absolute[:-1])
            before = np.append(prev_byte, b)[ends]  # the byte before each line end
            blank = (gaps == 1) | ((gaps == 2) & (before == _CR))
            done = records + np.cumsum(~blank)
            while pending and pending[0] <= absolute[-1] + 1:
                i = int(np.searchsorted(absolute + 1, pending.pop(0)))
                split = Split(int(absolute[i]) + 1, int(done[i]))
                if not splits or splits[-1].offset != split.offset:
                    splits.append(split)
            last_end, records = int(absolute[-1]), int(done[-1])
        parity = (parity + len(quotes)) & 1
        prev_byte = int(b[-1])
        if not pending:
            break  # the bytes after the last split are the last reader's alone
    return splits


def _holds_record_lines(b, ends, quoted, delim, width) -> bool:
    """Whether a line that starts inside a quoted value has ``width - 1`` delimiters or more
    (the line is cut at the chunk's end: this only decides to read the file whole)."""
    for i in np.flatnonzero(quoted):
        stop = int(ends[i + 1]) if i + 1 < len(ends) else len(b)
        if np.count_nonzero(b[int(ends[i]) + 1:stop] == delim) >= width - 1:
            return True
    return False


def _plain_line_ends(chunk: bytes, next_byte: Optional[int], quote: str):
    """Where the LFs are (a boolean array), if the chunk is plain: no quote, no blank line, no
    lone CR, not starting with a line end. In the usual chunk every LF then ends one record.
    None otherwise."""
    if quote.encode('ascii') in chunk or chunk[:1] in (b'\n', b'\r'):
        return None
    b = np.frombuffer(chunk, dtype=np.uint8)
    lf = b == _LF
    if (lf[1:] & lf[:-1]).any():
        return None  # a blank line
    if b'\r' in chunk:
        cr = b == _CR
        before_lf = np.append(lf[1:], next_byte in (None, _LF))
        if (cr & ~before_lf).any() or (lf[2:] & cr[1:-1] & lf[:-2]).any():
            return None  # a lone CR, or a blank CRLF line
    return lf


def _quotes_well_formed(b, quotes, parity, prev_byte, next_byte, delim, q) -> bool:
    """Every opening quote starts a value (or doubles a quote), every closing one ends it."""
    if not len(quotes):
        return True
    opening = ((parity + np.arange(len(quotes))) & 1) == 0
    before = np.append(prev_byte, b)[quotes]
    after = np.append(b, next_byte if next_byte is not None else _LF)[quotes + 1]
    starts = (before == delim) | (before == _LF) | (before == _CR) | (before == q)
    ends = (after == delim) | (after == _LF) | (after == _CR) | (after == q)
    return bool(starts[opening].all() and ends[~opening].all())


def _chunks(f: BinaryIO, offset: int, size: int) -> Iterator[Tuple[int, bytes, Optional[int]]]:
    """(absolute offset, chunk, first byte of the next chunk or None at the end)."""
    chunk = f.read(size)
    while chunk:
        following = f.read(size)
        yield offset, chunk, (following[0] if following else None)
        offset += len(chunk)
        chunk = following
