"""A stream is operated as a batch run is: its report (over the cut-over and per epoch, with
events a second and lag), the review of its dead letters with decisions, a sign-off of its
cut-over, and an incident on one of its epoch files."""

import hashlib
import json
import os

import pytest

from conftest import user_lines


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
    from transforms.audit import read_log, verify_log
    from transforms.keyring import load_keyring
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
