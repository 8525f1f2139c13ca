"""A file that is not what its table says gets an error that names what it really is: another
format's magic bytes, a byte-order mark against the encoding, the other delimiter, no header,
an empty file. A header without rows is an empty table. No error quotes a value of the file."""

import io
import re

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.read.test_dirty_exports import make_table, read_file
from transforms.common.errors import InputError

ROW = 'R1,1.00,2024-01-02,是,备注ж\n'
HEADER = 'rid,amount,day,flag,note\n'


def parquet_bytes():
    sink = io.BytesIO()
    pq.write_table(pa.table({'rid': ['R1']}), sink)
    return sink.getvalue()


def avro_bytes():
    sink = io.BytesIO()
    fastavro.writer(sink, {'type': 'record', 'name': 'r', 'fields': [
        {'name': 'rid', 'type': 'string'}]}, [{'rid': 'R1'}])
    return sink.getvalue()


@pytest.mark.parametrize('fmt, options, content, message', [
    ('csv', {}, parquet_bytes, 'is a parquet file, not csv: set tables.t.format: parquet'),
    ('jsonl', {}, avro_bytes, 'is a avro file, not jsonl: set tables.t.format: avro'),
    ('parquet', {}, lambda: (HEADER + ROW).encode('utf-8'),
     'is not a parquet file: it looks like text (CSV or JSON Lines?); set tables.t.format'),
    ('avro', {}, parquet_bytes, 'is not a avro file: it is parquet; set tables.t.format: parquet'),
    ('parquet', {}, lambda: b'\x00\x01\x02\x03rest', 'its first bytes are those of no format'),
    ('parquet', {}, lambda: parquet_bytes()[:30], 'cannot be read as Parquet (truncated'),
    ('csv', {}, lambda: b'PK\x03\x04' + b'\x00' * 40, 'is a ZIP archive (an Excel workbook?)'),
    ('csv', {'encoding': 'gbk'}, lambda: b'\xef\xbb\xbf' + (HEADER + ROW).encode('utf-8'),
     'starts with a UTF-8 byte-order mark, so it is UTF-8, not gbk: set tables.t.encoding: '
     'utf-8'),
    ('csv', {}, lambda: (HEADER + ROW).encode('utf-16'), 'is UTF-16 text'),
    ('csv', {}, lambda: (HEADER + ROW).replace(',', ';').encode('utf-8'),
     "the header splits into the columns of"),
    ('csv', {'delimiter': '|'}, lambda: (HEADER + ROW).replace(',', '\t').encode('utf-8'),
     r"at '\t', not at '|': set tables.t.delimiter: '\t'"),
    ('csv', {}, lambda: ROW.encode('utf-8') * 3, 'the file seems to have no header line (set '
                                                 'tables.t.header: false'),
    ('csv', {}, lambda: b'', 'is empty (0 bytes): a CSV export has at least its header line'),
    ('avro', {}, lambda: b'', 'is empty (0 bytes), not a avro file'),
    ('parquet', {}, lambda: b'', 'is empty (0 bytes), not a parquet file'),
])
def test_a_file_that_is_not_what_the_table_says_is_named_for_what_it_is(
        tmp_path, fmt, options, content, message):
    table = make_table(str(tmp_path), fmt, **options)
    with open(table.path, 'wb') as f:
        f.write(content())
    with pytest.raises(InputError) as e:
        read_file(table)
    text = str(e.value)
    assert text.startswith(table.path) and message in text
    assert 'R1' not in text and 'ж' not in text and '备注' not in text  # no value quoted
    assert '\n' not in text


@pytest.mark.parametrize('fmt, options, content', [
    ('csv', {}, HEADER),                       # a header and no rows
    ('csv', {}, HEADER.rstrip('\n')),          # ... without its line end
    ('csv', {'header': False}, ''),            # no header expected, no rows
    ('jsonl', {}, ''),                         # no records
    ('jsonl', {}, '\n\n'),                     # blank lines are no records
    ('csv', {'encoding': 'utf-8'}, '\ufeff' + HEADER),  # a BOM with utf-8 is dropped
])
def test_a_file_without_rows_is_an_empty_table(tmp_path, fmt, options, content):
    table = make_table(str(tmp_path), fmt, **options)
    with open(table.path, 'w', encoding='utf-8') as f:
        f.write(content)
    kept, dead, rows_read, _ = read_file(table)
    assert (kept, dead, rows_read) == ([], [], 0)


def test_a_header_with_a_known_column_gets_the_usual_column_checks(tmp_path):
    table = make_table(str(tmp_path), 'csv')
    with open(table.path, 'w', encoding='utf-8') as f:
        f.write('rid;amount,note\n' + 'R1;1,x\n')  # 'rid;amount' is unknown, 'note' is known
    with pytest.raises(InputError, match=re.escape('not in the schema (unclassified): rid;amount')):
        read_file(table)
