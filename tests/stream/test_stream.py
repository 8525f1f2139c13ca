"""The stream end to end on the local runner, in real time: feed files land while it runs,
epochs are committed, read back and decrypted; a withdrawal that lands after a later change
still refuses it, and the customer's earlier delivery is retracted."""

import json
import os
import shutil
import re
import threading
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
import pytest

from tests.conftest import user_lines

from pipelines.stream import build_stream
from transforms.keys.crypto import keyed_ops
from transforms.write.delivered import deadletter_lines, parquet_file
from transforms.stream.chain import manifest_sha256
from transforms.stream.feeds import Feed
from transforms.keys.keyring import load_keyring

from tests.stream.test_epochs import ROW, dataclasses_replace_keys, table  # noqa: F401 (a fixture)
from tests.pipelines.test_runners import DATAFLOW

pytestmark = pytest.mark.slow  # a stream runs for a few seconds


def land(directory, name, events):
    temp = os.path.join(directory, f'.{name}')
    with open(temp, 'w', encoding='utf-8') as f:
        f.write(''.join(json.dumps(e) + '\n' for e in events))
    os.rename(temp, os.path.join(directory, f'{name}.jsonl'))


def now_ms():
    return int(time.time() * 1000)


def test_changes_stream_into_chained_encrypted_epochs_in_consent_order(table, keys_dir,  # noqa
                                                                        tmp_path):
    config = dataclasses_replace_keys(table, keys_dir)
    data, consent = tmp_path / 'changes', tmp_path / 'consent'
    os.makedirs(data)
    os.makedirs(consent)
    feeds = [Feed('data', str(data / '*.jsonl'), 'changes'),
             Feed('consent', str(consent / '*.jsonl'), 'consent')]

    def change(position, subject='C1', **row):
        return {'table': 'customers', 'op': 'u', 'row': {**ROW, 'customer_id': subject, **row},
                'committed_at': now_ms(), 'position': position}

    def writer():
        land(consent, 'g', [{'subject_id': s, 'event': 'grant', 'purpose': 'credit_management',
                             'at': now_ms() - 60_000, 'cross_border_consent': True,
                             'sensitive_consent': True} for s in ('C1', 'C2')])
        time.sleep(0.2)
        land(data, 'u1', [change(1), change(2, subject='C2')])
        time.sleep(0.2)
        withdrawn = now_ms()
        time.sleep(0.2)
        land(data, 'u2', [change(3), {'table': 'wechat', 'op': 'c', 'row': {},
                                      'committed_at': now_ms(), 'position': 4}])
        time.sleep(0.3)  # the withdrawal, committed before change 3, lands after it
        land(consent, 'w', [{'subject_id': 'C1', 'event': 'withdraw',
                             'purpose': 'credit_management', 'at': withdrawn}])

    stream = str(tmp_path / 'stream')
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(streaming=True))
    build_stream(pipeline, config, feeds=feeds, run_id='s1', stream_dir=stream,
                 stop_at=time.time() + 4, epoch_seconds=60, interval=0.1, lateness=1.0,
                 idle=1.0)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    pipeline.run().wait_until_finish()
    thread.join()

    keyring = load_keyring(keys_dir, warn=False)
    pseudonym = keyed_ops(keyring).pseudonym
    numbers = sorted(os.listdir(os.path.join(stream, 'epochs')))
    manifests = [json.load(open(os.path.join(stream, 'epochs', n, 'manifest.json')))
                 for n in numbers]
    for earlier, later in zip(manifests, manifests[1:]):
        assert later['previous_manifest_sha256'] == manifest_sha256(stream, earlier['epoch'])
    files = [f for m in manifests for f in m['files']]
    rows, letters, retractions = [], [], []
    for f in files:
        path, identity = os.path.join(stream, f['path']), f's1/{f["path"]}'
        if f['kind'] == 'data':
            rows += parquet_file(path, keyring, identity).read().to_pylist()
        elif f['kind'] == 'deadletter':
            letters += [json.loads(line) for line in deadletter_lines(open(path, 'rb'),
                                                                      keyring, identity)]
        else:
            retractions += parquet_file(path, keyring, identity).read().to_pylist()
    c1, c2 = (pseudonym('customer_id', s) for s in ('C1', 'C2'))
    assert sorted((r['customer_id'], r['__position']) for r in rows) == sorted(
        [(c1, 'seq:1'), (c2, 'seq:2')])
    assert all(r['mobile'] == '138****5678' for r in rows)
    assert sorted((d['reason'], d['table'], d['row']) for d in letters) == [
        ('consent_withdrawn', 'customers', 1), ('malformed', 'data', 2)]
    dead_by_table = {}  # the manifests count every dead letter, a feed's own ones too
    for m in manifests:
        for name, t in m['tables'].items():
            for reason, n in t['dead_letters'].items():
                dead_by_table[name, reason] = dead_by_table.get((name, reason), 0) + n
    assert dead_by_table == {('customers', 'consent_withdrawn'): 1, ('data', 'malformed'): 1}
    assert [(r['subject_id'], r['tables'], r['reason']) for r in retractions] == [
        (c1, 'customers', 'consent_withdrawn')]
    for f in files:  # nothing in clear
        data_bytes = open(os.path.join(stream, f['path']), 'rb').read()
        assert b'13812345678' not in data_bytes and b'11010519491231002X' not in data_bytes


def stream_config(workdir, config):
    """The demo config with a stream section; its feed directories, empty."""
    for kind in ('changes', 'consent'):
        os.makedirs(os.path.join(workdir, 'feeds', kind), exist_ok=True)
    import yaml
    with open(config, encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    doc['stream'] = {'changes': 'feeds/changes/*.jsonl', 'consent': 'feeds/consent/*.jsonl',
                     'epoch_seconds': 60, 'lateness_seconds': 0.5, 'idle_seconds': 0.5,
                     'poll_seconds': 0.1}
    with open(config, 'w', encoding='utf-8') as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
    return os.path.join(workdir, 'feeds')


def test_novation_stream_starts_from_the_snapshots_consent_and_says_what_it_committed(
        demo_copy, capsys):
    from pipelines.cli import main
    workdir, config, planted = demo_copy
    feeds = stream_config(workdir, config)
    refused = (planted.no_consent | planted.consent_withdrawn | planted.erasure_requested |
               planted.no_cross_border_consent | planted.no_sensitive_consent)
    allowed = sorted(set(planted.contract_customers) - refused)[0]
    erased = sorted(planted.erasure_requested)[0]
    land(os.path.join(feeds, 'changes'), 'c1', [
        {'table': 'customers', 'op': 'u', 'row': {**ROW, 'customer_id': allowed},
         'committed_at': now_ms(), 'position': 1},
        {'table': 'customers', 'op': 'u', 'row': {**ROW, 'customer_id': erased},
         'committed_at': now_ms(), 'position': 2}])
    assert main(['stream', '--config', config, '--seconds', '3']) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert re.search(r'^novation: epoch 1 committed: 1 change delivered, 1 dead letter, 0 '
                     r'retractions, [\d,]+ events/s, lag [\d.]+ s$', captured.err, re.M), \
        captured.err
    assert out[0] == ('1 epoch committed: 1 change delivered (encrypted), dead letters: '
                      'erasure_requested 1, 0 retractions')
    stream_dir = out[-1]
    cutover = json.load(open(os.path.join(stream_dir, 'cutover.json')))
    assert cutover['snapshot'] is None
    assert cutover['epochs'] == [{'epoch': 1, 'manifest': 'epochs/000001/manifest.json',
                                  'sha256': manifest_sha256(stream_dir, 1)}]


@pytest.mark.parametrize('argv, message', [
    (['--until', '2026-12-31 18:00'], "--until '2026-12-31 18:00': give an ISO 8601 time with "
                                      "its zone"),
    (['--seconds', '0'], '--seconds must be above 0'),
    (['--snapshot', 'NOWHERE'], '--snapshot: NOWHERE has no manifest.json: the run is '
                                'incomplete'),
    (['--runner', 'PortableRunner'], 'novation stream runs on the local runner (no --runner) '
                                     'or on Dataflow'),
    (['--run-id', '../elsewhere'], "--run-id '../elsewhere': 1 to 100 letters, digits"),
    (['--runner', 'DataflowRunner', '--seconds', '5'], 'on Dataflow the stream runs until it '
                                                       'is drained'),
    ([a for a in DATAFLOW if a != '--dry_run=True'],
     'tables.customers.path: ', ),
])
def test_stream_mistakes_are_one_line_before_it_starts(demo_copy, capsys, argv, message):
    from pipelines.cli import main
    workdir, config, _ = demo_copy
    stream_config(workdir, config)
    assert main(['stream', '--config', config] + argv) == 2
    err = user_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith('novation: error: ') and message in err[0], err


def test_a_config_without_a_stream_section_is_one_line(demo_copy, capsys):
    from pipelines.cli import main
    import yaml
    _, config, _ = demo_copy
    with open(config, encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    del doc['stream']
    with open(config, 'w', encoding='utf-8') as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
    assert main(['stream', '--config', config, '--seconds', '1']) == 2
    err = capsys.readouterr().err
    assert 'stream: missing; novation stream needs stream.changes and stream.consent' in err


def test_a_stream_runs_under_its_approved_plan_and_is_in_the_audit_log(demo_copy, capsys):
    """The stream is part of the evidence trail: it refuses a config that no longer gives the
    approved plan, its epochs and cut-over name the plan and the audit record of its start,
    the log records the cut-over, and a stream (resumed, or continuing a snapshot) never
    changes plan midway."""
    from config import load_config
    from config.plan import build_plan, plan_sha256
    from pipelines.cli import main
    from pipelines.migrate import run
    from transforms.commit.audit import read_log
    workdir, config, planted = demo_copy
    feeds = stream_config(workdir, config)
    snapshot = run(['--config', config]).run_dir
    approved = plan_sha256(build_plan(load_config(config)))
    land(os.path.join(feeds, 'changes'), 'c1', [
        {'table': 'customers', 'op': 'u', 'row': {**ROW, 'customer_id': subject},
         'committed_at': now_ms(), 'position': n}
        for n, subject in enumerate(sorted(planted.contract_customers)[:2], 1)])
    assert main(['stream', '--config', config, '--run-id', 'live', '--snapshot', snapshot,
                 '--plan-hash', approved, '--seconds', '2']) == 0
    out = os.path.join(workdir, 'out')
    started, epoch_record, cut_over = read_log(out)[-3:]
    assert (epoch_record['event'], epoch_record['epoch']) == ('epoch_committed', 1)
    assert 'seal' in epoch_record  # written with the stream's own keyring
    assert started['event'] == 'stream_started' and started['plan_sha256'] == approved
    assert started['plan_checked'] is True and started['snapshot_run_id'] == \
        os.path.basename(snapshot)
    assert set(started['key_ids']) >= {'data.personal', 'deadletter', 'manifest', 'pseudonym'}
    assert all(isinstance(i, int) for i in started['key_ids'].values())
    cutover_path = os.path.join(out, 'live', 'cutover.json')
    cutover = json.load(open(cutover_path))
    assert cutover['plan_sha256'] == approved
    assert cutover['audit_started_sha256'] == started['sha256']
    epoch = json.load(open(os.path.join(out, 'live', 'epochs', '000001', 'manifest.json')))
    assert (epoch['plan_sha256'], epoch['audit_started_sha256']) == (approved,
                                                                     started['sha256'])
    import hashlib
    assert cut_over['event'] == 'stream_cut_over' and cut_over['epochs'] == 1
    assert cut_over['cutover_sha256'] == hashlib.sha256(open(cutover_path, 'rb').read()
                                                        ).hexdigest()
    capsys.readouterr()
    assert main(['audit', 'verify', out]) == 0
    assert '1 committed run(s) and 1 cut-over stream(s)' in capsys.readouterr().out

    # the acquirer decrypts the stream's epochs, in the order to apply them
    keys = os.path.join(workdir, 'keys')
    decrypted = os.path.join(workdir, 'live-customers.parquet')
    assert main(['decrypt', os.path.join(out, 'live'), '--keys', keys, '--table', 'customers',
                 '--out', decrypted]) == 0
    import pyarrow.parquet as pq
    rows = pq.read_table(decrypted)
    assert rows.num_rows == 2 and set(rows.column('__epoch').to_pylist()) == {1}
    assert set(rows.column('__op').to_pylist()) <= {'u', 'c', 'r'}
    from pipelines.decrypt import read_table
    snapshot_ids = set(read_table(snapshot, keys=keys, table='customers')[0]
                       .column('customer_id').to_pylist())
    assert set(rows.column('customer_id').to_pylist()) <= snapshot_ids  # the same pseudonyms
    assert main(['decrypt', os.path.join(out, 'live'), '--keys', keys, '--table', 'customers',
                 '--epoch', '2', '--out', decrypted]) == 2
    assert 'has no epoch 2 (it has 1)' in capsys.readouterr().err
    assert main(['verify', os.path.join(out, 'live'), '--keys', keys]) == 0
    checked = capsys.readouterr().out
    assert 'verify live: clean' in checked and 'files: 1 of 1 match' in checked
    assert 'every column' not in checked  # scanned, with the snapshot's treatment of fields
    # an epoch deleted after the cut-over is found
    moved = os.path.join(workdir, 'epoch-1')
    shutil.move(os.path.join(out, 'live', 'epochs', '000001'), moved)
    os.makedirs(os.path.join(out, 'live', 'epochs'), exist_ok=True)
    assert main(['decrypt', os.path.join(out, 'live'), '--keys', keys, '--table', 'customers',
                 '--out', decrypted]) == 2
    assert 'its epochs are not the ones its cutover.json lists' in capsys.readouterr().err
    assert main(['verify', os.path.join(out, 'live'), '--keys', keys]) == 1
    assert 'its epochs are not the ones its cutover.json lists' in capsys.readouterr().out
    shutil.move(moved, os.path.join(out, 'live', 'epochs', '000001'))

    # a cut-over is final; a second stream over the snapshot says what it is to the first
    for argv, message in [
            (['--run-id', 'live'], 'has cut over: a cut-over is final; if the business goes on, '
                                   'start a new stream linked to it: --run-id NEW_ID '
                                   '--continues live'),
            ([], f'stream(s) live already carry the changes after snapshot '
                 f'{os.path.basename(snapshot)}: resume one'),
            (['--continues', 'nosuch'], '--continues nosuch: no stream of that id')]:
        assert main(['stream', '--config', config, '--snapshot', snapshot, '--seconds', '1']
                    + argv) == 2
        err = user_lines(capsys.readouterr().err)
        assert len(err) == 1 and message in err[0], err
    assert main(['stream', '--config', config, '--snapshot', snapshot, '--seconds', '1',
                 '--run-id', 'after', '--continues', 'live']) == 0
    capsys.readouterr()
    # the batch's reader commands say what a stream's directories are, not that they were
    # tampered with
    keys = os.path.join(workdir, 'keys')
    for argv, what in [
            (['review', os.path.join(out, 'live', 'epochs', '000001'), '--keys', keys],
             'is epoch 1 of stream live (an epoch manifest), not a batch run'),
            (['detokenize', '--run', os.path.join(out, 'live'), '--field',
              'customers.national_id', '--keys', keys, 'TOKEN'],
             "is a stream's directory (its deliveries are the epochs under epochs/), not a "
             "batch run")]:
        assert main(argv) == 2
        err = user_lines(capsys.readouterr().err)
        assert len(err) == 1 and what in err[0], err
    after = json.load(open(os.path.join(out, 'after', 'cutover.json')))
    assert (after['continues'], after['replaces']) == ('live', None)
    # what the first stream delivered is not delivered again, and every event is accounted
    # for across the two
    assert after['conservation']['holds'] is True, after['conservation']
    for e in after['epochs']:
        m = json.load(open(os.path.join(out, 'after', e['manifest'])))
        assert (m['tables'], m['retractions']) == ({}, 0)
    assert [r['continues'] for r in read_log(out) if r['event'] == 'stream_started'] == \
        [None, 'live']

    # the plan changes: a new treatment of one field
    with open(config, encoding='utf-8') as f:
        text = f.read().replace('customers.gender: keep', 'customers.gender: hash')
    with open(config, 'w', encoding='utf-8') as f:
        f.write(text)
    for argv, message in [
            (['--plan-hash', approved], f'--plan-hash {approved}: {config} no longer gives the '
                                        f'approved plan'),
            (['--run-id', 'live'], 'has cut over: a cut-over is final'),
            (['--snapshot', snapshot], f'--snapshot: {snapshot} ran under plan {approved}')]:
        assert main(['stream', '--config', config, '--seconds', '1'] + argv) == 2
        err = user_lines(capsys.readouterr().err)
        assert len(err) == 1 and message in err[0], err

    # a cut-over manifest changed after the fact no longer matches the log
    with open(cutover_path, 'a', encoding='utf-8') as f:
        f.write(' ')
    assert main(['audit', 'verify', out]) == 1
    assert 'stream live: cutover.json is not the one recorded (changed)' in \
        capsys.readouterr().out


def test_a_stream_killed_mid_epoch_and_started_again_delivers_each_change_once(demo_copy):
    import signal
    import subprocess
    import sys
    workdir, config, planted = demo_copy
    feeds = stream_config(workdir, config)
    refused = (planted.no_consent | planted.consent_withdrawn | planted.erasure_requested |
               planted.no_cross_border_consent | planted.no_sensitive_consent)
    allowed = sorted(set(planted.contract_customers) - refused)[:3]
    with open(config, encoding='utf-8') as f:
        text = f.read().replace('epoch_seconds: 60', 'epoch_seconds: 1')
    with open(config, 'w', encoding='utf-8') as f:
        f.write(text)
    start = now_ms()

    def change(position, subject, at):
        return {'table': 'customers', 'op': 'u', 'row': {**ROW, 'customer_id': subject},
                'committed_at': at, 'position': position}
    # epoch 1 holds the first two changes; the third, committed a minute later (so that no
    # watermark reaches it before the stream stops), opens epoch 2
    land(os.path.join(feeds, 'changes'), 'a', [change(1, allowed[0], start),
                                               change(2, allowed[1], start),
                                               change(3, allowed[2], start + 60_000),
                                               change(4, sorted(planted.erasure_requested)[0],
                                                      start + 60_000)])
    command = [sys.executable, '-m', 'pipelines.cli', 'stream', '--config', config,
               '--run-id', 'live']
    first = subprocess.Popen(command + ['--seconds', '60'], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    epochs = os.path.join(workdir, 'out', 'live', 'epochs')
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(epochs, '000001', 'manifest.json')):
        assert time.time() < deadline and first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # epoch 2 is open: change 3 is not committed
    first.wait()
    assert not os.path.exists(os.path.join(epochs, '000002', 'manifest.json'))
    again = subprocess.run(command + ['--seconds', '3'], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    keyring = load_keyring(os.path.join(workdir, 'keys'), warn=False)
    rows = []
    for number in sorted(os.listdir(epochs)):
        manifest = json.load(open(os.path.join(epochs, number, 'manifest.json')))
        for f in manifest['files']:
            if f['kind'] == 'data':
                rows += parquet_file(os.path.join(workdir, 'out', 'live', f['path']), keyring,
                                     f'live/{f["path"]}').read().to_pylist()
    assert sorted(r['__position'] for r in rows) == ['seq:1', 'seq:2', 'seq:3']  # once each
    assert sorted(os.listdir(epochs)) == ['000001', '000002']
    # the same feed streamed without a break (a stream that replaces the first) gives the
    # same change set, decrypted
    whole = subprocess.run([sys.executable, '-m', 'pipelines.cli', 'stream', '--config',
                            config, '--run-id', 'whole', '--replaces', 'live', '--seconds', '3'],
                           capture_output=True, text=True, timeout=120)
    assert whole.returncode == 0, whole.stderr

    def change_set(run_id):
        rows, letters, retractions = delivered_items(
            os.path.join(workdir, 'out', run_id), keyring, run_id)
        return (sorted(rows, key=lambda r: r['__position']),
                sorted(letters, key=lambda d: (d['source_file'], d['row'])), retractions)
    killed, uninterrupted = change_set('live'), change_set('whole')
    assert killed == uninterrupted and len(killed[0]) == 3 and len(killed[1]) == 1



def test_sigterm_commits_the_open_epoch_and_writes_the_cutover_manifest(demo_copy):
    import signal
    import subprocess
    import sys
    workdir, config, planted = demo_copy
    feeds = stream_config(workdir, config)
    with open(config, encoding='utf-8') as f:
        text = f.read().replace('epoch_seconds: 60', 'epoch_seconds: 1')
    with open(config, 'w', encoding='utf-8') as f:
        f.write(text)
    start = now_ms()
    subject = sorted(planted.contract_customers)[0]
    land(os.path.join(feeds, 'changes'), 'a', [
        {'table': 'customers', 'op': 'u', 'row': {**ROW, 'customer_id': subject},
         'committed_at': at, 'position': n} for n, at in ((1, start), (2, start + 2000))])
    proc = subprocess.Popen([sys.executable, '-m', 'pipelines.cli', 'stream', '--config',
                             config, '--run-id', 'live', '--seconds', '60'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    epochs = os.path.join(workdir, 'out', 'live', 'epochs')
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(epochs, '000001', 'manifest.json')):
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # drain: epoch 2 is open
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    cutover = json.load(open(os.path.join(workdir, 'out', 'live', 'cutover.json')))
    assert [e['epoch'] for e in cutover['epochs']] == [1, 2]
    assert 'cut-over manifest:' in out


def test_the_changes_applied_in_order_give_the_sellers_final_state_masked(table, keys_dir,  # noqa
                                                                           tmp_path):
    """The oracle: the seller's final rows of the customers who may still move, masked as the
    stream masks them, equal what the acquirer holds after applying every epoch in order
    (upserts by key, tombstones, retractions)."""
    from transforms.stream.changes import Change
    from transforms.consent.rules import refusal_problems
    from transforms.stream.deliver import deliver_changes
    from transforms.stream.consent import ChangeEvent, Decided
    config = dataclasses_replace_keys(table, keys_dir)
    data, consent = tmp_path / 'changes', tmp_path / 'consent'
    os.makedirs(data)
    os.makedirs(consent)
    t0 = now_ms() - 10_000  # the history, all committed before the stream starts
    rows = {s: {**ROW, 'customer_id': s} for s in ('C1', 'C2', 'C3', 'C4')}
    changes = [('c', 'C1', {}), ('c', 'C2', {}), ('u', 'C1', {'mobile': '13900001111'}),
               ('d', 'C2', {}), ('c', 'C3', {}), ('u', 'C3', {'mobile': '13700002222'}),
               ('c', 'C4', {})]
    events = []
    for n, (op, subject, update) in enumerate(changes, 1):
        rows[subject] = {**rows[subject], **update}
        events.append({'table': 'customers', 'op': op, 'row': dict(rows[subject]),
                       'committed_at': t0 + 100 * n, 'position': n})
    land(data, 'history', events)
    land(consent, 'history', [
        *({'subject_id': s, 'event': 'grant', 'purpose': 'credit_management', 'at': t0,
           'cross_border_consent': True, 'sensitive_consent': True}
          for s in ('C1', 'C2', 'C3', 'C4')),
        {'subject_id': 'C3', 'event': 'withdraw', 'purpose': 'credit_management',
         'at': t0 + 550},                                   # between C3's create and update
        {'subject_id': 'C4', 'event': 'erasure', 'at': t0 + 800}])  # after C4's create

    stream = str(tmp_path / 'stream')
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(streaming=True))
    build_stream(pipeline, config, feeds=[Feed('data', str(data / '*.jsonl'), 'changes'),
                                          Feed('consent', str(consent / '*.jsonl'), 'consent')],
                 run_id='s1', stream_dir=stream, stop_at=time.time() + 3, epoch_seconds=0.2,
                 interval=0.1, lateness=0.5, idle=0.5)
    pipeline.run().wait_until_finish()

    keyring = load_keyring(keys_dir, warn=False)
    ops = keyed_ops(keyring)
    held, retracted = {}, []
    numbers = sorted(os.listdir(os.path.join(stream, 'epochs')))
    assert len(numbers) > 1  # several epochs, applied in order
    for number in numbers:
        manifest = json.load(open(os.path.join(stream, 'epochs', number, 'manifest.json')))
        for f in manifest['files']:
            path, identity = os.path.join(stream, f['path']), f's1/{f["path"]}'
            if f['kind'] == 'data':
                # in the file's order: each row's changes in its log's order
                for row in parquet_file(path, keyring, identity).read().to_pylist():
                    if row['__op'] == 'd':
                        held.pop(row['customer_id'], None)
                    else:
                        held[row['customer_id']] = row
            elif f['kind'] == 'retractions':
                for r in parquet_file(path, keyring, identity).read().to_pylist():
                    held.pop(r['subject_id'], None)  # the acquirer deletes the customer
                    retracted.append(r['subject_id'])
    strip = lambda r: {k: v for k, v in r.items() if not k.startswith('__')}  # noqa: E731
    oracle = {}
    final = [('C1', rows['C1'])]  # C2 deleted; C3 withdrew; C4 asked for erasure
    batch, dead, _ = deliver_changes(config.table('customers'), [Decided(
        s, ChangeEvent(Change('customers', 'u', row, 0, 'seq', (0,), 'seq:0')), None, True)
        for s, row in final], ops, refusal_problems(config.transfer.legal_bases, 'HK'))
    for row in batch.to_pylist():
        oracle[row['customer_id']] = strip(row)
    assert dead == []
    assert {k: strip(v) for k, v in held.items()} == oracle
    pseudonym = lambda s: ops.pseudonym('customer_id', s)  # noqa: E731
    assert sorted(retracted) == sorted([pseudonym('C3'), pseudonym('C4')])


def delivered_items(stream_dir, keyring, run_id):
    """Every epoch's rows, dead letters and retractions, decrypted, in epoch order."""
    rows, letters, retractions = [], [], []
    for n in sorted(os.listdir(os.path.join(stream_dir, 'epochs'))):
        manifest = json.load(open(os.path.join(stream_dir, 'epochs', n, 'manifest.json')))
        for f in manifest['files']:
            path, identity = os.path.join(stream_dir, f['path']), f'{run_id}/{f["path"]}'
            if f['kind'] == 'data':
                rows += [{**r, '__table': f['table']} for r in parquet_file(
                    path, keyring, identity).read().to_pylist()]
            elif f['kind'] == 'deadletter':
                letters += [json.loads(line) for line in deadletter_lines(
                    open(path, 'rb'), keyring, identity)]
            elif f['kind'] == 'retractions':
                retractions += parquet_file(path, keyring, identity).read().to_pylist()
    return rows, letters, retractions


def test_the_live_demo_streams_its_waves_after_the_snapshot_and_refuses_after_withdrawal(
        tmp_path, caplog):
    import datetime
    from pipelines.demo import prepare_demo, run_live
    from pipelines.migrate import run
    workdir = str(tmp_path / 'live')
    config, planted = prepare_demo(workdir, customers=1000, seed=5)
    snapshot = run(['--config', config])
    with caplog.at_level('INFO', logger='novation.progress'):
        summary, plan = run_live(workdir=workdir, config=config, snapshot=snapshot.run_dir,
                                 planted=planted, waves=7, per_wave=40, wave_seconds=0.5)
    assert 'epoch 1 committed: ' in caplog.text  # a line per epoch, as it commits
    stream_dir = summary['stream_dir']
    cutover = json.load(open(os.path.join(stream_dir, 'cutover.json')))
    assert cutover['snapshot']['run_id'] == snapshot.manifest['run_id']
    # named as the acquirer holds it (relative to the output root), not by the seller's path
    assert cutover['snapshot']['manifest'] == f'{snapshot.manifest["run_id"]}/manifest.json'
    assert len(cutover['epochs']) == summary['epochs'] >= 2
    # the feed's dirt: one line that is no JSON, one customer the seller never had
    assert summary['dead_letters']['malformed'] == 1
    assert summary['dead_letters']['no_consent'] == 1
    assert summary['dead_letters']['consent_withdrawn'] >= 1
    keyring = load_keyring(os.path.join(workdir, 'keys'), warn=False)
    pseudonym = keyed_ops(keyring).pseudonym
    rows, _, retractions = delivered_items(stream_dir, keyring, os.path.basename(stream_dir))
    assert plan.withdrawn and summary['rows_written'] == len(rows)
    withdrawn = {pseudonym('customer_id', s): datetime.datetime.fromtimestamp(
        at / 1000, datetime.timezone.utc) for s, at in plan.withdrawn.items()}
    late = {pseudonym('customer_id', s) for s in plan.late}
    after = {r['customer_id'] for r in rows if r.get('customer_id') in withdrawn and
             r['__committed_at'] > withdrawn[r['customer_id']]}
    # nothing delivered after its customer's withdrawal, unless the withdrawal landed later
    # than the allowed lateness: then what was delivered is retracted
    assert plan.late and after <= late
    assert late <= {r['subject_id'] for r in retractions if r['reason'] == 'consent_withdrawn'}
    # customers the snapshot delivered who withdraw or are erased: retracted from every table
    erased = {pseudonym('customer_id', s) for s in plan.erased}
    retracted = {r['subject_id'] for r in retractions}
    assert retracted and retracted <= set(withdrawn) | erased
    assert {tuple(sorted(r['tables'].split(','))) for r in retractions} == {
        ('collection_calls', 'contracts', 'customers', 'repayments')}
