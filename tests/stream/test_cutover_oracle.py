"""The proof of the stream, end to end: the snapshot run plus every epoch, applied in order by
the acquirer, equals the seller's final state at cut-over as the batch would deliver it.

The seller's side is rebuilt here, independently of the product: its exports with every change
of the live feed applied (upserts and deletes by primary key), and its consent registry and
erasure list with every consent event applied. The oracle is a batch run over those final
tables. The stream runs as a user runs it (``novation stream --snapshot``, its own process)
while the feed lands, is killed with SIGKILL after its first epoch, and is started again on
the same run until cut-over.
"""

import csv
import datetime
import decimal
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest
import yaml

from config import load_config
from pipelines.backfill import backfill_list, land_backfill
from pipelines.decrypt import read_table
from pipelines.demo import prepare_demo
from pipelines.demo_feed import land_waves, plan_feed
from pipelines.migrate import run
from transforms.write.delivered import parquet_file
from transforms.stream.chain import manifest_sha256
from transforms.common.errors import NovationError
from transforms.keys.keyring import load_keyring

pytestmark = pytest.mark.slow  # a snapshot, a stream run twice and a batch run

CST = datetime.timezone(datetime.timedelta(hours=8))


def _text(value):
    """A Parquet value as the seller's CDC tool (and its JSON export) writes it."""
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=' ')
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def _iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, CST).isoformat(timespec='milliseconds')


RAW = '(a broken line)'


def _json_row(line):
    """A line of a JSON Lines export; the planted broken ones stay as they are."""
    try:
        return json.loads(line)
    except ValueError:
        return {RAW: line}


def feed_events(plan):
    """The plan's change events as (commit ms, position, table, op, row), in commit order, and
    its consent events; lines that are no JSON are no events at the seller either."""
    changes, consent = [], []
    for wave in plan.waves:
        for line in wave.files['changes']:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if 'source' in e:  # a Debezium envelope
                row = e['before'] if e['op'] == 'd' else e['after']
                changes.append((e['source']['ts_ms'], e['source']['lsn'], e['source']['table'],
                                e['op'], row))
            else:
                changes.append((e['committed_at'], e['position'], e['table'], e['op'], e['row']))
        consent += [json.loads(line) for line in wave.files['consent']]
    return sorted(changes, key=lambda c: c[:2]), sorted(consent, key=lambda e: e['at'])


def sellers_tables(workdir, plan, until_ms=None):
    """The seller's customers' CSV header and its tables (table -> rows) with every change
    of the feed committed by ``until_ms`` (all, if None) applied."""
    keys = {'customers': 'customer_id', 'contracts': 'contract_id', 'repayments': 'repayment_id'}
    with open(os.path.join(workdir, 'exports', 'customers.csv'), encoding='gbk',
              newline='') as f:
        header, *records = list(csv.reader(f))  # the planted broken rows stay as they are
    tables = {'customers': [dict(zip(header, r)) if len(r) == len(header) else {RAW: r}
                            for r in records],
              'contracts': [{k: _text(v) for k, v in r.items()} for r in pq.read_table(
                  os.path.join(workdir, 'exports', 'contracts.parquet')).to_pylist()]}
    with open(os.path.join(workdir, 'exports', 'repayments.jsonl'), encoding='utf-8') as f:
        tables['repayments'] = [_json_row(line) for line in f if line.strip()]
    changes, _ = feed_events(plan)
    for at, _, table, op, row in changes:
        if until_ms is not None and at > until_ms:
            continue
        key = keys[table]  # the plan changes no other table
        tables[table] = [r for r in tables[table] if r.get(key) != row[key]]
        if op != 'd':
            tables[table].append(row)
    return header, tables


def targeted_export(workdir, plan, config, subjects, at_ms, out_dir):
    """What the seller exports for a backfill: the rows of ``subjects`` at ``at_ms``, each
    table in a form its export may take (the customers as GBK CSV, the collection calls as
    Avro with the export's own schema); returns ({table: path}, {table: [each row's
    customer]})."""
    import fastavro
    os.makedirs(out_dir)
    header, tables = sellers_tables(workdir, plan, at_ms)

    owners = {}

    def theirs(table, row):
        owner = next((str(row[c]) for c in config.table(table).subject_columns
                      if row.get(c) is not None), None)
        if owner in subjects:
            owners.setdefault(table, []).append(owner)
            return True
        return False

    paths = {'customers': os.path.join(out_dir, 'customers.csv')}
    with open(paths['customers'], 'w', encoding='gbk', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([r[h] for h in header] for r in tables['customers']
                         if RAW not in r and theirs('customers', r))
    for table in ('contracts', 'repayments'):
        paths[table] = os.path.join(out_dir, f'{table}.jsonl')
        with open(paths[table], 'w', encoding='utf-8') as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + '\n' for r in tables[table]
                         if RAW not in r and theirs(table, r))
    with open(os.path.join(workdir, 'exports', 'collection_calls.avro'), 'rb') as f:
        reader = fastavro.reader(f)
        schema, calls = reader.writer_schema, [r for r in reader if theirs('collection_calls', r)]
    paths['collection_calls'] = os.path.join(out_dir, 'collection_calls.avro')
    with open(paths['collection_calls'], 'wb') as f:
        fastavro.writer(f, schema, calls)
    return paths, owners


def sellers_final_state(workdir, plan, final_dir):
    """Write the seller's tables and consent at cut-over under ``final_dir``; returns the config
    of a batch run over them (the oracle), with the demo's keys, masking and schemas."""
    os.makedirs(final_dir)
    header, tables = sellers_tables(workdir, plan)
    _, consent = feed_events(plan)
    with open(os.path.join(final_dir, 'customers.csv'), 'w', encoding='gbk', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(r.get(RAW) or [r[h] for h in header] for r in tables['customers'])
    for table in ('contracts', 'repayments'):
        with open(os.path.join(final_dir, f'{table}.jsonl'), 'w', encoding='utf-8') as f:
            f.writelines(r.get(RAW) or json.dumps(r, ensure_ascii=False) + '\n'
                         for r in tables[table])

    with open(os.path.join(workdir, 'exports', 'consent_registry.csv'), encoding='utf-8',
              newline='') as f:
        registry = list(csv.DictReader(f))
    with open(os.path.join(workdir, 'exports', 'erasure_requests.csv'), encoding='utf-8',
              newline='') as f:
        erasures = list(csv.DictReader(f))
    for e in consent:
        mine = [r for r in registry if r['subject_id'] == e['subject_id'] and
                r['purpose'] == e.get('purpose')]
        if e['event'] == 'grant':
            registry.append({'subject_id': e['subject_id'], 'purpose': e['purpose'],
                             'granted': 'true', 'granted_at': _iso(e['at']), 'withdrawn_at': '',
                             'sensitive_consent': str(e['sensitive_consent']).lower(),
                             'cross_border_consent': str(e['cross_border_consent']).lower()})
        elif e['event'] == 'withdraw':
            assert mine, 'a withdrawal of a consent the registry holds'
            for r in mine:
                r['withdrawn_at'] = _iso(e['at'])
        else:
            assert e['event'] == 'erasure', e['event']
            erasures.append({'subject_id': e['subject_id'], 'requested_at': _iso(e['at'])})
    for name, rows in (('consent_registry.csv', registry), ('erasure_requests.csv', erasures)):
        with open(os.path.join(final_dir, name), 'w', encoding='utf-8', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    with open(os.path.join(workdir, 'demo.yaml'), encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    doc['tables']['customers']['path'] = os.path.join(final_dir, 'customers.csv')
    for table in ('contracts', 'repayments'):
        doc['tables'][table].update(path=os.path.join(final_dir, f'{table}.jsonl'),
                                    format='jsonl')
    doc['tables']['collection_calls']['path'] = os.path.join(workdir, 'exports',
                                                             'collection_calls.avro')
    for t in doc['tables'].values():
        t['schema'] = os.path.join(workdir, t['schema'])
    doc['consent'] = {'registry': os.path.join(final_dir, 'consent_registry.csv'),
                      'erasures': os.path.join(final_dir, 'erasure_requests.csv')}
    doc['output'].update(path=os.path.join(final_dir, 'out'), keys=os.path.join(workdir, 'keys'))
    doc.pop('stream')
    path = os.path.join(final_dir, 'final.yaml')
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
    return path


def acquirers_state(config, snapshot_dir, stream_dir, keys):
    """What the acquirer holds after loading the snapshot, then applying each epoch in order:
    its rows in commit order (upserts and tombstones by primary key), then its retractions
    (every row of the customer in the tables named; only the sensitive fields for
    ``no_sensitive_consent``). Returns table -> rows."""
    keyring = load_keyring(keys, warn=False)
    held = {t.name: read_table(snapshot_dir, keys=keys, table=t.name)[0].to_pylist()
            for t in config.tables}
    run_id = os.path.basename(stream_dir)
    cutover = json.load(open(os.path.join(stream_dir, 'cutover.json')))
    for epoch in cutover['epochs']:  # the cut-over manifest says the order
        manifest = json.load(open(os.path.join(stream_dir, epoch['manifest'])))
        retractions = []
        for f in manifest['files']:
            path, identity = os.path.join(stream_dir, f['path']), f'{run_id}/{f["path"]}'
            if f['kind'] == 'data':
                key = config.table(f['table']).schema.primary_key
                rows = parquet_file(path, keyring, identity).read().to_pylist()
                # docs/streaming.md's procedure: in the file's order, a delete removes the key, a
                # whole row replaces it, a partial row (__columns) updates the fields it names;
                # a table without a primary key takes creates (and backfills) as new rows
                for row in rows:
                    if key is None:
                        held[f['table']].append({k: v for k, v in row.items()
                                                 if not k.startswith('__')})
                        continue
                    old = [r for r in held[f['table']] if r[key] == row[key]]
                    table = [r for r in held[f['table']] if r[key] != row[key]]
                    if row['__op'] != 'd':
                        new = {k: v for k, v in row.items() if not k.startswith('__')}
                        if row['__columns'] is not None and old:
                            named = row['__columns'].split(',')
                            new = {**old[0], **{k: new[k] for k in named}}
                        table.append(new)
                    held[f['table']] = table
            elif f['kind'] == 'retractions':
                retractions += parquet_file(path, keyring, identity).read().to_pylist()
        for r in retractions:
            for name in r['tables'].split(','):
                t = config.table(name)
                if r['reason'] == 'no_sensitive_consent':
                    sensitive = {s.name for s in t.schema.fields
                                 if s.classification == 'sensitive'}
                    held[name] = [{k: None if k in sensitive and row[t.subject_key] ==
                                   r['subject_id'] else v for k, v in row.items()}
                                  for row in held[name]]
                else:
                    held[name] = [row for row in held[name]
                                  if row[t.subject_key] != r['subject_id']]
    return held


def committed_files(stream_dir):
    """The feed files the committed epochs have read whole (an epoch being written is not
    yet one)."""
    names = set()
    for number in os.listdir(os.path.join(stream_dir, 'epochs')):
        try:
            manifest = json.load(open(os.path.join(stream_dir, 'epochs', number,
                                                   'manifest.json')))
        except (OSError, ValueError):
            continue
        names.update(f['path'] for f in manifest.get('files_read', []))
    return names


def _text_of(handle):
    handle.seek(0)
    return handle.read()


def _canonical(rows):
    return sorted(json.dumps(r, sort_keys=True, default=str, ensure_ascii=False) for r in rows)


def assert_acquirer_equals_oracle(workdir, plan, final_dir, config, snapshot_dir, stream_dir):
    """The acquirer's tables (snapshot, then every epoch) equal the batch over the seller's
    final state, table by table, decrypted."""
    final = sellers_final_state(workdir, plan, final_dir)
    oracle = run(['--config', final])
    keys = os.path.join(workdir, 'keys')
    held = acquirers_state(load_config(config), snapshot_dir, stream_dir, keys)
    for table, rows in held.items():
        expected = read_table(oracle.run_dir, keys=keys, table=table)[0].to_pylist()
        assert _canonical(rows) == _canonical(expected), table


def test_the_snapshot_and_its_stream_killed_and_resumed_give_the_sellers_final_state_masked(
        tmp_path):
    workdir = str(tmp_path / 'seller')
    config, planted = prepare_demo(workdir, customers=600, seed=11)
    snapshot = run(['--config', config])
    with open(config, encoding='utf-8') as f:
        text = f.read()
    with open(config, 'w', encoding='utf-8') as f:
        f.write(text.replace('epoch_seconds: 2', 'epoch_seconds: 1'))
    started = time.time()
    plan = plan_feed(workdir, planted, start_ms=int(started * 1000), waves=8, per_wave=30,
                     wave_seconds=0.6)
    assert plan.withdrawn and plan.erased and plan.late and plan.new_customers
    # consent given again: a customer who withdrew, and one whose rows moved without their
    # sensitive fields; their rows come back by novation backfill while the stream runs
    assert plan.regranted and plan.sensitive_later
    lander = threading.Thread(target=land_waves, args=(os.path.join(workdir, 'feeds'), plan),
                              kwargs={'started': started}, daemon=True)
    lander.start()
    # no stop time: the test cuts over itself, once it has seen everything land
    command = [sys.executable, '-m', 'pipelines.cli', 'stream', '--config', config,
               '--snapshot', snapshot.run_dir, '--run-id', 'live']
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stream_dir = os.path.join(workdir, 'out', 'live')
    deadline = time.time() + 90
    while not os.path.exists(os.path.join(stream_dir, 'epochs', '000001', 'manifest.json')):
        assert time.time() < deadline and first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # while the feed lands, with the next epoch open
    first.wait()
    kept = manifest_sha256(stream_dir, 1)
    # started again: it cuts over on SIGTERM once every file the seller landed (the waves and
    # the backfill) is in a committed epoch, however slow the machine
    errors = open(tmp_path / 'stream.err', 'w+', encoding='utf-8')
    again = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, text=True)
    # the stream lists the customers who consented again; the seller exports their rows now
    # and novation backfill lands them for the running stream to deliver
    keys = os.path.join(workdir, 'keys')
    wanted = set(plan.regranted) | set(plan.sensitive_later)
    listed = {}
    while not wanted <= set(listed):
        assert time.time() < deadline + 600 and again.poll() is None, _text_of(errors)
        time.sleep(0.2)
        try:
            listed = {r['subject_id']: r['kind'] for r in backfill_list(stream_dir, keys)}
        except NovationError:  # an epoch being written
            continue
    assert listed == {**{s: 'rows' for s in plan.regranted},
                      **{s: 'sensitive' for s in plan.sensitive_later}}
    at_ms = int(time.time() * 1000)
    exports, owners = targeted_export(workdir, plan, load_config(config), wanted, at_ms,
                                      str(tmp_path / 'targeted'))
    landed = land_backfill(stream_dir, load_config(config), exports,
                           datetime.datetime.fromtimestamp(at_ms / 1000, CST))
    # the customer who withdrew: their rows of every table; the other: of the tables with
    # sensitive fields (the collection calls have none: theirs are whole already)
    calls = sum(1 for s in owners.get('collection_calls', []) if s in plan.sensitive_later)
    assert landed['customers'] == 2
    assert landed['rows'] == sum(len(o) for o in owners.values()) - calls
    assert landed['left_out'] == ({'collection_calls: complete already (no sensitive field)':
                                   calls} if calls else {})
    lander.join()
    landed_files = {f'{"data" if kind == "changes" else kind}/wave-{n:04d}.jsonl'
                    for n, wave in enumerate(plan.waves, 1)
                    for kind, lines in wave.files.items() if lines}
    landed_files.add(f'backfill/{os.path.basename(landed["path"])}')
    while not landed_files <= committed_files(stream_dir):
        assert time.time() < deadline + 900 and again.poll() is None, _text_of(errors)
        time.sleep(0.2)
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=600) == 0, _text_of(errors)
    epochs = json.load(open(os.path.join(stream_dir, 'cutover.json')))['epochs']
    assert epochs[0]['sha256'] == kept and len(epochs) >= 3  # it went on after epoch 1

    assert_acquirer_equals_oracle(workdir, plan, str(tmp_path / 'final'), config,
                                  snapshot.run_dir, stream_dir)
    # what the stream changed: the proof is not of a stream that delivered nothing
    changed = sum(t['rows_written'] for m in os.listdir(os.path.join(stream_dir, 'epochs'))
                  for t in json.load(open(os.path.join(stream_dir, 'epochs', m,
                                                       'manifest.json')))['tables'].values())
    assert changed >= plan.changes // 2
