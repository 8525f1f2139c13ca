"""A stream is operated as a batch run is: its report (over the cut-over and per epoch, with
events a second and lag), the review of its dead letters with decisions, a sign-off of its
cut-over, and an incident on one of its epoch files."""

import hashlib
import json
import os

import pytest

from tests.conftest import user_lines


@pytest.fixture(scope='module')
def live(tmp_path_factory):
    """The live demo, cut over: (workdir, its summary, the snapshot run)."""
    from pipelines.demo import prepare_demo, run_live
    from pipelines.migrate import run
    workdir = str(tmp_path_factory.mktemp('live') / 'demo')
    config, planted = prepare_demo(workdir, customers=600, seed=9)
    snapshot = run(['--config', config])
    summary, _ = run_live(workdir=workdir, config=config, snapshot=snapshot.run_dir,
                          planted=planted, waves=5, per_wave=40, wave_seconds=0.5)
    return workdir, summary, snapshot


def novation(capsys, *argv):
    from pipelines.cli import main
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), user_lines(captured.err)


def test_the_report_of_a_stream_shows_each_epoch_with_its_pace_and_lag(live, capsys):
    workdir, summary, _ = live
    stream, keys = summary['stream_dir'], os.path.join(workdir, 'keys')
    code, out, err = novation(capsys, 'report', stream, '--keys', keys)
    assert (code, err) == (0, [])
    report = json.load(open(os.path.join(stream, 'report.json')))
    cutover = json.load(open(os.path.join(stream, 'cutover.json')))
    epochs = report['epochs']
    assert report['cut_over'] and len(epochs) == len(cutover['epochs']) == summary['epochs']
    # every feed event the conservation counts, and each epoch's share of them
    assert report['totals']['events'] == sum(f['events'] for f in
                                             cutover['conservation']['files'])
    assert sum(e['events'] for e in epochs) == report['totals']['events']
    assert report['totals']['rows_written'] == summary['rows_written']
    assert epochs[0]['events_per_s'] is None  # nothing before it to time it from
    assert all(e['lag_seconds'] is not None and e['lag_seconds'] >= 0 for e in epochs)
    lag = report['totals']['lag_seconds']
    assert lag['max'] == max(e['lag_seconds'] for e in epochs)
    assert out[0] == report['summary'] and out[1] == report['pace']
    assert out[2] == os.path.join(stream, 'report.html')
    html = open(out[2], encoding='utf-8').read()
    assert 'Stream report (cut-over)' in html and 'Lag (s)' in html
    # one epoch's report again, in Chinese
    code, out, err = novation(capsys, 'report', stream, '--keys', keys, '--epoch', '2',
                              '--lang', 'zh')
    assert code == 0 and out[1] == os.path.join(stream, 'epochs', '000002', 'report.html')
    assert json.load(open(os.path.join(stream, 'epochs', '000002', 'report.json')))[
        'lang'] == 'zh'


def test_a_streams_dead_letters_are_reviewed_decided_and_signed_off(live, capsys):
    from transforms.commit.audit import read_log, verify_log
    from transforms.keys.keyring import load_keyring
    workdir, summary, _ = live
    stream, keys = summary['stream_dir'], os.path.join(workdir, 'keys')
    code, out, _ = novation(capsys, 'review', stream, '--keys', keys, '--out',
                            os.path.join(workdir, 'dead.jsonl'))
    records = [json.loads(line) for line in open(os.path.join(workdir, 'dead.jsonl'))]
    assert code == 0 and len(records) == sum(summary['dead_letters'].values())
    assert {r['reason'] for r in records} == set(summary['dead_letters'])
    assert all(isinstance(r['epoch'], int) for r in records)
    # one epoch's only
    epoch = records[0]['epoch']
    code, out, _ = novation(capsys, 'review', stream, '--keys', keys, '--epoch', str(epoch))
    assert out[0].split()[:3] == ['epoch', 'table', 'source_file']
    assert all(line.split()[0] == str(epoch) for line in out[1:] if not line.startswith('...'))
    # a decision on the customer the seller never had
    code, out, _ = novation(capsys, 'review', stream, '--keys', keys, '--reason', 'no_consent',
                            '--decide', 'replay', '--by', 'Li Wei')
    assert code == 0 and out == [f'replay: {summary["dead_letters"]["no_consent"]} dead '
                                 f'letter(s) of reason no_consent, recorded in '
                                 f'{stream}/review.json']
    code, out, _ = novation(capsys, 'signoff', stream, '--keys', keys, '--by', 'Wang Fang')
    review = json.load(open(os.path.join(stream, 'review.json')))
    signed = review['signoffs'][-1]
    with open(os.path.join(stream, 'cutover.json'), 'rb') as f:
        assert signed['manifest_sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert (signed['epochs'], signed['cut_over'], signed['decisions']) == (
        summary['epochs'], True, 1)
    assert code == 0 and f'{summary["epochs"]} epoch(s), cut over, cutover.json sha256' in out[0]
    root = os.path.dirname(stream)
    events = [r for r in read_log(root) if r.get('event') in ('reviewed', 'signed_off')]
    assert [(r['event'], r['run_id']) for r in events] == [
        ('reviewed', os.path.basename(stream)), ('signed_off', os.path.basename(stream))]
    assert verify_log(root, load_keyring(keys, warn=False))['problems'] == []


def test_an_incident_on_an_epoch_file_names_its_fields_and_whether_it_is_the_one_written(
        live, capsys, tmp_path):
    workdir, summary, snapshot = live
    stream, keys = summary['stream_dir'], os.path.join(workdir, 'keys')
    manifest = json.load(open(os.path.join(stream, 'epochs', '000001', 'manifest.json')))
    data = next(f for f in manifest['files'] if f['kind'] == 'data'
                and f['table'] == 'customers')
    code, out, err = novation(capsys, 'incident', '--run', stream, '--file', data['path'],
                              '--keys', keys)
    assert (code, err) == (0, [])
    assert out[0] == f'incident: {data["path"]} of run {os.path.basename(stream)}'
    assert 'the file the run wrote (size and crc32c match)' in out[1]
    # its fields as the snapshot's plan treats them
    snapshot_fields = snapshot.manifest['tables']['customers']['fields']
    listed = [line.split()[0] for line in out[out.index('  fields in it:') + 1:-1]]
    assert listed == [f['name'] for f in snapshot_fields if f['masking'] != 'drop']
    # a copy that was changed is not the file the stream wrote
    changed = tmp_path / 'exposed.parquet'
    changed.write_bytes(open(os.path.join(stream, data['path']), 'rb').read() + b'x')
    code, out, _ = novation(capsys, 'incident', '--run', stream, '--file', str(changed),
                            '--keys', keys)
    assert code == 2  # not a name the stream's manifests list
    code, out, _ = novation(capsys, 'incident', '--run', stream, '--file',
                            'epochs/000001/data/customers/part-0.parquet', '--keys', keys)
    assert code == 2


def registry_grants(workdir, subject, at='2026-01-01T00:00:00+08:00'):
    """The seller fixes its consent registry: the customer granted every purpose."""
    with open(os.path.join(workdir, 'exports', 'consent_registry.csv'), 'a',
              encoding='utf-8') as f:
        for purpose in ('contract_servicing', 'credit_management'):
            f.write(f'{subject},{purpose},true,{at},,true,true\n')


def test_a_streams_refused_changes_are_replayed_once_the_registry_is_fixed(live, capsys):
    from pipelines.review import select
    from transforms.keys.crypto import keyed_ops
    from transforms.keys.keyring import load_keyring
    workdir, summary, _ = live
    stream, keys = summary['stream_dir'], os.path.join(workdir, 'keys')
    config = os.path.join(workdir, 'demo.yaml')
    letters = select(stream, keys, {})
    unknown = [r for r in letters if r['reason'] == 'no_consent']
    withdrawn = [r for r in letters if r['reason'] == 'consent_withdrawn']
    assert len(unknown) == 1 and withdrawn
    # predicted before: the customer the seller never had is now in its registry and moves;
    # the customers who withdrew still have withdrawn, so theirs are refused again
    registry_grants(workdir, unknown[0]['value'])
    for reason in ('no_consent', 'consent_withdrawn'):
        assert novation(capsys, 'review', stream, '--keys', keys, '--reason', reason,
                        '--decide', 'replay', '--by', 'Li Wei')[0] == 0
    code, out, err = novation(capsys, 'replay', stream, '--config', config)
    assert (code, err) == (0, []), err
    assert out[0] == (f'replay of stream {os.path.basename(stream)} (after its epoch '
                      f'{summary["epochs"]}): {1 + len(withdrawn)} dead letter(s) replayed: 1 '
                      f'delivered, {len(withdrawn)} refused again (consent_withdrawn '
                      f'{len(withdrawn)}), 0 superseded by a newer change delivered; recorded '
                      f'in its review.json')
    replay = out[-1]
    assert replay == f'{stream}-replay-1'
    cutover = json.load(open(os.path.join(replay, 'cutover.json')))
    assert cutover['replay_of'] == {'stream_id': os.path.basename(stream),
                                    'after_epoch': summary['epochs']}
    assert cutover['conservation']['holds']
    # the same pseudonym as the stream gave the customer in its dead letter
    ring = load_keyring(keys, warn=False)
    code, out, _ = novation(capsys, 'decrypt', replay, '--keys', keys, '--table', 'customers',
                            '--out', os.path.join(workdir, 'replayed.jsonl'))
    rows = [json.loads(line) for line in open(os.path.join(workdir, 'replayed.jsonl'))]
    assert [r['customer_id'] for r in rows] == [unknown[0]['subject_id']] == \
        [keyed_ops(ring).pseudonym('customer_id', unknown[0]['value'])]
    assert novation(capsys, 'verify', replay, '--keys', keys)[0] == 0
    assert novation(capsys, 'audit', 'verify', os.path.dirname(stream), '--keys', keys)[0] == 0
    # recorded in the stream's review: replaying again moves nothing twice
    review = json.load(open(os.path.join(stream, 'review.json')))
    assert [(r['run_id'], r['dead_letters_replayed'], r['rows_written'])
            for r in review['replays']] == [(os.path.basename(replay), 1 + len(withdrawn), 1)]
    code, _, err = novation(capsys, 'replay', stream, '--config', config)
    assert code == 2 and err == [f'novation: error: {stream}: nothing to replay: of the dead '
                                 f'letters marked for replay, {1 + len(withdrawn)} replayed '
                                 f'already ({os.path.basename(replay)})']


def test_a_replayed_change_older_than_one_delivered_for_its_row_is_superseded(demo_copy,
                                                                              capsys):
    from tests.stream.test_stream import land, now_ms, stream_config
    workdir, config, _ = demo_copy
    feeds = stream_config(workdir, config)
    keys = os.path.join(workdir, 'keys')
    t = now_ms() - 60_000
    row = {'customer_id': None, 'name': '王五', 'mobile': '13900001111', 'city': '上海'}
    # C7 changes unknown to the registry, then consents and changes again (delivered);
    # C8 changes unknown and consents later, with no change since
    land(os.path.join(feeds, 'changes'), 'c1', [
        {'table': 'customers', 'op': 'c', 'row': {**row, 'customer_id': 'C7'},
         'committed_at': t, 'position': 1},
        {'table': 'customers', 'op': 'c', 'row': {**row, 'customer_id': 'C8'},
         'committed_at': t + 1, 'position': 2},
        {'table': 'customers', 'op': 'u', 'row': {**row, 'customer_id': 'C7', 'city': '北京'},
         'committed_at': t + 20_000, 'position': 3}])
    land(os.path.join(feeds, 'consent'), 'g1', [
        {'subject_id': 'C7', 'event': 'grant', 'purpose': p, 'at': t + 10_000,
         'sensitive_consent': True, 'cross_border_consent': True}
        for p in ('contract_servicing', 'credit_management')])
    code, out, _ = novation(capsys, 'stream', '--config', config, '--seconds', '3')
    stream = out[-1]
    assert code == 0 and 'dead letters: no_consent 2' in out[0], out
    registry_grants(workdir, 'C8')
    assert novation(capsys, 'review', stream, '--keys', keys, '--reason', 'no_consent',
                    '--decide', 'replay', '--by', 'Li Wei')[0] == 0
    code, out, err = novation(capsys, 'replay', stream, '--config', config)
    assert (code, err) == (0, []), err
    # C7's refused create is older than its update the stream delivered: not applied
    assert ': 2 dead letter(s) replayed: 1 delivered, 0 refused again, 1 superseded' in out[0]
    manifest = json.load(open(os.path.join(out[-1], 'epochs', '000001', 'manifest.json')))
    assert manifest['outcomes'] == {'data/c1.jsonl': {'delivered': 1, 'superseded': 1}}


@pytest.mark.parametrize('latest, key, at, expected', [
    ({}, 'k', 5, False),                 # nothing delivered for the row
    ({'k': 9}, 'k', 5, True),            # a newer change delivered
    ({'k': 5}, 'k', 5, False),           # the same instant: applied after it
    ({'k': 3}, 'k', 5, False),           # an older one
    ({'k': 9}, None, 5, False),          # no key (not of its type): nothing to compare
])
def test_a_replayed_change_is_superseded_only_by_a_newer_one_delivered(latest, key, at,
                                                                       expected):
    from pipelines.stream_replay import superseded
    assert superseded(latest, key, at) is expected


def test_plain_tink_and_pyarrow_read_a_streams_epochs_as_the_docs_show(live, tmp_path):
    """docs/outputs.md's stream reader, run as written, gives what Novation's own reader gives."""
    import tink
    from pipelines.decrypt import read_stream_table
    from tests.pipelines.test_readme_readers import example
    workdir, summary, snapshot = live
    stream, keys = summary['stream_dir'], os.path.join(workdir, 'keys')
    place = tmp_path / 'reader'
    place.mkdir()
    for name, target in (('delivery', snapshot.run_dir), ('keys', keys), ('stream', stream)):
        os.symlink(target, place / name)
    namespace, cwd = {'__name__': 'readme_example'}, os.getcwd()
    os.chdir(place)
    try:
        for name in ('common', 'parquet', 'stream'):
            exec(compile(example(name), f'docs/outputs.md example {name}', 'exec'), namespace)
    finally:
        os.chdir(cwd)
    epochs = namespace['epochs']
    assert [e[0] for e in epochs] == list(range(1, summary['epochs'] + 1))
    import pyarrow as pa
    theirs = pa.concat_tables([changes['customers'] for _, changes, _ in epochs
                               if 'customers' in changes])
    ours, _ = read_stream_table(stream, keys=keys, table='customers')
    assert theirs.num_rows == ours.num_rows > 0
    assert theirs.equals(ours.drop_columns(['__epoch']))
    assert sum(r.num_rows for _, _, retracted in epochs for r in retracted) == \
        summary['retractions']
    # an epoch manifest changed after the cut-over: the reader stops at its seal
    manifest = os.path.join(stream, 'epochs', '000001', 'manifest.json')
    original = open(manifest, 'rb').read()
    try:
        with open(manifest, 'wb') as f:
            f.write(original.replace(b'"epoch": 1', b'"epoch": 1 '))
        os.chdir(place)
        with pytest.raises(tink.TinkError):
            exec(compile(example('stream'), 'docs/outputs.md example stream', 'exec'), namespace)
    finally:
        os.chdir(cwd)
        with open(manifest, 'wb') as f:
            f.write(original)


@pytest.mark.parametrize('table_name, kind, why', [
    ('customers', 'rows', None),
    ('customers', 'sensitive', None),                       # sensitive fields, a primary key
    ('collection_calls', 'rows', None),                     # retracted: none of its rows held
    ('collection_calls', 'sensitive', 'complete already (no sensitive field)'),
])
def test_a_backfill_takes_the_rows_a_customer_lacks(demo_copy, table_name, kind, why):
    from config import load_config
    from pipelines.backfill import listed_rows, needs
    import pyarrow as pa
    _, config, _ = demo_copy
    table = load_config(config).table(table_name)
    assert needs(table, kind) == why
    batch = pa.RecordBatch.from_pylist([{'customer_id': 'C1', 'x': '1'},
                                        {'customer_id': 'C2', 'x': None}])
    got = list(listed_rows(batch, table, {'C1': kind}))
    assert got[1] == ('left out', f'{table_name}: not listed')
    assert got[0] == ((table_name, {'customer_id': 'C1', 'x': '1'}) if why is None
                      else ('left out', f'{table_name}: {why}'))


@pytest.mark.parametrize('argv, message', [
    (['--export', 'customers=x.csv'], '--export needs --config FILE'),
    (['--list', 'x.csv'], '--list needs --keys DIR'),
    ([], 'give --keys DIR --list FILE, or --config FILE --export TABLE=PATH'),
])
def test_backfill_mistakes_are_one_line(capsys, argv, message):
    from pipelines.cli import main
    with pytest.raises(SystemExit) as stopped:
        main(['backfill', 'OUT/stream'] + argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_backfill_of_a_table_the_config_lacks_is_refused_before_reading(live, capsys):
    workdir, summary, _ = live
    code, _, err = novation(capsys, 'backfill', summary['stream_dir'], '--config',
                            os.path.join(workdir, 'demo.yaml'), '--export', 'loans=x.csv')
    assert code == 2 and len(err) == 1 and "--export loans=...: no table 'loans'" in err[0]
