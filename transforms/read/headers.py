"""What a file's first bytes and first line say, before any row is read: another format (its
magic bytes), text that is no export, a header split at another delimiter. Each problem is
one line naming the file.
"""

import codecs
import csv
from typing import Optional

from transforms.common.files import filesystems
from transforms.read.columns import ColumnPlan

__all__ = ['OTHER_DELIMITERS', 'file_head', 'header_problem', 'split_csv_line', 'split_line',
           'start_problem']


# The first bytes of files in formats a seller may hand over instead of the one configured.
_MAGIC = ((b'PAR1', 'parquet'), (b'Obj\x01', 'avro'))


_HEAD_BYTES = 4


OTHER_DELIMITERS = (',', ';', '\t', '|')


def file_head(path: str) -> bytes:
    with filesystems().open(path) as f:  # decompressed as the name says, as the reader will
        return f.read(_HEAD_BYTES)


def start_problem(head: bytes, table, path: str) -> Optional[str]:
    """What is wrong with a file whose first bytes are ``head`` (the whole file if shorter),
    read as ``table`` says; None if nothing shows yet (pure).

    Recognised: another format's magic bytes, a ZIP archive (a spreadsheet), a UTF-16 or a
    UTF-8 byte-order mark against another encoding, an empty file where rows or a header
    are needed. A text file without rows, or a CSV file without rows and header, is an empty
    table, not an error.
    """
    fmt, key = table.format, f'tables.{table.name}'
    actual = next((f for magic, f in _MAGIC if head.startswith(magic)), None)
    if not head:
        if fmt in ('avro', 'parquet'):
            return f'{path} is empty (0 bytes), not a {fmt} file'
        if fmt == 'csv' and table.header:
            return (f'{path} is empty (0 bytes): a CSV export has at least its header line '
                    f'(or set {key}.header: false)')
        return None
    if head.startswith(b'PK\x03\x04'):
        return (f'{path} is a ZIP archive (an Excel workbook?), not {fmt}: export the table '
                f'as {fmt}')
    if fmt in ('avro', 'parquet'):
        if actual == fmt:
            return None
        if actual:
            looks = f'it is {actual}; set {key}.format: {actual}'
        elif _looks_like_text(head):
            looks = f'it looks like text (CSV or JSON Lines?); set {key}.format'
        else:
            looks = 'its first bytes are those of no format Novation reads'
        return f'{path} is not a {fmt} file: {looks}'
    if actual:
        return f'{path} is a {actual} file, not {fmt}: set {key}.format: {actual}'
    if head.startswith((b'\xff\xfe', b'\xfe\xff')):
        return (f'{path} is UTF-16 text (it starts with a UTF-16 byte-order mark), which '
                f'{key}.encoding cannot be: re-export it as utf-8, gbk or gb18030')
    if head.startswith(codecs.BOM_UTF8) and not codecs.lookup(table.encoding).name.startswith(
            'utf-8'):
        return (f'{path} starts with a UTF-8 byte-order mark, so it is UTF-8, not '
                f'{table.encoding}: set {key}.encoding: utf-8')
    return None


def _looks_like_text(head: bytes) -> bool:
    return all(b >= 0x20 or b in b'\t\r\n' for b in head)


def split_csv_line(line: str, delimiter: str = ',', quote: str = '"', *,
                   strict: bool = False) -> Optional[list]:
    """The fields of one CSV line (its line ending removed), or None if it cannot be split
    (a line ending inside a field; with ``strict``, also an unterminated quote)."""
    try:
        return next(csv.reader([line.rstrip('\r\n')], delimiter=delimiter, quotechar=quote,
                               strict=strict), [])
    except csv.Error:
        return None


def split_line(line: str, delimiter: str, quote: str) -> list:
    return [c.strip() for c in split_csv_line(line, delimiter, quote) or []]


def header_problem(columns, line: str, table, plan: ColumnPlan, path: str) -> Optional[str]:
    """Why a CSV header line names none of the schema's columns, or None if it names some
    (pure; the column checks then say the rest). Never quotes the line: if it is no header,
    it is a customer's record."""
    if any(plan.knows(c) for c in columns):
        return None
    key = f'tables.{table.name}'
    for delimiter in OTHER_DELIMITERS:
        if delimiter != table.delimiter and sum(
                plan.knows(c) for c in split_line(line, delimiter, table.quote)) >= 2:
            return (f'{path}: the header splits into the columns of {table.schema.source} at '
                    f'{delimiter!r}, not at {table.delimiter!r}: set {key}.delimiter: '
                    f'{delimiter!r}')
    return (f'{path}: the first line names none of the columns of {table.schema.source}: the '
            f'file seems to have no header line (set {key}.header: false to read the columns '
            f'in schema order) or to be another table\'s export')
