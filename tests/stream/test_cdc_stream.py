"""The stream's reading of CDC, pure: routing (table names, key changes, key-only deletes,
Debezium's encodings without the Connect schema), each row's changes in its log's order, the
count of every feed event, and lines that must not stop a stream."""

import json
import random

import pytest

from tests.pipelines.test_fuzz import _places
from transforms.stream.cdc_values import plain_row
from transforms.stream.changes import Change, ChangeProblem, JsonNumber, NotAChange, TimeRules
from transforms.stream.chain import conservation, epoch_line
from transforms.stream.feeds import Feed, FeedEvent, parse_json_event, read_feed_file
from transforms.stream.order import verdict
from transforms.stream.consent import ChangeEvent, Counted, Decided, route

T = 1_767_225_600 * 10**6  # 2026-01-01T00:00:00Z, microseconds
NOW = T + 3_600 * 10**6
FEED = Feed('data', 'feeds/*.jsonl', 'changes')


@pytest.fixture(scope='module')
def tables(tmp_path_factory):
    import os
    import shutil
    from config import load_config
    from tests.conftest import ROOT as root
    where = tmp_path_factory.mktemp('config')
    shutil.copy(os.path.join(root, 'config', 'demo.yaml'), where / 'demo.yaml')
    shutil.copytree(os.path.join(root, 'schemas'), where / 'schemas',
                    ignore=shutil.ignore_patterns('*.py', '__pycache__'))
    config = load_config(str(where / 'demo.yaml'))
    return {t.name: t for t in config.tables}


def contract(op, row, before=None, table='contracts', database=''):
    return FeedEvent('data', 'f.jsonl', 4, Change(table, op, row, T, 'binlog', (3, 100, 0),
                                                  'binlog:mysql-bin.000003:100',
                                                  source='mysql:seller', before=before,
                                                  database=database))


ROW = {'contract_id': 'L2', 'customer_id': 'C1', 'principal': '1000.00'}


def test_a_key_change_is_a_delete_of_the_old_key_then_the_new_row(tables):
    got = route(contract('u', ROW, before={**ROW, 'contract_id': 'L1'}), tables)
    (s1, gone), (s2, changed) = got
    assert (s1, gone.change.op, gone.key, gone.change.part, gone.index) == ('C1', 'd', 'L1', 0, -1)
    assert (s2, changed.change.op, changed.key, changed.change.part) == ('C1', 'u', 'L2', 1)


def test_a_delete_with_only_its_key_needs_no_consent(tables):
    [decided] = route(contract('d', {'contract_id': 'L1'}), tables)
    assert isinstance(decided, Decided) and decided.reason is None
    assert decided.event.key == 'L1'


def test_the_sellers_table_names_map_to_the_configs(tables):
    names = {'loan_db.t_contract': 'contracts'}
    [(subject, event)] = route(contract('c', ROW, table='t_contract', database='loan_db'),
                               tables, names)
    assert (subject, event.change.table) == ('C1', 'contracts')
    [problem] = route(contract('c', ROW, table='t_contract', database='other_db'), tables,
                      names)
    assert isinstance(problem, ChangeProblem) and 'stream.tables' in problem.problem


def test_a_row_without_its_primary_key_is_missing_required(tables):
    [problem] = route(contract('u', {'customer_id': 'C1'}), tables)
    assert (problem.reason, problem.table) == ('missing_required', 'contracts')


def test_consent_and_other_lines_are_counted_where_they_are_read(tables):
    from transforms.consent.events import ConsentEvent
    grant = ConsentEvent('C1', 'grant', 'credit_management', T, 0)
    counted, pair = route(FeedEvent('consent', 'c.jsonl', 2, grant), tables)
    assert counted == Counted('c.jsonl', 2, 0, 'consent_event', T) and pair == ('C1', grant)
    assert route(FeedEvent('registry', 'r.csv', 2, grant), tables) == [('C1', grant)]
    [blank] = route(FeedEvent('data', 'f.jsonl', 9, NotAChange('heartbeat')), tables)
    assert blank.outcome == 'not_a_change:heartbeat'


KINDS = {'birth_date': ('date', None), 'signed_at': ('timestamp', None),
         'income': ('decimal', 2)}


@pytest.mark.parametrize('row, mode, expected', [
    ({'birth_date': JsonNumber('7305')}, 'precise', {'birth_date': '1990-01-01'}),
    ({'signed_at': JsonNumber(str(T // 1000 + 5))}, 'precise',
     {'signed_at': '2026-01-01 00:00:00.005000'}),                     # epoch ms
    ({'signed_at': JsonNumber(str(T + 5))}, 'precise',
     {'signed_at': '2026-01-01 00:00:00.000005'}),                     # epoch µs
    ({'signed_at': JsonNumber(str(T * 1000))}, 'precise',
     {'signed_at': '2026-01-01 00:00:00'}),                            # epoch ns
    ({'income': 'AeI='}, 'precise', {'income': '4.82'}),              # base64 bytes
    ({'income': '4.82'}, 'string', {'income': '4.82'}),
    ({'income': JsonNumber('4.82')}, 'precise', {'income': '4.82'}),  # double mode
    ({'birth_date': '1990-01-01'}, 'precise', {'birth_date': '1990-01-01'}),  # already text
])
def test_debezium_encodings_without_the_connect_schema_read_by_the_tables_types(row, mode,
                                                                              expected):
    got, bad = plain_row(row, KINDS, True, mode)
    assert (got, bad) == (expected, None)
    assert all(type(v) is str for v in got.values())  # no JsonNumber crosses the boundary


def test_a_value_not_in_its_encoding_names_the_column_not_the_value():
    got, bad = plain_row({'income': '4.82'}, KINDS, True, 'precise')  # text in precise mode
    assert bad == 'income'


@pytest.mark.parametrize('last, new, outcome', [
    (None, ('s', (3, 100), 1, T), None),
    (('s', (3, 100), 1, T), ('s', (3, 100), 1, T), 'repeat'),
    (('s', (3, 100), 1, T), ('s', (3, 90), 1, T + 5), 'superseded'),  # later time, older
    (('s', (3, 90), 1, T + 5), ('s', (3, 100), 1, T), None),          # earlier time, newer
    (('s', (3, 100), 0, T), ('s', (3, 100), 1, T), None),             # a key change's halves
    (('s', (0, 0, 0), 1, NOW), ('s', (3, 100, 0), 1, T), None),       # a snapshot read, then
    (('a', (9,), 1, T + 5), ('b', (1,), 1, T), 'superseded'),         # other logs: by time
])
def test_a_rows_changes_are_taken_in_its_logs_order(last, new, outcome):
    assert verdict(last, new) == outcome


@pytest.mark.parametrize('line, problem', [
    (b'[' * 100_000 + b']' * 100_000, 'not a JSON value on one line'),
    (b'{"a":' * 70 + b'1' + b'}' * 70, 'the value is nested more than 64 deep'),
    (b'{"table": "t", "op": "c", "row": {"x": "\\ud800"}, "committed_at": 1, "position": 1}',
     'a string holds a lone surrogate escape'),
    ('{"x": "中"}'.encode('gbk'), 'the line is not UTF-8'),
])
def test_no_line_can_stop_the_stream(line, problem):
    [got] = parse_json_event(FEED, line, NOW)
    assert isinstance(got, ChangeProblem) and got.problem.startswith(problem)


def test_a_consent_event_in_seconds_is_read_as_seconds_not_1970():
    consent = Feed('consent', 'c/*.jsonl', 'consent', rules=TimeRules())
    [event] = parse_json_event(consent, b'{"subject_id": "C1", "event": "withdraw", '
                                        b'"purpose": "p", "at": 1767225600}', NOW)
    assert event.at == T


def test_every_line_of_a_file_is_an_event_and_the_file_says_how_many(tmp_path):
    path = tmp_path / 'f.jsonl'
    path.write_bytes(b'\xef\xbb\xbf{"table": "t", "op": "c", "row": {}, "committed_at": '
                     b'1767225600000, "position": 1}\n\nnull\nnot json\n')
    *events, read = read_feed_file(FEED, str(path), NOW)
    assert [type(e.event).__name__ for e in events] == ['Change', 'NotAChange', 'NotAChange',
                                                        'ChangeProblem']
    assert (read.lines, read.events, read.at) == (4, 4, T)


def test_conservation_holds_only_when_every_event_read_has_one_outcome():
    epochs = [{'files_read': [{'path': 'f', 'lines': 3, 'events': 4}],
               'outcomes': {'f': {'delivered': 2, 'not_a_change': {'blank': 1}}}},
              {'files_read': [{'path': 'f', 'lines': 3, 'events': 4}],  # read again: once
               'outcomes': {'f': {'superseded': 1}}}]
    check = conservation(epochs)
    assert check['holds'] and check['files'][0]['accounted'] == 4
    assert not conservation(epochs[:1])['holds']  # one event of f has no outcome yet


def test_an_epoch_line_warns_of_columns_held_back():
    manifest = {'epoch': 3, 'tables': {'customers': {'rows_written': 5, 'dead_letters': {}}},
                'retractions': 0, 'outcomes': {'f': {'repeat': 2}},
                'held_columns': {'customers': {'tenant_id': 5}}}
    line = epoch_line(manifest, [], seconds=2.0)
    assert '1 events/s' in line  # the two repeats over two seconds
    assert '5 changes delivered' in line and '2 repeated or superseded (not delivered)' in line
    assert 'WARNING' in line and 'customers: tenant_id' in line


# ---------------------------------------------------------------------------------------------
# Fuzz: each tool's lines with one value replaced, and the lines cut or bytes changed

NASTY = [None, [], {}, [1], {'a': {'b': [None]}}, '', 'x' * 5000, '\x00', -1, 0, 2**64,
         1e308, True, 'null', '2024-13-45', '9999-12-31T23:59:59Z', '\ud800', '中文']


def _replaced(value, path, new):
    if not path:
        return new
    value = json.loads(json.dumps(value))
    inner = value
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = new
    return value


def test_fuzz_no_line_of_any_tool_changed_at_random_stops_the_stream(tables, keys_dir):
    from transforms.consent.rules import refusal_problems
    from transforms.keys.crypto import keyed_ops
    from transforms.stream.deliver import deliver_changes
    from transforms.keys.keyring import load_keyring
    ops = keyed_ops(load_keyring(keys_dir, ('pseudonym', 'token'), warn=False))
    problems = refusal_problems({'credit_management': 'consent'}, 'HK')
    decided = []
    from tests.cdc_forms import canal, datastream, debezium_connect, maxwell
    row = {'contract_id': 'L1', 'customer_id': 'C1', 'principal': '10.00', 'signed_at':
           '2026-01-01 08:00:00', 'start_date': '2026-01-01'}
    forms = [canal('UPDATE', [row], old=[{'principal': '9.00'}], table='t_contract'),
             maxwell('update', row, ts=1767225600, position='mysql-bin.000001:4',
                     old={'principal': '9.00'}, table='t_contract'),
             datastream(row, 'UPDATE-INSERT', False, 1767225600000, table='t_contract'),
             debezium_connect({'customer_id': 'C1', 'income': 'AeI='}, 1767225600000),
             {'table': 'contracts', 'op': 'u', 'row': row, 'before': {**row, 'contract_id':
                                                                       'L0'},
              'committed_at': 1767225600000, 'position': 3}]
    names = {'t_contract': 'contracts', 'loan_db.t_contract': 'contracts'}
    rng = random.Random(20261207)
    for case in range(600):
        form = rng.choice(forms)
        if case % 3:
            path, _ = rng.choice(list(_places(form)))
            line = json.dumps(_replaced(form, path, rng.choice(NASTY))).encode()
        else:
            line = bytearray(json.dumps(form).encode())
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(line))
                line[at:at + rng.randint(0, 3)] = bytes([rng.randrange(256)])
            line = bytes(line)
        for event in parse_json_event(FEED, line, NOW):
            item = FeedEvent('data', 'f.jsonl', case, event)
            for routed in route(item, tables, names, 'precise'):
                assert routed is not None, (case, line[:200])
                if isinstance(routed, tuple) and isinstance(routed[1], ChangeEvent):
                    decided.append(Decided(routed[0], routed[1], None, True))
    # and what routing let through is delivered or a dead letter: conform, mask, tombstones
    assert len(decided) > 100
    for name in {d.event.change.table for d in decided}:
        mine = [d for d in decided if d.event.change.table == name]
        batch, dead, _ = deliver_changes(tables[name], mine, ops, problems)
        assert batch.num_rows + len(dead) == len(mine)  # each one outcome, none lost
