"""The stream end to end on the local runner, in real time: feed files land while it runs,
epochs are committed, read back and decrypted; a withdrawal that lands after a later change
still refuses it, and the customer's earlier delivery is retracted."""

import json
import os
import threading
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
import pytest

from pipelines.stream import build_stream
from transforms.crypto import keyed_ops
from transforms.delivered import deadletter_lines, parquet_file
from transforms.epochs import manifest_sha256
from transforms.feeds import Feed
from transforms.keyring import load_keyring

from test_epochs import ROW, dataclasses_replace_keys, table  # noqa: F401 (a fixture)

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
    assert [(r['subject_id'], r['tables'], r['reason']) for r in retractions] == [
        (c1, 'customers', 'consent_withdrawn')]
    for f in files:  # nothing in clear
        data_bytes = open(os.path.join(stream, f['path']), 'rb').read()
        assert b'13812345678' not in data_bytes and b'11010519491231002X' not in data_bytes
