"""What a stream delivers of decided changes: masked as the batch masks, with op, position and
commit time, tombstones for deletes, dead letters for everything refused (no value in them)."""

import datetime
import os
import shutil

import pyarrow as pa
import pytest

from tests.conftest import ROOT
from config import load_config
from transforms.stream.changes import Change
from transforms.consent.rules import refusal_problems
from transforms.keys.crypto import keyed_ops
from transforms.stream.deliver import deliver_changes
from transforms.keys.keyring import load_keyring
from transforms.stream.consent import ChangeEvent, Decided

T = 1_767_225_600 * 10**6  # 2026-01-01T00:00:00Z in microseconds
ROW = {'customer_id': 'C1', 'national_id': '11010519491231002X', 'mobile': '13812345678',
       'birth_date': '1990-01-02', 'monthly_income': '8000.50', 'created_at': '2020-01-01 08:00:00',
       'login_password_hash': '$2b$12$secret'}


@pytest.fixture(scope='module')
def table(tmp_path_factory):
    """The demo config's customers table (no data needed: nothing is read)."""
    where = tmp_path_factory.mktemp('config')
    shutil.copy(os.path.join(ROOT, 'config', 'demo.yaml'), where / 'demo.yaml')
    shutil.copytree(os.path.join(ROOT, 'schemas'), where / 'schemas',
                    ignore=shutil.ignore_patterns('*.py', '__pycache__'))
    return load_config(str(where / 'demo.yaml'))


@pytest.fixture(scope='module')
def ops(keys_dir):
    return keyed_ops(load_keyring(keys_dir, ('pseudonym', 'token'), warn=False))


def decided(position, row, *, op='u', reason=None, sensitive_ok=True, at=0, line=None,
            table='customers'):
    change = Change(table, op, row, T + at, 'lsn', (position,), f'lsn:{position}')
    return Decided(row.get('customer_id', '?'),
                   ChangeEvent(change, 'changes/f.jsonl', line or position), reason,
                   sensitive_ok)


def deliver(config, ops, changes):
    problems = refusal_problems(config.transfer.legal_bases, config.transfer.destination_region)
    batch, dead, _ = deliver_changes(config.table('customers'), changes, ops, problems)
    return batch, dead


def test_upserts_are_masked_as_the_batch_masks_and_carry_op_position_and_time(table, ops):
    # in the order given (the key order's), not re-sorted by commit time
    batch, dead = deliver(table, ops, [decided(1, {**ROW, 'mobile': '13900000000'}, op='c'),
                                       decided(2, ROW, at=5)])
    assert dead == []
    rows = batch.to_pylist()
    assert [(r['__op'], r['__position']) for r in rows] == [('c', 'lsn:1'), ('u', 'lsn:2')]
    assert rows[1]['__committed_at'] == datetime.datetime(2026, 1, 1, 0, 0, 0, 5,
                                                          tzinfo=datetime.timezone.utc)
    assert rows[0]['customer_id'] == ops.pseudonyms('customer_id', pa.array(['C1']))[0].as_py()
    assert rows[1]['mobile'] == '138****5678' and rows[1]['birth_date'] == '1990'
    assert rows[1]['national_id'] not in (None, ROW['national_id'])  # tokenized
    assert 'login_password_hash' not in batch.schema.names  # restricted: never moves
    assert batch.schema.names[-4:] == ['__op', '__position', '__committed_at', '__columns']
    # ROW lacks fields of the schema: a partial row names the fields it carries (the others
    # are absent, not null)
    assert rows[1]['__columns'].split(',') == [f for f in table.table('customers').schema
                                               .field_names if f in ROW]


def test_a_customer_without_separate_consent_moves_without_sensitive_fields(table, ops):
    batch, _ = deliver(table, ops, [decided(1, ROW, sensitive_ok=False)])
    [row] = batch.to_pylist()
    assert row['national_id'] is None and row['mobile'] == '138****5678'


def test_a_delete_delivers_a_tombstone_with_the_keys_pseudonym_only(table, ops):
    batch, dead = deliver(table, ops, [decided(3, {'customer_id': 'C1'}, op='d'),
                                       decided(4, {'mobile': '13812345678'}, op='d')])
    [row] = batch.to_pylist()
    assert row['customer_id'] == ops.pseudonyms('customer_id', pa.array(['C1']))[0].as_py()
    assert row['__op'] == 'd' and row['__position'] == 'lsn:3'
    assert all(v is None for k, v in row.items() if k not in ('customer_id', '__op',
                                                              '__position', '__committed_at'))
    assert [(d.reason, d.field, d.problem, d.row) for d in dead] == [
        ('missing_required', 'customer_id', 'a delete needs its customer_id', 4)]


def test_a_table_without_a_primary_key_takes_creates_only(table, ops):
    """An update or delete of a keyless table could not say which row it changes: a dead
    letter, where a create is delivered."""
    call = {'call_id': 'K1', 'customer_id': 'C1', 'called_at': '2026-01-01 09:00:00',
            'agent_id': 'A7', 'outcome': 'no_answer'}
    problems = refusal_problems(table.transfer.legal_bases, table.transfer.destination_region)
    changes = [decided(n, call, op=op, table='collection_calls')
               for n, op in enumerate('cud', 1)]
    batch, dead, _ = deliver_changes(table.table('collection_calls'), changes, ops, problems)
    assert batch.column('__op').to_pylist() == ['c']
    assert [(d.reason, d.row, d.problem) for d in dead] == [
        ('no_primary_key', 2, 'an update of a table whose schema declares no primary_key'),
        ('no_primary_key', 3, 'a delete of a table whose schema declares no primary_key')]


def test_what_is_refused_becomes_dead_letters_that_quote_no_value(table, ops):
    batch, dead = deliver(table, ops, [
        decided(1, ROW, reason='consent_withdrawn'),
        decided(2, ROW, reason='erasure_requested'),
        decided(4, {**ROW, 'birth_date': '1990-02-30'}),  # not a date
    ])
    assert batch.num_rows == 0
    got = [(d.reason, d.stage, d.row, d.field, d.problem, d.raw is None) for d in dead]
    assert got == [
        ('consent_withdrawn', 'consent', 1, 'customer_id',
         'consent withdrawn for purpose credit_management (legal basis: consent)', False),
        ('erasure_requested', 'consent', 2, 'customer_id',
         'the customer asked for erasure (PIPL Art. 47)', True),
        ('malformed', 'conform', 4, 'birth_date',
         'birth_date: expected a date (2024-01-02, 2024/1/2, 20240102 or 2024年1月2日)', False)]
    for d in dead:
        assert 'wx-123' not in d.problem and '1990-02-30' not in d.problem


def test_an_epoch_commits_encrypted_files_then_a_manifest_chained_to_the_last(
        table, ops, keys_dir, tmp_path):
    import google_crc32c
    import hashlib
    import json
    from transforms.write.delivered import deadletter_lines, parquet_file
    from transforms.stream.chain import commit_epoch, manifest_sha256
    from transforms.stream.consent import Retraction

    keyring = load_keyring(keys_dir, warn=False)
    stream = str(tmp_path / 'stream')
    customers = table.table('customers')
    batch, dead = deliver(table, ops, [decided(1, ROW), decided(2, ROW, reason='no_consent'),
                                       decided(3, {'customer_id': 'C2'}, op='d')])
    tables = {t.name: t for t in table.tables}
    pseudonym = lambda s: ops.pseudonym(customers.subject_domain, s)  # noqa: E731
    first = commit_epoch(stream_dir=stream, run_id='s1', number=1, tables=tables,
                         delivered={'customers': batch}, dead=dead,
                         retractions=[Retraction('C1', ('customers',), 'consent_withdrawn',
                                                 T + 9)],
                         sources=[{'feed': 'data', 'path': 'changes/f.jsonl', 'lines': [1, 3]}],
                         previous_sha256=None, keys_path=keys_dir, pseudonymize=pseudonym)
    second = commit_epoch(stream_dir=stream, run_id='s1', number=2, tables=tables,
                          delivered={}, dead=[], retractions=[], sources=[],
                          previous_sha256=manifest_sha256(stream, 1), keys_path=keys_dir,
                          pseudonymize=pseudonym)
    assert first['tables']['customers'] == {'rows_written': 2, 'ops': {'d': 1, 'u': 1},
                                            'dead_letters': {'no_consent': 1}}
    assert second['previous_manifest_sha256'] == hashlib.sha256(
        open(os.path.join(stream, 'epochs', '000001', 'manifest.json'), 'rb').read()).hexdigest()
    kinds = {}
    for f in first['files']:
        path = os.path.join(stream, f['path'])
        data = open(path, 'rb').read()
        assert f['crc32c'] == google_crc32c.Checksum(data).digest().hex()
        assert f['bytes'] == len(data) and f['path'].startswith('epochs/000001/')
        kinds[f['kind']] = (path, f['path'], f['rows'])
        for secret in ('13812345678', '11010519491231002X', 'secret'):
            assert secret.encode() not in data  # nothing in clear
    path, relative, rows = kinds['data']
    delivered = parquet_file(path, keyring, f's1/{relative}').read()
    assert rows == 2 and delivered.column('__op').to_pylist() == ['u', 'd']
    path, relative, _ = kinds['deadletter']
    [letter] = [json.loads(line) for line in deadletter_lines(open(path, 'rb'), keyring,
                                                              f's1/{relative}')]
    assert (letter['reason'], letter['subject_id']) == ('no_consent', pseudonym('C1'))
    assert 'login_password_hash' not in letter['raw']  # restricted: not even encrypted
    path, relative, _ = kinds['retractions']
    retracted = parquet_file(path, keyring, f's1/{relative}').read().to_pylist()
    assert retracted == [{'subject_id': pseudonym('C1'), 'tables': 'customers',
                          'reason': 'consent_withdrawn',
                          'at': datetime.datetime(2026, 1, 1, 0, 0, 0, 9,
                                                  tzinfo=datetime.timezone.utc)}]
    leftovers = [n for _, _, names in os.walk(stream) for n in names if n.startswith('.temp')]
    assert leftovers == []
    with pytest.raises(Exception):  # bound to its place: a moved file does not open
        parquet_file(kinds['data'][0], keyring, 's1/epochs/000002/data/customers/x.parquet'
                     ).read()


def test_a_stream_of_decisions_commits_epochs_of_commit_time_chained_in_order(
        table, keys_dir, tmp_path):
    import json
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from apache_beam.testing.test_stream import TestStream as EventStream
    from apache_beam.transforms.window import TimestampedValue
    from transforms.stream.epochs import CommitEpochs
    from transforms.stream.chain import manifest_sha256
    from transforms.stream.feeds import EndOfFeeds, ReleasedUpTo
    from transforms.stream.consent import Batch, Retraction

    config = dataclasses_replace_keys(table, keys_dir)
    stream = str(tmp_path / 'stream')
    second = 10**6
    items = [decided(1, ROW, at=1 * second), decided(2, ROW, at=4 * second),
             decided(3, ROW, at=6 * second, reason='consent_withdrawn'),
             Retraction('C1', ('customers',), 'consent_withdrawn', T + 6 * second),
             decided(4, ROW, at=12 * second)]
    events = EventStream()
    for item in items:  # one batch each, then the mark the source would send after it
        at = item.at if isinstance(item, Retraction) else item.event.change.committed_at
        events = events.add_elements([TimestampedValue(Batch((item,)), at / 10**6),
                                      TimestampedValue(ReleasedUpTo(at), at / 10**6)])
    events = events.add_elements([EndOfFeeds(T + 13 * second)]).advance_watermark_to_infinity()
    with beam.Pipeline(runner=BundleBasedDirectRunner(),
                       options=PipelineOptions(streaming=True)) as p:
        _ = p | events | CommitEpochs(config=config, run_id='s1', stream_dir=stream,
                                      seconds=5)
    manifests = [json.load(open(os.path.join(stream, 'epochs', n, 'manifest.json')))
                 for n in sorted(os.listdir(os.path.join(stream, 'epochs')))]
    # [0, 5) s: changes 1 and 2; [5, 10) s: a refusal and a retraction; [10, 15) s: change 4
    assert [m['epoch'] for m in manifests] == [1, 2, 3]
    assert [m['tables'].get('customers', {}).get('rows_written') for m in manifests] == \
        [2, 0, 1]
    assert manifests[1]['tables']['customers']['dead_letters'] == {'consent_withdrawn': 1}
    assert [m['retractions'] for m in manifests] == [0, 1, 0]
    assert manifests[0]['previous_manifest_sha256'] is None
    assert [m['previous_manifest_sha256'] for m in manifests[1:]] == [
        manifest_sha256(stream, 1), manifest_sha256(stream, 2)]
    assert manifests[0]['sources'] == [{'path': 'changes/f.jsonl', 'first_line': 1,
                                        'last_line': 2, 'changes': 2}]


def dataclasses_replace_keys(config, keys_dir):
    """The config with its keyring at ``keys_dir``."""
    import dataclasses
    return dataclasses.replace(config, output=dataclasses.replace(config.output, keys=keys_dir))


def test_resuming_reads_what_was_committed_and_refuses_a_broken_chain(table, ops, keys_dir,
                                                                      tmp_path):
    from transforms.stream.chain import commit_epoch, committed_so_far, manifest_sha256
    from transforms.common.errors import InputError
    stream = str(tmp_path / 'stream')
    tables = {t.name: t for t in table.tables}
    previous = None
    for number, lines in ((1, [[1, 3]]), (2, [[5, 5], [7, 8]])):
        commit_epoch(stream_dir=stream, run_id='s1', number=number, tables=tables,
                     delivered={}, dead=[], retractions=[], sources=[],
                     previous_sha256=previous, keys_path=keys_dir,
                     pseudonymize=lambda s: s, consumed=[{'path': 'f.jsonl', 'lines': lines}],
                     retraction_ids=[f'r{number}'])
        previous = manifest_sha256(stream, number)
    done = committed_so_far(stream, 's1', keys_dir)
    assert (done.last_epoch, done.last_sha256) == (2, previous)
    assert done.lines == {('f.jsonl', n, 0) for n in (1, 2, 3, 5, 7, 8)}
    assert done.retractions == {'r1', 'r2'}
    # the epochs of another stream (its id is in every seal)
    with pytest.raises(InputError, match='epoch 000001: .* not the manifest the run sealed'):
        committed_so_far(stream, 's2', keys_dir)
    first = os.path.join(stream, 'epochs', '000001', 'manifest.json')
    with open(first, 'a') as f:
        f.write(' ')  # altered
    with pytest.raises(InputError, match='epoch 000001: .* not the manifest the run sealed'):
        committed_so_far(stream, 's1', keys_dir)
    os.remove(first + '.seal')
    with pytest.raises(InputError, match='epoch 000001: .* has no seal'):
        committed_so_far(stream, 's1', keys_dir)
    os.remove(first)
    with pytest.raises(InputError, match='epoch 000001 is missing'):
        committed_so_far(stream, 's1', keys_dir)


def run_epochs(config, stream, elements, **options):
    """CommitEpochs on a TestStream of ``elements`` (each timestamped with the stream's T);
    the manifests it committed, in order."""
    import json
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from apache_beam.testing.test_stream import TestStream as EventStream
    from apache_beam.transforms.window import TimestampedValue
    from transforms.stream.epochs import CommitEpochs
    events = EventStream().add_elements([TimestampedValue(e, T / 10**6) for e in elements])
    with beam.Pipeline(runner=BundleBasedDirectRunner(),
                       options=PipelineOptions(streaming=True)) as p:
        _ = p | events.advance_watermark_to_infinity() | CommitEpochs(
            config=config, run_id='s1', stream_dir=stream, seconds=5, **options)
    return [json.load(open(os.path.join(stream, 'epochs', n, 'manifest.json')))
            for n in sorted(os.listdir(os.path.join(stream, 'epochs')))]


def test_one_mark_commits_each_window_it_passes_and_a_late_change_joins_the_open_one(
        table, keys_dir, tmp_path):
    from transforms.stream.feeds import EndOfFeeds, ReleasedUpTo
    from transforms.stream.consent import Batch
    second = 10**6
    manifests = run_epochs(dataclasses_replace_keys(table, keys_dir), str(tmp_path / 's'), [
        Batch((decided(1, ROW, at=1 * second), decided(2, ROW, at=6 * second),
               decided(3, ROW, at=12 * second))),
        ReleasedUpTo(T + 11 * second),              # [0, 5) and [5, 10) are complete
        Batch((decided(4, ROW, at=2 * second),)),  # late: its window is committed
        EndOfFeeds(T + 20 * second)])
    assert [m['sources'][0]['first_line'] for m in manifests] == [1, 2, 3]
    assert [m['tables']['customers']['rows_written'] for m in manifests] == [1, 1, 2]


def test_an_epoch_holds_at_most_max_rows(table, keys_dir, tmp_path):
    from transforms.stream.feeds import EndOfFeeds
    from transforms.stream.consent import Batch
    manifests = run_epochs(dataclasses_replace_keys(table, keys_dir), str(tmp_path / 's'), [
        Batch(tuple(decided(n, ROW, at=n) for n in range(1, 6))), EndOfFeeds(T + 10**6)],
        max_rows=2)
    assert [m['tables']['customers']['rows_written'] for m in manifests] == [2, 2, 1]


@pytest.mark.parametrize('parts, merged', [
    ([[('a', 1), ('a', 2)], [('a', 3), ('b', 7)]], [{'path': 'a', 'lines': [[1, 3]]},
                                                    {'path': 'b', 'lines': [[7, 7]]}]),
    ([[('a', 5)], [('a', 1), ('a', 2)], [('a', 9)]], [{'path': 'a', 'lines': [[1, 2], [5, 5],
                                                                             [9, 9]]}]),
    ([[('a', 1), ('a', 2), ('a', 3)], [('a', 2)]], [{'path': 'a', 'lines': [[1, 3]]}]),
    ([], []),
])
def test_the_lines_parts_consumed_merge_as_if_consumed_together(parts, merged):
    from transforms.stream.epochs import _consumed, _merged_consumed
    parts = [[(path, line, 0) for path, line in part] for part in parts]
    assert _merged_consumed(e for part in parts for e in _consumed(part)) == merged
    assert merged == _consumed({place for part in parts for place in part})


def test_a_lines_further_events_are_consumed_as_parts():
    from transforms.stream.epochs import _consumed, _merged_consumed
    first = _consumed([('a', 1, 0), ('a', 1, 1), ('a', 2, -1)])
    assert first == [{'path': 'a', 'lines': [[1, 1]], 'parts': [[1, 1], [2, -1]]}]
    assert _merged_consumed(first + _consumed([('a', 2, 0)])) == [
        {'path': 'a', 'lines': [[1, 2]], 'parts': [[1, 1], [2, -1]]}]


def test_a_column_no_schema_names_is_held_back_and_counted_the_row_moves(table, ops):
    problems = refusal_problems(table.transfer.legal_bases, table.transfer.destination_region)
    batch, dead, held = deliver_changes(table.table('customers'), [
        decided(3, {**ROW, 'wechat': 'wx-123'}), decided(4, {**ROW, 'wechat': 'wx-9'})],
        ops, problems)
    assert (batch.num_rows, dead, held) == (2, [], {'wechat': 2})
    assert 'wechat' not in batch.schema.names
    assert 'wx-123' not in str(batch.to_pylist())


def test_the_sources_of_parts_merge_into_one_per_file():
    from transforms.stream.epochs import _merged_sources, _sources
    parts = [[('a', 4), ('a', 2)], [('a', 9), ('sub', None)], [('sub', None)]]
    assert _merged_sources(e for part in parts for e in _sources(part)) == [
        {'path': 'a', 'first_line': 2, 'last_line': 9, 'changes': 3},
        {'path': 'sub', 'first_line': None, 'last_line': None, 'changes': 2}]
