"""Change events: every accepted form read into one Change, everything else a problem in
words that never quotes a value."""

import json

import pytest

from transforms.changes import Change, ChangeProblem, parse_change

ROW = {'customer_id': 'C00000001', 'mobile': '13800001111'}
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in milliseconds


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
    ({'hello': 'world'}, 'not a change event: expected a Debezium envelope', None),
    (debezium('x'), 'op must be one of c, u, d, r', 'customers'),
    (debezium('u', after=None), "an update needs 'after' as an object", 'customers'),
    (debezium('d'), "a delete needs 'before' as an object", 'customers'),
    (debezium('c', after=['C00000001']), "a create needs 'after' as an object", 'customers'),
    (debezium(source={'table': None}), 'source.table is missing', None),
    (debezium(source={'ts_ms': 'yesterday'}), 'source.ts_ms (the commit time', 'customers'),
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


def test_changes_order_by_commit_time_then_position():
    events = [debezium(source={'ts_ms': T0 + 1, 'lsn': 5}), debezium(source={'lsn': 9}),
              debezium(source={'lsn': 7})]
    ordered = sorted((parse_change(e) for e in events), key=lambda c: c.order)
    assert [c.position for c in ordered] == [(7,), (9,), (5,)]


def test_an_avro_feed_file_reads_record_by_record(tmp_path):
    import decimal
    import fastavro
    from transforms.feeds import Feed, read_feed_file
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
    first, second = read_feed_file(feed, path)
    assert (first.line, first.event.row, first.event.position) == (
        1, {'customer_id': 'C1', 'income': '8000.50'}, (7,))  # the decimal stays exact
    assert (second.line, second.event.problem) == (2, 'op must be one of c, u, d, r')
    [broken] = read_feed_file(feed, str(tmp_path / 'broken.avro'))
    assert broken.event.problem == 'not an Avro object container file'
