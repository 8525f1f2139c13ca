"""Change events: every accepted form read into one Change, everything else a problem in
words that never quotes a value."""

import json

import pytest

from transforms.stream.changes import Change, ChangeProblem, parse_change as parse_all

ROW = {'customer_id': 'C00000001', 'mobile': '13800001111'}
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in milliseconds
NOW = (T0 + 3_600_000) * 1000  # an hour later, in microseconds: when the feed is read


def parse_change(event):
    """The one item an event of one row gives."""
    [item] = parse_all(event, read_at=NOW)
    return item


def debezium(op='u', source=None, **fields):
    event = {'op': op, 'before': None, 'after': ROW,
             'source': {'table': 'customers', 'ts_ms': T0, 'lsn': 24023928, **(source or {})},
             'ts_ms': T0 + 5000}
    event.update(fields)
    return event


@pytest.mark.parametrize('event, expected', [
    (debezium('c'), ('customers', 'c', ROW, T0 * 1000, 'lsn', (24023928,), 'lsn:24023928')),
    (debezium('u'), ('customers', 'u', ROW, T0 * 1000, 'lsn', (24023928,), 'lsn:24023928')),
    (debezium('r'), ('customers', 'r', ROW, T0 * 1000, 'lsn', (24023928,), 'lsn:24023928')),
    (debezium('d', before=ROW, after=None),
     ('customers', 'd', ROW, T0 * 1000, 'lsn', (24023928,), 'lsn:24023928')),
    # Kafka Connect's wrapper
    ({'schema': {'type': 'struct'}, 'payload': debezium('c')},
     ('customers', 'c', ROW, T0 * 1000, 'lsn', (24023928,), 'lsn:24023928')),
    # MySQL binlog: file number, position, row in the event
    (debezium(source={'lsn': None, 'file': 'mysql-bin.000003', 'pos': 4567, 'row': 2}),
     ('customers', 'u', ROW, T0 * 1000, 'binlog', (3, 4567, 2), 'binlog:mysql-bin.000003:4567:2')),
    (debezium(source={'lsn': None, 'file': 'mysql-bin.000010', 'pos': 4}),
     ('customers', 'u', ROW, T0 * 1000, 'binlog', (10, 4, 0), 'binlog:mysql-bin.000010:4')),
    # SQL Server, Oracle, PostgreSQL's sequence
    (debezium(source={'lsn': None, 'change_lsn': '00000027:00000758:0003'}),
     ('customers', 'u', ROW, T0 * 1000, 'change_lsn', (0x27, 0x758, 3),
      'change_lsn:00000027:00000758:0003')),
    (debezium(source={'lsn': None, 'scn': '1234567'}),
     ('customers', 'u', ROW, T0 * 1000, 'scn', (1234567,), 'scn:1234567')),
    (debezium(source={'lsn': None, 'sequence': '["24023928","24023960"]'}),
     ('customers', 'u', ROW, T0 * 1000, 'sequence', (24023928, 24023960),
      'sequence:24023928,24023960')),
    # commit time in micro- or nanoseconds
    (debezium(source={'ts_ms': None, 'ts_us': T0 * 1000 + 7}),
     ('customers', 'u', ROW, T0 * 1000 + 7, 'lsn', (24023928,), 'lsn:24023928')),
    (debezium(source={'ts_ms': None, 'ts_ns': T0 * 10**6 + 7000}),
     ('customers', 'u', ROW, T0 * 1000 + 7, 'lsn', (24023928,), 'lsn:24023928')),
    # plain change rows
    ({'table': 'contracts', 'op': 'create', 'row': ROW, 'committed_at': '2026-01-01T08:00:00+08:00',
      'position': 42}, ('contracts', 'c', ROW, T0 * 1000, 'seq', (42,), 'seq:42')),
    ({'table': 'contracts', 'op': 'd', 'row': ROW, 'committed_at': T0, 'position': '7'},
     ('contracts', 'd', ROW, T0 * 1000, 'seq', (7,), 'seq:7')),
    ({'table': 'contracts', 'op': 'UPDATE', 'row': ROW, 'committed_at': '2026-01-01T00:00:00Z',
      'position': 8}, ('contracts', 'u', ROW, T0 * 1000, 'seq', (8,), 'seq:8')),
])
@pytest.mark.parametrize('exact', [False, True])
def test_every_accepted_form_reads_into_one_change(event, expected, exact):
    # as it arrives: JSON, read with numbers as numbers, or as their exact text (the feeds)
    text = json.dumps(event)
    change = parse_change(json.loads(text, parse_float=str, parse_int=str) if exact
                          else json.loads(text))
    assert isinstance(change, Change), change
    assert (change.table, change.op, change.row, change.committed_at, change.position_kind,
            change.position, change.position_text) == expected


@pytest.mark.parametrize('event, problem, table', [
    ('not an object', 'the event is not a JSON object', None),
    ([1, 2], 'the event is not a JSON object', None),
    ({'hello': 'world'}, 'not a change event: expected Debezium', None),
    (debezium('x'), 'op must be one of c, u, d, r', 'customers'),
    (debezium('u', after=None), "an update needs 'after' as an object", 'customers'),
    (debezium('d'), "a delete needs 'before' as an object", 'customers'),
    (debezium('c', after=['C00000001']), "a create needs 'after' as an object", 'customers'),
    (debezium(source={'table': None}), 'source.table is missing', None),
    (debezium(source={'ts_ms': 'yesterday'}), 'source.ts_ms must be an ISO 8601 time', 'customers'),
    (debezium(source={'lsn': 'abc'}), 'source.lsn must be an integer', 'customers'),
    (debezium(source={'lsn': None}), 'the event has no position', 'customers'),
    (debezium(source={'lsn': None, 'file': 'binlog', 'pos': 4}),
     'a binlog position needs source.file (ending in its number)', 'customers'),
    (debezium(source={'lsn': None, 'change_lsn': 'zz:01'}), 'source.change_lsn must be '
                                                            'hexadecimal', 'customers'),
    (debezium(source={'lsn': None, 'sequence': '[1, "x"]'}), 'source.sequence must be an '
                                                             'integer', 'customers'),
    (debezium(source={'lsn': None, 'sequence': '[1,'}), 'source.sequence is not valid JSON',
     'customers'),
    ({'table': '', 'op': 'c', 'row': ROW}, 'table must be a non-empty string', None),
    ({'table': 't', 'op': 'upsert', 'row': ROW}, 'op must be one of', 't'),
    ({'table': 't', 'op': 'c', 'row': 'C00000001'}, "a create needs 'row' as an object", 't'),
    ({'table': 't', 'op': 'c', 'row': ROW, 'committed_at': '2026-01-01 08:00:00',
      'position': 1}, 'committed_at must be an ISO 8601 time with its zone', 't'),
    ({'table': 't', 'op': 'c', 'row': ROW, 'committed_at': True, 'position': 1},
     'committed_at must be', 't'),
    ({'table': 't', 'op': 'c', 'row': ROW, 'committed_at': T0, 'position': 1.5},
     "position must be an integer", 't'),
])
def test_anything_else_is_a_problem_that_quotes_no_value(event, problem, table):
    got = parse_change(event)
    assert isinstance(got, ChangeProblem), got
    assert got.problem.startswith(problem) and got.table == table
    assert 'C00000001' not in got.problem and '13800001111' not in got.problem


def test_changes_of_one_source_order_by_position_whatever_their_time():
    # MySQL's binlog times are statement start times: they go backwards along the log
    events = [debezium(source={'ts_ms': T0 + 1, 'lsn': 5}), debezium(source={'lsn': 9}),
              debezium(source={'ts_ms': T0 + 9, 'lsn': 7})]
    ordered = sorted((parse_change(e) for e in events), key=lambda c: c.order)
    assert [c.position for c in ordered] == [(5,), (7,), (9,)]


def test_an_avro_feed_file_reads_record_by_record(tmp_path):
    import decimal
    import fastavro
    from transforms.stream.feeds import Feed, read_feed_file
    schema = {'type': 'record', 'name': 'Envelope', 'fields': [
        {'name': 'op', 'type': 'string'},
        {'name': 'before', 'type': ['null', {'type': 'map', 'values': 'string'}]},
        {'name': 'after', 'type': ['null', {'type': 'record', 'name': 'Value', 'fields': [
            {'name': 'customer_id', 'type': 'string'},
            {'name': 'income', 'type': {'type': 'bytes', 'logicalType': 'decimal',
                                        'precision': 10, 'scale': 2}}]}]},
        {'name': 'source', 'type': {'type': 'record', 'name': 'Source', 'fields': [
            {'name': 'table', 'type': 'string'}, {'name': 'ts_ms', 'type': 'long'},
            {'name': 'lsn', 'type': 'long'}]}}]}
    path = str(tmp_path / 'changes.avro')
    with open(path, 'wb') as f:
        fastavro.writer(f, schema, [
            {'op': 'c', 'before': None,
             'after': {'customer_id': 'C1', 'income': decimal.Decimal('8000.50')},
             'source': {'table': 'customers', 'ts_ms': T0, 'lsn': 7}},
            {'op': 'x', 'before': None, 'after': None,
             'source': {'table': 'customers', 'ts_ms': T0, 'lsn': 8}}])
    (tmp_path / 'broken.avro').write_bytes(b'not avro')
    feed = Feed('data', str(tmp_path / '*.avro'), 'changes')
    first, second, read = read_feed_file(feed, path)
    assert (read.lines, read.events) == (2, 2)
    assert (first.line, first.event.row, first.event.position) == (
        1, {'customer_id': 'C1', 'income': '8000.50'}, (7,))  # the decimal stays exact
    assert (second.line, second.event.problem) == (2, 'op must be one of c, u, d, r')
    broken, read = read_feed_file(feed, str(tmp_path / 'broken.avro'))
    assert broken.event.problem == 'not an Avro object container file'
    assert (read.lines, read.events) == (1, 1)


# ---------------------------------------------------------------------------------------------
# Each tool's own form (tests/cdc_forms.py writes them as the tools do)

from tests.cdc_forms import canal, datastream, debezium_connect, maxwell  # noqa: E402

S = 1_767_225_600  # 2026-01-01T00:00:00Z in seconds


def test_canal_flat_message_gives_one_change_per_row_in_order():
    rows = [{'customer_id': 'C1', 'mobile': '1'}, {'customer_id': 'C2', 'mobile': '2'}]
    changes = parse_all(canal('UPDATE', rows, old=[{'mobile': '0'}, {'mobile': '9'}],
                              es=T0, message_id=41), read_at=NOW)
    assert [(c.table, c.op, c.row, c.committed_at, c.position, c.source) for c in changes] == [
        ('t_customer', 'u', rows[0], T0 * 1000, (41, 0), 'canal:loan_db'),
        ('t_customer', 'u', rows[1], T0 * 1000, (41, 1), 'canal:loan_db')]
    assert changes[0].before == {'customer_id': 'C1', 'mobile': '0'}
    assert changes[0].database == 'loan_db'
    assert parse_all(canal('ALTER', [], ddl=True), read_at=NOW)[0].kind == 'schema_change'


def test_maxwell_times_are_seconds_and_its_position_orders():
    [change] = parse_all(maxwell('update', {'customer_id': 'C1'}, ts=S,
                                 position='mysql-bin.000004:1500', xoffset=2,
                                 old={'mobile': '0'}), read_at=NOW)
    assert (change.op, change.committed_at, change.position, change.source) == (
        'u', S * 10**6, (4, 1500, 2), 'maxwell:1')
    [read] = parse_all(maxwell('bootstrap-insert', {'customer_id': 'C1'}, ts=S), read_at=NOW)
    assert (read.op, read.position_kind) == ('r', 'snapshot')
    [marker] = parse_all(maxwell('bootstrap-start', None, ts=S), read_at=NOW)
    assert marker.kind == 'snapshot_marker'


@pytest.mark.parametrize('change_type, deleted, op, part', [
    ('INSERT', False, 'c', 1), ('UPDATE-INSERT', False, 'u', 1),
    ('UPDATE-DELETE', True, 'd', 0), ('DELETE', True, 'd', 1)])
def test_datastream_change_types(change_type, deleted, op, part):
    [change] = parse_all(datastream({'customer_id': 'C1'}, change_type, deleted, T0),
                         read_at=NOW)
    assert (change.op, change.part, change.committed_at, change.position) == (
        op, part, T0 * 1000, (3, 777))


def test_datastream_backfill_is_a_snapshot_read():
    [change] = parse_all(datastream({'customer_id': 'C1'}, 'INSERT', False, T0,
                                    backfill=True), read_at=NOW)
    assert (change.op, change.position_kind) == ('r', 'snapshot')


def test_debezium_default_encodings_are_decoded_from_the_connect_schema():
    after = {'customer_id': 'C1', 'birth_date': 7305, 'signed_at': T0 + 123,
             'opened_at': (T0 + 123) * 1000 + 4, 'income': 'AeI=',  # 482 at scale 2
             'vip': 1, 'updated_at': '2026-01-01T00:00:00Z'}
    [change] = parse_all(json.loads(json.dumps(debezium_connect(after, T0))), read_at=NOW)
    assert change.row == {'customer_id': 'C1', 'birth_date': '1990-01-01',
                          'signed_at': '2026-01-01 00:00:00.123000',
                          'opened_at': '2026-01-01 00:00:00.123004', 'income': '4.82',
                          'vip': 1, 'updated_at': '2026-01-01T00:00:00Z'}
    assert not change.encoded  # decoded here: the table's types are not needed


def test_flink_cdc_snapshot_reads_are_read_now():
    event = debezium('r', source={'ts_ms': 0, 'lsn': None, 'file': '', 'pos': 0})
    change = parse_change(event)
    assert (change.op, change.committed_at, change.position) == ('r', NOW, (0, 0, 0))


@pytest.mark.parametrize('line, kind', [
    (None, 'tombstone'), ({'schema': {}, 'payload': None}, 'tombstone'),
    ({'ts_ms': T0}, 'heartbeat'),
    ({'status': 'BEGIN', 'id': '571:53195829', 'ts_ms': T0, 'event_count': None}, 'transaction'),
    ({'source': {'table': 'customers'}, 'databaseName': 'loan_db',
      'ddl': 'ALTER TABLE t_customer ADD COLUMN tenant_id INT', 'tableChanges': []},
     'schema_change'),
    (debezium('m'), 'message')])
def test_lines_that_are_no_change_are_counted_by_kind(line, kind):
    assert parse_change(line).kind == kind


@pytest.mark.parametrize('value, unit, expected', [
    (S, None, S * 10**6),                    # seconds: plausible only as seconds
    (T0, None, T0 * 1000),                   # milliseconds
    (T0 * 1000 + 5, None, T0 * 1000 + 5),    # microseconds
    (T0 * 10**6, None, T0 * 1000),           # nanoseconds
    ('2026-01-01T08:00:00+08:00', None, S * 10**6),
    (S, 's', S * 10**6),
])
def test_integer_times_are_read_in_the_one_unit_that_makes_them_plausible(value, unit,
                                                                          expected):
    from transforms.stream.changes import TimeRules
    [change] = parse_all({'table': 't', 'op': 'c', 'row': ROW, 'committed_at': value,
                          'position': 1}, read_at=NOW, rules=TimeRules(unit=unit))
    assert change.committed_at == expected


@pytest.mark.parametrize('value', [
    1796650012 * 1000 * 10**6,  # beyond any unit
    2**63,                      # beyond a 64-bit time in ms
    '9999-12-31T23:59:59+00:00',  # far ahead of the clock
    '1999-12-31T23:59:59+00:00',  # before stream.not_before
    S + 7 * 86_400,             # a week ahead
    12345,                      # 1970 in any unit
])
def test_an_implausible_time_is_refused_with_its_own_reason(value):
    got = parse_change({'table': 't', 'op': 'c', 'row': ROW, 'committed_at': value,
                        'position': 1})
    assert isinstance(got, ChangeProblem) and got.reason == 'implausible_time', got
    assert str(value) not in got.problem


def test_a_time_stated_in_the_wrong_unit_is_refused_not_misread():
    from transforms.stream.changes import TimeRules
    [got] = parse_all({'table': 't', 'op': 'c', 'row': ROW, 'committed_at': S,
                       'position': 1}, read_at=NOW, rules=TimeRules(unit='ms'))
    assert got.reason == 'implausible_time'  # seconds read as ms would be 1970-01-21
