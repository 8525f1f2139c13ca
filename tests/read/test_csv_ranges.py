"""A large CSV file read by several workers: cut at record starts, every row once, same numbers.

The oracle is Arrow's own CSV reader: the records before a split and after it, parsed apart,
are exactly the records of the whole file, and the split's record count is the number before it.
"""

import io
import os

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings, strategies as st
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from tests.conftest import local_pipeline
from tests.read.test_dirty_exports import make_table
from transforms.read import encodings
from transforms.read import ranges as read_ranges
from transforms.common.batches import ROW
from transforms.read.csv_ranges import record_splits, splittable_encoding
from transforms.read.ranges import FileRange, plan_ranges
from transforms.read.tables import ReadTable, _ReadBatchesFn

COLUMNS = 3


def records_of(data: bytes, encoding='utf-8'):
    """Arrow's reading of ``data``: every record, valid or not, in file order."""
    data = data.decode(encoding).encode('utf-8')
    if not data.strip(b'\r\n'):
        return []  # Arrow calls a file of blank lines empty
    invalid = []

    def skip(row):
        invalid.append((row.number, ('invalid', row.text)))
        return 'skip'

    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=[f'c{i}' for i in range(COLUMNS)],
                                        use_threads=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
        convert_options=pa_csv.ConvertOptions(
            column_types={f'c{i}': pa.string() for i in range(COLUMNS)},
            strings_can_be_null=False))
    valid = [tuple(r.values()) for r in table.to_pylist()]
    numbered, skipped = [], dict(invalid)
    number, pending = 1, iter(valid)
    while len(numbered) < len(valid) + len(invalid):
        numbered.append(skipped[number] if number in skipped else next(pending))
        number += 1
    return numbered


def splits_of(data: bytes, targets, chunk_bytes=7):
    return record_splits(io.BytesIO(data), 0, targets, delimiter=',', quote='"',
                         chunk_bytes=chunk_bytes)


def field(text, always_quote):
    if always_quote or any(c in text for c in ',"\r\n') or text == '':
        return '"' + text.replace('"', '""') + '"'
    return text


@st.composite
def csv_files(draw, alphabet='ab,"\n\r 中文', blank_lines=True):
    """RFC 4180 files: quoted commas, quotes and line ends; blank lines; CRLF; short rows."""
    text = st.text(alphabet=st.sampled_from(alphabet), max_size=6)
    rows = draw(st.lists(st.lists(text, min_size=1, max_size=COLUMNS + 1), max_size=12))
    quote_all = draw(st.booleans())
    line_end = draw(st.sampled_from(['\n', '\r\n']))
    lines = []
    for values in rows:
        if blank_lines and draw(st.integers(0, 5)) == 0:
            lines.append('')  # a blank line is no record
        lines.append(','.join(field(v, quote_all) for v in values))
    body = line_end.join(lines) + (line_end if draw(st.booleans()) else '')
    encoding = draw(st.sampled_from(['utf-8', 'gbk']))
    return body.encode(encoding), encoding


@settings(max_examples=300, deadline=None)
@given(st.one_of(csv_files(), csv_files(alphabet='ab 中文'),  # no quote at all,
                 csv_files(alphabet='ab 中文', blank_lines=False)),  # nor a blank line
       st.lists(st.integers(0, 400), max_size=4), st.integers(1, 64))
def test_splits_cut_at_record_starts_and_count_the_records_before(file, targets, chunk):
    data, encoding = file
    splits = splits_of(data, targets, chunk_bytes=chunk)
    assert splits is not None  # a well-formed file is always splittable
    whole = records_of(data, encoding)
    for split in splits:
        before = records_of(data[:split.offset], encoding)
        after = records_of(data[split.offset:], encoding)
        assert before + after == whole
        assert split.rows_before == len(before)
    assert [s.offset for s in splits] == sorted({s.offset for s in splits})


@pytest.mark.parametrize('data', [
    b'a,5"x,c\n1,2,3\n4,5,6\n',       # a quote inside an unquoted value
    b'"ab"c,d,e\n1,2,3\n4,5,6\n',     # text after a closing quote
    b'a,b,c\r1,2,3\r4,5,6\r',         # lone CR line ends
])
def test_files_quoted_otherwise_are_read_whole(data):
    assert splits_of(data, [4, 12]) is None


def test_splits_start_at_the_first_record_start_at_or_after_each_target():
    data = b'1,"x\ny",3\n\n4,5,6\n7,8,9'
    assert splits_of(data, [1, 2, 10, 11, 12, 30]) == [(10, 1), (11, 1), (17, 2)]


@pytest.mark.parametrize('encoding, delimiter, quote, expected', [
    ('utf-8', ',', '"', True),
    ('utf-8-sig', '|', "'", True),
    ('gbk', ',', '"', True),
    ('gb18030', ';', '"', True),
    ('gbk', '|', '"', False),     # 0x7C is also the second byte of GBK characters
    ('gb18030', '5', '"', False),  # digits are the 2nd and 4th bytes of 4-byte characters
    ('utf-8', '，', '"', False),   # not ASCII
])
def test_splittable_encodings(encoding, delimiter, quote, expected):
    assert splittable_encoding(encoding, delimiter, quote) is expected


# -- reading ranges ---------------------------------------------------------------------------

LINES = [
    'rid,amount,day,flag,note',
    'R1,1.00,2024-01-02,是,"第一行\n第二行"',
    'R2,2.00,2024-01-03,否,短',
    '',
    'R3,3.00,2024-01-04',                    # too few columns: a dead letter
    'R4,4.00,2024-01-05,是,"引号""内"',
] + [f'R{i},{i}.00,2024-02-01,否,备注{i}' for i in range(5, 60)]


def write_export(directory, bad_bytes=False):
    table = make_table(directory, 'csv', encoding='gbk')
    data = '\r\n'.join(LINES).encode('gbk') + b'\r\n'
    if bad_bytes:
        data = data.replace('备注7'.encode('gbk'), b'\xff\xfe7')
    with open(table.path, 'wb') as f:
        f.write(data)
    return table


def read_range(table, file_range):
    rows, dead, read_count = [], [], 0
    for out in _ReadBatchesFn(table).process(file_range):
        if isinstance(out, TaggedOutput):
            if out.tag == ReadTable.DEAD:
                dead.append((out.value.row, out.value.reason))
            else:
                read_count += out.value[2]
        elif out.num_rows:
            rows += list(zip(out.column(ROW).to_pylist(), out.column('rid').to_pylist(),
                             out.column('note').to_pylist()))
    return rows, dead, read_count


@pytest.mark.parametrize('bad_bytes', [False, True])
def test_ranges_read_every_row_once_with_its_number(tmp_path, monkeypatch, bad_bytes):
    table = write_export(str(tmp_path), bad_bytes)
    monkeypatch.setattr(read_ranges, 'MIN_RANGE_BYTES', 100)
    monkeypatch.setattr(read_ranges, 'MAX_RANGE_BYTES', 300)
    ranges = plan_ranges(FileMetadata(table.path, os.path.getsize(table.path)), table, 3)
    assert len(ranges) == 9 and ranges[0].start == 0 and ranges[-1].end is None
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
    whole = read_range(table, FileRange(table.path))
    parts = [read_range(table, r) for r in ranges]
    assert sorted(r for p in parts for r in p[0]) == whole[0]
    assert sorted(d for p in parts for d in p[1]) == sorted(whole[1])
    assert sum(p[2] for p in parts) == whole[2] == 59
    assert (3, 'malformed') in whole[1]


def test_small_or_compressed_files_are_read_whole(tmp_path, monkeypatch):
    table = write_export(str(tmp_path))
    size = os.path.getsize(table.path)
    assert plan_ranges(FileMetadata(table.path, size), table, 2) == [FileRange(table.path)]
    monkeypatch.setattr(read_ranges, 'MIN_RANGE_BYTES', 100)
    assert plan_ranges(FileMetadata(table.path, size), table, 1) == [FileRange(table.path)]
    assert plan_ranges(FileMetadata(table.path + '.gz', size), table, 2) == \
        [FileRange(table.path + '.gz')]


def test_read_table_with_two_workers_gives_what_one_gives(tmp_path, monkeypatch):
    table = write_export(str(tmp_path))
    monkeypatch.setattr(read_ranges, 'MIN_RANGE_BYTES', 100)
    expected = read_range(table, FileRange(table.path))
    with local_pipeline() as p:
        out = p | ReadTable(table, workers=2)
        assert_that(out[ReadTable.ROWS] | beam.FlatMap(lambda b: b.column(ROW).to_pylist()),
                    equal_to([r[0] for r in expected[0]]), label='rows')
        assert_that(out[ReadTable.DEAD] | beam.Map(lambda d: (d.row, d.reason)),
                    equal_to(expected[1]), label='dead')
        assert_that(out[ReadTable.SOURCES] | beam.Map(lambda s: s[2])
                    | beam.CombineGlobally(sum), equal_to([59]), label='sources')


def test_only_the_files_first_batch_can_condemn_its_encoding(tmp_path, monkeypatch):
    table = make_table(str(tmp_path), 'csv', encoding='gbk')
    good = [f'R{i},{i}.00,2024-02-01,否,备注{i}' for i in range(10)]
    bad = [f'R{i},{i}.00,2024-02-01,否,'.encode('gbk') + b'\xff\xfe' for i in range(10, 90)]
    with open(table.path, 'wb') as f:
        f.write(b'rid,amount,day,flag,note\n' + '\n'.join(good).encode('gbk') + b'\n'
                + b'\n'.join(bad) + b'\n')
    monkeypatch.setattr(read_ranges, 'MIN_RANGE_BYTES', 100)
    first, later = plan_ranges(FileMetadata(table.path, os.path.getsize(table.path)), table, 2)
    rows, dead, _ = read_range(table, later)  # over 20 rows, all undecodable: still just rows
    assert len(dead) >= encodings.WRONG_ENCODING_ROWS and not rows
    assert all(reason == 'malformed' for _, reason in dead)
