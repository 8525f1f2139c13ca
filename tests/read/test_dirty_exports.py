"""Dirty seller exports in every format: every input row comes out exactly once, either in a
batch or as a dead letter with a reason, and no input value ever appears in a reason.

The read DoFn and conform are called directly (no pipeline per example) so Hypothesis can try
many files quickly.
"""

import csv
import datetime
import decimal
import io
import json
import os
import re

import fastavro
from apache_beam.pvalue import TaggedOutput
from hypothesis import HealthCheck, given, settings, strategies as st
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from config import load_config
from transforms.common.batches import ROW
from transforms.conform.conform import conform_batch
from transforms.common.errors import InputError
from transforms.read.ranges import FileRange
from transforms.read.tables import ReadTable, _ReadBatchesFn

# Every free-text value generated carries this letter, which no reason text contains: a leak of
# any value into a dead letter's field or problem would show.
MARK = 'ж'
COLUMNS = ('rid', 'amount', 'day', 'flag', 'note')
SCHEMA = {
    'type': 'record', 'name': 't', 'subject_key': 'rid',
    'fields': [
        {'name': 'rid', 'type': 'string', 'classification': 'personal',
         'category': 'customer_id', 'aliases': ['编号']},
        {'name': 'amount', 'type': ['null', {'type': 'bytes', 'logicalType': 'decimal',
                                             'precision': 10, 'scale': 2}],
         'classification': 'personal', 'category': 'amount'},
        {'name': 'day', 'type': ['null', {'type': 'int', 'logicalType': 'date'}],
         'classification': 'internal'},
        {'name': 'flag', 'type': ['null', 'boolean'], 'classification': 'internal'},
        {'name': 'note', 'type': ['null', 'string'], 'classification': 'personal',
         'category': 'free_text'},
        {'name': 'at', 'type': ['null', {'type': 'long', 'logicalType': 'timestamp-micros'}],
         'classification': 'internal'},
    ]}


def make_table(directory, fmt, **options):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, 't.avsc'), 'w', encoding='utf-8') as f:
        json.dump(SCHEMA, f, ensure_ascii=False)
    config = {
        'transfer': {'seller': 's', 'acquirer': 'a', 'source_region': 'CN',
                     'destination_region': 'CN',
                     'purposes': [{'name': 'p', 'legal_basis': 'contract'}]},
        'tables': {'t': {'path': f'data.{fmt}', 'format': fmt, 'schema': 't.avsc',
                         **options}},
        'consent': {'registry': 'r.csv', 'erasures': 'e.csv'},
        'masking': {'defaults': {'public': 'keep', 'internal': 'keep', 'personal': 'hash',
                                 'sensitive': 'tokenize', 'restricted': 'drop'}},
        'output': {'path': 'out', 'keys': 'keys'},
    }
    path = os.path.join(directory, 'c.yaml')
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(config, f, allow_unicode=True)
    return load_config(path).table('t')


def read_file(table):
    """Run the read DoFn on the table's file, then conform: (kept rows, dead letters, read)."""
    path = table.path
    kept, dead, rows_read, ignored = [], [], None, None
    for out in _ReadBatchesFn(table).process(FileRange(path)):
        if isinstance(out, TaggedOutput):
            if out.tag == ReadTable.DEAD:
                dead.append(out.value)
            else:
                rows_read, ignored = out.value.rows_read, out.value.ignored
            continue
        typed, letters = conform_batch(out, table)
        kept += typed.column(ROW).to_pylist()
        dead += letters
    return kept, dead, rows_read, ignored


def assert_each_row_once(kept, dead, rows_read, n):
    numbers = sorted(kept + [d.row for d in dead])
    assert numbers == list(range(1, n + 1))
    assert rows_read == n


def assert_no_value_in_reasons(dead, values):
    """No generated free-text value (each carries MARK) appears in a field or problem."""
    for d in dead:
        text = f'{d.field} {d.problem}'
        assert MARK not in text
        assert not [v for v in values if v and MARK in v and v in text]


def write_and_check(table, lines, n, values):
    """Write ``lines`` as the table's file, read it, check both properties; the dead letters."""
    with open(table.path, 'wb') as f:
        f.write(b'\n'.join(lines) + b'\n')
    kept, dead, rows_read, _ = read_file(table)
    assert_each_row_once(kept, dead, rows_read, n)
    assert_no_value_in_reasons(dead, values)
    return dead


# -- generated rows ----------------------------------------------------------------------------

_text = st.text(st.characters(codec='gbk', exclude_characters='\r\n\x00"'), max_size=6).map(
    lambda s: MARK + s)
_good = st.fixed_dictionaries({
    'amount': st.decimals(min_value=-10**7, max_value=10**7, places=2).map(str),
    'day': st.dates(min_value=datetime.date(1950, 1, 1)).map(str),
    'flag': st.sampled_from(['true', 'false', '是', '否', 'Y', 'N']),
    'note': _text,
})
_garbage_value = st.one_of(_text, st.just('2023-02-30'), st.just('1,000'), st.just('maybe'),
                           st.just('"' + MARK + '"x'), st.just(MARK + '"q"'))
_record = st.tuples(_good, st.dictionaries(st.sampled_from(['amount', 'day', 'flag']),
                                           _garbage_value, max_size=2),
                    st.sampled_from(['ok', 'ok', 'ok', 'short', 'long', 'badbytes', 'noid']))


def rows_of(records):
    """(values in column order, kind) with a unique rid per record."""
    out = []
    for i, (good, garbage, kind) in enumerate(records, 1):
        values = {'rid': f'R{i}{MARK}', **good, **garbage}
        out.append(([values[c] for c in COLUMNS], kind))
    return out


# -- CSV ---------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_record, min_size=1, max_size=30), encoding=st.sampled_from(
    ['gbk', 'gb18030', 'utf-8', 'utf-8-sig']))
def test_csv_every_row_once(tmp_path_factory, records, encoding):
    directory = str(tmp_path_factory.mktemp('csv'))
    table = make_table(directory, 'csv', encoding=encoding)
    lines = [','.join(COLUMNS).encode(encoding)]
    values = []
    for row, kind in rows_of(records):
        values += row
        if kind == 'short':
            row = row[:3]
        elif kind == 'long':
            row = row + [MARK + 'extra']
        elif kind == 'noid':
            row = [''] + row[1:]
        buf = io.StringIO()
        csv.writer(buf, lineterminator='').writerow(row)
        line = buf.getvalue().encode(encoding.replace('-sig', ''))
        if kind == 'badbytes':
            line += b'\xff\xfe\x81'  # bytes no Chinese encoding or UTF-8 can decode
        lines.append(line)
    dead = write_and_check(table, lines, len(records), values)
    bad_bytes = {i for i, (_, _, k) in enumerate(records, 1) if k == 'badbytes'}
    assert bad_bytes <= {d.row for d in dead}
    for d in dead:
        assert d.reason in ('malformed', 'missing_required')


def test_csv_unterminated_quote_costs_its_record_only(tmp_path):
    table = make_table(str(tmp_path), 'csv')
    data = ('rid,amount,day,flag,note\nR1,1.00,2024-01-02,Y,"open' + MARK + '\n'
            'R2,2.00,2024-01-02,Y,x\nR3,3.00,2024-01-02,Y,"y"\n')
    (tmp_path / 'data.csv').write_text(data, encoding='utf-8')
    kept, dead, rows_read, _ = read_file(table)
    # The quote opened in R1 would run to R3's quote and take R2 in (transforms.read.csv_records):
    # R1 is a dead letter, R2 and R3 are read as themselves, and nothing leaks.
    assert (kept, [(d.row, d.reason) for d in dead], rows_read) == ([2, 3], [(1, 'malformed')], 3)
    assert_no_value_in_reasons(dead, ['open' + MARK])


def test_csv_quoted_newlines_headerless_and_other_delimiters(tmp_path):
    table = make_table(str(tmp_path), 'csv', delimiter=';', quote="'", header=False)
    (tmp_path / 'data.csv').write_text(
        "R1;1.5;2024/1/2;是;'two\nlines; here';2024-01-02 10:00\nR2;;;;;\n", encoding='utf-8')
    kept, dead, rows_read, _ = read_file(table)
    assert (kept, dead, rows_read) == ([1, 2], [], 2)


def test_csv_aliases_and_ignored_columns(tmp_path):
    table = make_table(str(tmp_path), 'csv', extra_columns='ignore')
    (tmp_path / 'data.csv').write_text('编号,amount,微信号\nR1,1.00,wx\n', encoding='utf-8')
    kept, dead, rows_read, ignored = read_file(table)
    assert (kept, dead, rows_read, ignored) == ([1], [], 1, ['微信号'])


@pytest.mark.parametrize('fmt, text', [
    ('csv', 'rid,amount,day\nR1,1.00,2024-01-02\n'),
    ('jsonl', '{"rid": "R1", "amount": "1.00", "day": "2024-01-02"}\n{"rid": "R2"}\n'),
])
def test_fields_no_column_holds_are_named(tmp_path, fmt, text):
    table = make_table(str(tmp_path), fmt)
    (tmp_path / f'data.{fmt}').write_text(text, encoding='utf-8')
    missing = [out.value.missing for out in _ReadBatchesFn(table).process(FileRange(table.path))
               if isinstance(out, TaggedOutput) and out.tag == ReadTable.SOURCES]
    assert missing == [['flag', 'note', 'at']]  # schema order; 'amount' is in one record


@pytest.mark.parametrize('header, message', [
    ('rid,amount,微信号', 'column(s) not in the schema (unclassified): 微信号'),
    ('amount,day', 'missing required column(s) rid'),
    ('rid,编号', "columns 'rid' and '编号' both map to field 'rid'"),
])
def test_csv_column_problems_are_file_errors(tmp_path, header, message):
    table = make_table(str(tmp_path), 'csv')
    (tmp_path / 'data.csv').write_text(header + '\nR1,1\n', encoding='utf-8')
    with pytest.raises(InputError, match=re.escape(message)):
        read_file(table)


@pytest.mark.parametrize('first_line', [
    'rid,鞠雪,M,11010519491231002X,13812345678,xue.ju@example.cn',
    'rid,鞠雪,13812345678',
    'rid,amount,6222020200112233445',
])
def test_a_first_line_that_holds_values_is_never_echoed(tmp_path, first_line):
    """A header line that is partly a customer's record: the column names are not shown
    (the name next to an ID number may be the customer's own)."""
    table = make_table(str(tmp_path), 'csv')
    (tmp_path / 'data.csv').write_text(first_line + '\nR1,1\n', encoding='utf-8')
    with pytest.raises(InputError) as caught:
        read_file(table)
    message = str(caught.value)
    assert 'not shown' in message and 'may be a record, not a header' in message
    assert not any(value in message for value in first_line.split(',')[1:])


@pytest.mark.parametrize('data, message', [
    (b'rid,amount\rR1,1\rR2,2\r', 'its lines end in a lone CR'),
    (b'rid,amount\r' + b'R1,1\r' * 300_000, 'over 1024 KiB without a line ending'),
    (b'rid,"amount\nR1,1\n', 'the header line cannot be split into columns'),
])
def test_a_header_that_cannot_be_read_is_one_error(tmp_path, data, message):
    table = make_table(str(tmp_path), 'csv')
    (tmp_path / 'data.csv').write_bytes(data)
    with pytest.raises(InputError, match=message):
        read_file(table)


@pytest.mark.parametrize('body', [b'R1,"' + b'x' * (2 << 20) + b'\n',
                                  b'R1,' + b'\x00' * (1 << 20) + b',1\n'])
def test_a_huge_field_is_one_record_not_a_crash(tmp_path, body):
    table = make_table(str(tmp_path), 'csv')
    (tmp_path / 'data.csv').write_bytes(b'rid,amount,day,flag,note,at\nR0,1,2024-01-02,1,a,'
                                        b'2024-01-02 08:00:00\n' + body)
    kept, dead, rows_read, _ = read_file(table)
    assert len(kept) + len(dead) >= 2 and rows_read == 2


def test_parquet_text_that_is_not_utf8_is_a_dead_letter_not_a_crash(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = make_table(str(tmp_path), 'parquet')
    notes = pa.array([b'ok', b'\xb5\xfe', b'fine'], pa.binary()).view(pa.string())
    pq.write_table(pa.table({'rid': ['R1', 'R2', 'R3'], 'amount': ['1', '2', '3'],
                             'note': notes}), table.path)
    kept, dead, rows_read, _ = read_file(table)
    assert (sorted(kept), rows_read) == ([1, 3], 3)
    [letter] = dead
    assert (letter.row, letter.reason, letter.field, letter.subject) == (2, 'malformed', 'note',
                                                                         'R2')


def test_records_whose_keys_name_no_field_are_one_error_without_values(tmp_path):
    table = make_table(str(tmp_path), 'jsonl')
    (tmp_path / 'data.jsonl').write_text('{"C00000001": "鞠雪"}\n', encoding='utf-8')
    with pytest.raises(InputError, match='none of its 1 column names is a field') as caught:
        read_file(table)
    assert 'C00000001' not in str(caught.value) and '鞠雪' not in str(caught.value)


@pytest.mark.parametrize('name, looks', [
    ('customer_id', False), ('微信号', False), ('备注 (remarks)', False), ('col2', False),
    ('13812345678', True), ('11010519491231002X', True), ('a@b.cn', True),
    ('x' * 65, True), ('2024-01-02 08:00:00', True),
])
def test_looks_like_value(name, looks):
    from transforms.read.columns import looks_like_value
    assert looks_like_value(name) is looks


def test_a_file_in_the_wrong_encoding_is_one_error_with_the_offset(tmp_path):
    table = make_table(str(tmp_path), 'csv', encoding='utf-8')
    rows = ''.join(f'R{i},1.00,2024-01-02,是,备注{i}\n' for i in range(50))
    (tmp_path / 'data.csv').write_bytes(('rid,amount,day,flag,note\n' + rows).encode('gbk'))
    with pytest.raises(InputError, match=r'is not valid utf-8: the first bad byte sequence is '
                                         r'at byte offset 44'):  # the GBK 是 of the first row
        read_file(table)


# -- JSON Lines --------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_record, min_size=1, max_size=30))
def test_jsonl_every_row_once(tmp_path_factory, records):
    directory = str(tmp_path_factory.mktemp('jsonl'))
    table = make_table(directory, 'jsonl', extra_columns='ignore')
    lines, values = [], []
    for row, kind in rows_of(records):
        values += row
        record = dict(zip(COLUMNS, row))
        if kind == 'short':
            text = json.dumps(record, ensure_ascii=False)[:-7]  # cut off mid-record
        elif kind == 'long':
            text = json.dumps([record], ensure_ascii=False)  # not an object
        elif kind == 'noid':
            del record['rid']
            text = json.dumps(record, ensure_ascii=False)
        else:
            record['extra'] = MARK
            text = json.dumps(record, ensure_ascii=False)
        line = text.encode('utf-8')
        if kind == 'badbytes':
            line = line.replace(MARK.encode(), b'\xff', 1)  # not UTF-8 any more
        lines.append(line)
    write_and_check(table, lines, len(records), values)


# -- Avro and Parquet: typed containers, garbage lives in the types ------------------------------

_AVRO = fastavro.parse_schema({'type': 'record', 'name': 'legacy', 'fields': [
    {'name': 'rid', 'type': ['null', 'string']}, {'name': 'amount', 'type': ['null', 'string']},
    {'name': 'day', 'type': ['null', 'string', 'long']},
    {'name': 'flag', 'type': ['null', 'string']}, {'name': 'note', 'type': ['null', 'string']}]})


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_record, min_size=1, max_size=30), typed_days=st.booleans())
def test_avro_and_parquet_every_row_once(tmp_path_factory, records, typed_days):
    rows, values = [], []
    for i, (row, kind) in enumerate(rows_of(records)):
        values += row
        record = dict(zip(COLUMNS, row))
        if kind == 'noid':
            record['rid'] = None
        if typed_days and i % 3 == 0:
            record['day'] = 20240102  # a number where a date is expected
        rows.append(record)
    directory = str(tmp_path_factory.mktemp('typed'))
    avro = make_table(directory, 'avro')
    with open(avro.path, 'wb') as f:
        fastavro.writer(f, _AVRO, rows, codec='deflate')
    parquet = make_table(directory, 'parquet')
    pq.write_table(pa.Table.from_pylist(
        [{**r, 'day': None if r['day'] is None else str(r['day'])} for r in rows]),
        parquet.path)
    for table in (avro, parquet):
        kept, dead, rows_read, _ = read_file(table)
        assert_each_row_once(kept, dead, rows_read, len(records))
        assert_no_value_in_reasons(dead, values)
        no_id = {i for i, (_, _, k) in enumerate(records, 1) if k == 'noid'}
        assert no_id <= {d.row for d in dead}
        assert {d.row for d in dead if d.reason == 'missing_required'} <= no_id


# -- round trips: values written by an independent writer come back typed and exact -------------

UTC = datetime.timezone.utc
ROUND = COLUMNS + ('at',)
EXACT = [
    {'rid': 'R1', 'amount': decimal.Decimal('12345678.91'), 'day': datetime.date(2024, 2, 29),
     'flag': True, 'note': '张三丰',
     'at': datetime.datetime(2024, 1, 2, 0, 0, 0, 123456, tzinfo=UTC)},
    {'rid': 'R2', 'amount': decimal.Decimal('-0.01'), 'day': datetime.date(1950, 1, 1),
     'flag': False, 'note': None, 'at': datetime.datetime(1999, 12, 31, 16, 0, tzinfo=UTC)},
    {'rid': 'R3', 'amount': None, 'day': None, 'flag': None, 'note': 'a,"b"\nc', 'at': None},
]


def local_text(at):
    """A timestamp as a seller writes it: naive, in Asia/Shanghai (UTC+8)."""
    return '' if at is None else (at + datetime.timedelta(hours=8)).strftime(
        '%Y-%m-%d %H:%M:%S.%f')


def _typed(table):
    kept = []
    path = table.path
    for out in _ReadBatchesFn(table).process(FileRange(path)):
        if not isinstance(out, TaggedOutput):
            typed, dead = conform_batch(out, table)
            assert not dead
            kept += typed.select(list(ROUND)).to_pylist()
    return kept


def test_round_trip_csv(tmp_path):
    table = make_table(str(tmp_path), 'csv', encoding='gb18030')
    with open(table.path, 'w', encoding='gb18030', newline='') as f:
        w = csv.writer(f)
        w.writerow(ROUND)
        for r in EXACT:
            w.writerow(['' if r[c] is None else str(r[c]).lower() if c == 'flag' else r[c]
                        for c in COLUMNS] + [local_text(r['at'])])
    assert _typed(table) == EXACT


def test_round_trip_jsonl(tmp_path):
    # Amounts as JSON numbers: read from their text, so no float rounding; timestamps with
    # an explicit offset.
    table = make_table(str(tmp_path), 'jsonl')
    with open(table.path, 'w', encoding='utf-8') as f:
        for r in EXACT:
            f.write(json.dumps({
                **r, 'amount': None if r['amount'] is None else float(r['amount']),
                'day': None if r['day'] is None else r['day'].isoformat(),
                'at': None if r['at'] is None else r['at'].astimezone(
                    datetime.timezone(datetime.timedelta(hours=8))).isoformat()},
                ensure_ascii=False) + '\n')
    assert _typed(table) == EXACT


def test_round_trip_avro(tmp_path):
    table = make_table(str(tmp_path), 'avro')
    schema = fastavro.parse_schema({**{k: v for k, v in SCHEMA.items()
                                       if k in ('type', 'name')},
                                    'fields': [{'name': f['name'], 'type': f['type']}
                                               for f in SCHEMA['fields']]})
    with open(table.path, 'wb') as f:
        fastavro.writer(f, schema, EXACT)
    assert _typed(table) == EXACT


def test_round_trip_parquet_with_timestamps(tmp_path):
    table = make_table(str(tmp_path), 'parquet')
    pq.write_table(pa.Table.from_pylist(EXACT, schema=pa.schema([
        ('rid', pa.string()), ('amount', pa.decimal128(10, 2)), ('day', pa.date32()),
        ('flag', pa.bool_()), ('note', pa.string()), ('at', pa.timestamp('us', tz='UTC'))])),
        table.path)
    assert _typed(table) == EXACT


@pytest.mark.parametrize('header', ['rid,amount,day', '编号,amount,day'])
def test_a_row_of_the_wrong_width_keeps_its_subject_under_an_alias_too(tmp_path, header):
    """An erased customer's broken row must be recognised as theirs (sealing then counts it as
    erasure_requested and keeps no raw row)."""
    from transforms.write.deadletter import seal
    table = make_table(str(tmp_path), 'csv')
    (tmp_path / 'data.csv').write_text(f'{header}\nR1,1.00,2024-01-02,extra\nR2,1.00\n',
                                       encoding='utf-8')
    _, dead, _, _ = read_file(table)
    assert [(d.reason, d.subject) for d in dead] == [('malformed', 'R1'), ('malformed', 'R2')]
    sealed = [seal(d, {'R1'}, lambda s: f'p({s})') for d in dead]
    assert [(s['reason'], s['raw'] is None) for s in sealed] == [
        ('erasure_requested', True), ('malformed', False)]


@pytest.mark.parametrize('data', [b'[{"rid": "R1"},\n{"rid": "R2"}]\n',
                                  b'\xef\xbb\xbf  [\n  {"rid": "R1"}\n]\n'])
def test_a_json_array_given_as_json_lines_is_one_clear_error(tmp_path, data):
    table = make_table(str(tmp_path), 'jsonl')
    (tmp_path / 'data.jsonl').write_bytes(data)
    with pytest.raises(InputError, match='is a JSON array, not JSON Lines'):
        read_file(table)


def test_jsonl_lines_no_reader_could_hold_are_dead_letters(tmp_path):
    table = make_table(str(tmp_path), 'jsonl')
    lines = ['{"rid": "R1"}', '{"rid": "R2", "note": ' + '[' * 100_000 + ']' * 100_000 + '}',
             '{"rid": "R3", "note": "\\ud800"}', '{"rid": "R4", "note": "\\ud83d\\ude00"}']
    (tmp_path / 'data.jsonl').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    kept, dead, rows_read, _ = read_file(table)
    assert (kept, sorted((d.row, d.reason) for d in dead), rows_read) == (
        [1, 4], [(2, 'malformed'), (3, 'malformed')], 4)


def test_a_hundred_thousand_extra_columns_are_one_short_line(tmp_path):
    table = make_table(str(tmp_path), 'csv')
    extra = [f'x{i}' for i in range(100_000)]
    (tmp_path / 'data.csv').write_text(','.join(list(COLUMNS) + extra) + '\n', encoding='utf-8')
    with pytest.raises(InputError) as e:
        read_file(table)
    assert 'x0, x1' in str(e.value) and 'and 99,980 more' in str(e.value)
    assert len(str(e.value)) < 1000
