"""Text encodings: a file decoded as it is read (GBK, GB18030, UTF-8), and where it stops being
that encoding, so a wrong encoding is named by its first bad byte rather than read as
replacement characters.
"""

import codecs
import io

import pyarrow as pa

from transforms.common.files import filesystems

__all__ = ['CSV_BLOCK_BYTES', 'DecodedStream', 'REPLACEMENT', 'REPLACEMENT_UTF8',
           'WRONG_ENCODING_ROWS', 'WRONG_ENCODING_SHARE', 'first_undecodable_byte',
           'may_hold_replacement']


CSV_BLOCK_BYTES = 4 << 20


# A file whose first batch has at least WRONG_ENCODING_ROWS undecodable rows, more than
# WRONG_ENCODING_SHARE of it, is in the wrong encoding as a whole: one clear error instead of a
# dead letter per row.
WRONG_ENCODING_SHARE = 0.5


WRONG_ENCODING_ROWS = 20


REPLACEMENT = '\ufffd'


REPLACEMENT_UTF8 = REPLACEMENT.encode('utf-8')


def may_hold_replacement(column: pa.Array) -> bool:
    """Whether a string column may hold U+FFFD: a search of its data buffer, 1 MB at a time (a
    copy of the whole buffer would add to the peak), several times faster than matching value
    by value. A slice's buffer may hold more than its values, so a hit is only a "may"."""
    data = column.buffers()[2]
    if data is None:
        return False
    view, step = memoryview(data), 1 << 20
    # windows overlap by two bytes, so a sequence across a window's end is still found
    return any(REPLACEMENT_UTF8 in view[i:i + step + 2].tobytes()
               for i in range(0, len(view), step))


class DecodedStream(io.RawIOBase):
    """A binary file in ``encoding`` read as UTF-8; undecodable bytes become U+FFFD.

    The rows holding U+FFFD are then dead-lettered one by one, so a few bad bytes cost a few
    rows, not the file. A UTF-8 byte-order mark at the file start is dropped.
    """

    def __init__(self, raw, encoding, *, file_start=True):
        super().__init__()
        self._raw = raw
        name = ('utf-8-sig' if codecs.lookup(encoding).name == 'utf-8' and file_start
                else encoding)
        self._decoder = codecs.getincrementaldecoder(name)(errors='replace')
        self._pending = b''
        self._pos = 0  # how much of _pending was handed out (no re-slicing per small read)
        self._eof = False
        self._newlines, self._last = 0, b'\n'

    @property
    def lines(self) -> int:
        """Physical lines decoded so far (a last line without a line ending counts)."""
        return self._newlines + (self._last != b'\n')

    def readable(self):
        return True

    def readinto(self, buffer):
        while self._pos == len(self._pending) and not self._eof:
            chunk = self._raw.read(CSV_BLOCK_BYTES)
            self._eof = not chunk
            self._pending = self._decoder.decode(chunk, final=self._eof).encode('utf-8')
            self._pos = 0
            if self._pending:
                self._newlines += self._pending.count(b'\n')
                self._last = self._pending[-1:]
        n = min(len(buffer), len(self._pending) - self._pos)
        buffer[:n] = self._pending[self._pos:self._pos + n]
        self._pos += n
        return n


def first_undecodable_byte(path: str, encoding: str) -> int:
    """File offset of the first byte sequence that ``encoding`` cannot decode (-1: none)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with filesystems().open(path) as f:
        while True:
            chunk = f.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                # e.start counts from the bytes the decoder held back plus this chunk
                pending = len(e.object) - len(chunk)
                return offset - pending + e.start
            if not chunk:
                return -1
            offset += len(chunk)
