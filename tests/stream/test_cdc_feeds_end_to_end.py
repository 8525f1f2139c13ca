"""The stream end to end on CDC feeds as the tools write them: Debezium without its Connect
schema (MySQL, default encodings: base64 decimals, days, DATETIME as epoch ms) and with it,
Flink CDC's snapshot reads, Canal flat messages, Maxwell (seconds, a MINIMAL row image) and
Datastream (a key change as UPDATE-DELETE + UPDATE-INSERT), with the seller's own table names,
a snapshot read sharing one position, a key-only delete, binlog times that go backwards, a
late older change, a file landed twice, lines that are no change, a column no schema names, a
withdrawal stated in Unix seconds and a time in the year 9999.

The stream runs as a user runs it, is killed with SIGKILL after its first epoch and started
again. The seller's side is the truth the generator keeps (plain change rows in log order,
written without the product's code), applied to the exports and run through the batch; the
acquirer's side applies the snapshot and every epoch as docs/streaming.md says. They must be equal,
table by table, and every feed event must be accounted for.
"""

import base64
import datetime
import decimal
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.demo import prepare_demo
from pipelines.demo_feed import FeedPlan, Wave, _allowed
from pipelines.migrate import run
from tests.stream.test_cutover_oracle import _text, assert_acquirer_equals_oracle
from tests.cdc_forms import canal, datastream, maxwell

pytestmark = pytest.mark.slow

CST = datetime.timezone(datetime.timedelta(hours=8))
_EPOCH = datetime.datetime(1970, 1, 1)
DECIMALS = {'principal': 2, 'annual_rate': 4, 'monthly_payment': 2}


def _local_ms(text):
    """A DATETIME as Debezium sends it: the seller's wall-clock time as if it were UTC, ms."""
    moment = datetime.datetime.fromisoformat(text).astimezone(CST).replace(tzinfo=None)
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)


def _local_text(text):
    return datetime.datetime.fromisoformat(text).astimezone(CST).strftime('%Y-%m-%d %H:%M:%S')


def debezium_row(row):
    """A contract as Debezium's MySQL connector encodes it without the Connect schema."""
    out = dict(row)
    for name, scale in DECIMALS.items():
        if row[name] is None:
            continue
        unscaled = int(decimal.Decimal(row[name]).scaleb(scale))
        out[name] = base64.b64encode(unscaled.to_bytes((unscaled.bit_length() + 8) // 8, 'big',
                                                       signed=True)).decode()
    out['signed_at'] = _local_ms(row['signed_at'])  # DATETIME(0): io.debezium.time.Timestamp
    out['start_date'] = (datetime.date.fromisoformat(row['start_date']) -
                         _EPOCH.date()).days  # DATE: io.debezium.time.Date
    return out


def canal_row(row):
    """A contract as Canal sends it: every value as its MySQL text."""
    return {k: None if v is None else _local_text(v) if k == 'signed_at' else str(v)
            for k, v in row.items()}


def debezium(op, row, *, pos, ts_ms, before=None, file='mysql-bin.000003', row_in_event=0):
    return {'before': before, 'after': None if op == 'd' else row, 'op': op, 'ts_ms': ts_ms + 9,
            'source': {'version': '2.7.3.Final', 'connector': 'mysql', 'name': 'seller',
                       'ts_ms': ts_ms, 'snapshot': 'true' if op == 'r' else 'false',
                       'db': 'loan_db', 'table': 't_contract', 'server_id': 223344,
                       'file': file, 'pos': pos, 'row': row_in_event}}


def _clean(row):
    """A contract without the demo's planted dirt (Debezium could not have encoded it)."""
    try:
        datetime.date.fromisoformat(row['start_date'])
        for name in DECIMALS:
            if row[name] is not None:
                decimal.Decimal(row[name])
    except (ValueError, TypeError, decimal.InvalidOperation):
        return False
    return True


class Truth:
    """The seller's changes in log order, as plain change rows (what the batch oracle
    applies), and its consent events."""

    def __init__(self, start_ms):
        self.changes, self.consent, self._at, self._position = [], [], start_ms, 0

    def change(self, op, row):
        self._at += 7
        self._position += 1
        self.changes.append(json.dumps({'table': 'contracts', 'op': op, 'row': row,
                                        'committed_at': self._at,
                                        'position': self._position}, ensure_ascii=False))

    def plan(self):
        return FeedPlan([Wave(0, {'changes': self.changes, 'consent': self.consent})])


def test_cdc_feeds_as_the_tools_write_them_give_the_sellers_final_state(tmp_path):
    workdir = str(tmp_path / 'seller')
    config, planted = prepare_demo(workdir, customers=400, seed=23)
    snapshot = run(['--config', config])
    with open(config, encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    doc['stream'].update(epoch_seconds=1, decimal_handling_mode='precise',
                         tables={'loan_db.t_contract': 'contracts', 't_contract': 'contracts'})
    with open(config, 'w', encoding='utf-8') as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)

    allowed = set(_allowed(planted))
    contracts = [{k: _text(v) for k, v in r.items()} for r in pq.read_table(
        os.path.join(workdir, 'exports', 'contracts.parquet')).to_pylist()]
    ids = [c['contract_id'] for c in contracts]
    mine = [c for c in contracts if c['customer_id'] in allowed and ids.count(c['contract_id'])
            == 1 and _clean(c)][:14]
    assert len(mine) == 14
    by_customer = {}
    for c in contracts:
        by_customer.setdefault(c['customer_id'], []).append(c)
    withdrawing = next(c for c in mine if len(by_customer[c['customer_id']]) == 1)
    mine.remove(withdrawing)
    a, b, c, d, e, f, g, h, w, v, z, p, q = mine
    now = int(time.time() * 1000)
    truth = Truth(now - 60_000)
    wave1, wave2, consent_lines, other = [], [], [], []

    # Debezium (MySQL, no Connect schema): a snapshot whose reads share one position
    for row in (a, b, c):
        new = {**row, 'overdue_days': 11}
        truth.change('u', new)
        wave1.append(debezium('r', debezium_row(new), pos=154, ts_ms=now - 50_000))
    # binlog times go backwards: the later update (pos 2000) has the earlier time
    first, second = {**w, 'overdue_days': 1}, {**w, 'overdue_days': 2}
    older = {**w, 'overdue_days': 9}
    truth.change('u', older)   # pos 1500, lands late (wave 2)
    truth.change('u', first)   # pos 1800
    truth.change('u', second)  # pos 2000
    wave1.append(debezium('u', debezium_row(first), pos=1800, ts_ms=now - 40_000))
    wave1.append(debezium('u', debezium_row(second), pos=2000, ts_ms=now - 41_000))
    wave2.append(debezium('u', debezium_row(older), pos=1500, ts_ms=now - 39_000))
    # a delete with only its key (REPLICA IDENTITY DEFAULT in PostgreSQL terms)
    truth.change('d', v)
    wave1.append(debezium('d', None, before={'contract_id': v['contract_id']}, pos=2100,
                          ts_ms=now - 38_000))
    # a primary key change as Debezium's MySQL connector writes it: delete, then create
    renamed = {**d, 'contract_id': d['contract_id'] + 'K'}
    truth.change('d', d)
    truth.change('c', renamed)
    wave1.append(debezium('d', None, before=debezium_row(d), pos=2200, ts_ms=now - 37_000))
    wave1.append(debezium('c', debezium_row(renamed), pos=2200, ts_ms=now - 37_000,
                          row_in_event=0))
    # Canal: one message, two rows (one with a column the seller added, no schema names it)
    e_new, f_new = {**e, 'status': 'overdue', 'overdue_days': 30}, {**f, 'overdue_days': 3}
    truth.change('u', e_new)
    truth.change('u', f_new)
    message = canal('UPDATE', [canal_row(e_new), {**canal_row(f_new), 'tenant_id': '7'}],
                    old=[{'status': 'active'}, {'overdue_days': '0'}], es=now - 30_000,
                    message_id=501, table='t_contract')
    wave1.append(message)
    wave2.append(message)  # the same message landed again: repeats
    # Maxwell: seconds, a MINIMAL row image (only the key, the subject and what changed)
    g_new = {**g, 'overdue_days': 45}
    truth.change('u', g_new)
    wave1.append(maxwell('update', {'contract_id': g['contract_id'],
                                    'customer_id': g['customer_id'], 'overdue_days': 45},
                         ts=(now - 20_000) // 1000, position='mysql-bin.000009:700', xoffset=0,
                         old={'overdue_days': g['overdue_days']}, table='t_contract'))
    # Datastream: a key change as UPDATE-DELETE + UPDATE-INSERT at one log position
    h_new = {**h, 'contract_id': h['contract_id'] + 'D', 'term_months': 60}
    truth.change('d', h)
    truth.change('c', h_new)
    for row, kind in ((h, 'UPDATE-DELETE'), (h_new, 'UPDATE-INSERT')):
        wave2.append(datastream({**canal_row(row), 'term_months': row['term_months']}, kind,
                                kind == 'UPDATE-DELETE', now - 10_000, table='t_contract'))
    # a withdrawal in Unix seconds, then a change the stream must refuse (and a retraction)
    withdraw_at = now - 15_000
    truth.consent.append(json.dumps({'subject_id': withdrawing['customer_id'],
                                     'event': 'withdraw', 'purpose': 'credit_management',
                                     'at': withdraw_at}))
    consent_lines.append({'subject_id': withdrawing['customer_id'], 'event': 'withdraw',
                          'purpose': 'credit_management', 'at': withdraw_at // 1000})
    late_change = {**withdrawing, 'overdue_days': 5}
    truth.change('u', late_change)
    wave2.append(debezium('u', debezium_row(late_change), pos=3000, ts_ms=now - 5_000))
    # lines that are no change, and a time no clock reads (not in the truth: refused)
    other += [None, {'ts_ms': now}, {'status': 'BEGIN', 'id': '571:53195829', 'ts_ms': now,
                                     'event_count': None, 'data_collections': None},
              {'source': {'table': 't_contract'}, 'databaseName': 'loan_db',
               'ddl': 'ALTER TABLE t_contract ADD COLUMN tenant_id INT', 'tableChanges': []},
              canal('ALTER', [], ddl=True, table='t_contract'),
              maxwell('update', {**canal_row(z), 'overdue_days': '99'}, ts=253402300799,
                      position='mysql-bin.000009:900', table='t_contract')]

    feeds = os.path.join(workdir, 'feeds')

    def land(kind, name, events):
        os.makedirs(os.path.join(feeds, kind), exist_ok=True)
        path = os.path.join(feeds, kind, f'.{name}.tmp')
        with open(path, 'w', encoding='utf-8') as out:
            out.writelines(json.dumps(e, ensure_ascii=False) + '\n' for e in events)
        os.rename(path, os.path.join(feeds, kind, f'{name}.jsonl'))

    land('changes', 'w1-cdc', wave1)
    land('changes', 'w1-other', other)
    land('consent', 'w1-consent', consent_lines)
    command = [sys.executable, '-m', 'pipelines.cli', 'stream', '--config', config,
               '--snapshot', snapshot.run_dir, '--run-id', 'cdc']
    first = subprocess.Popen(command + ['--seconds', '120'], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    stream_dir = os.path.join(workdir, 'out', 'cdc')
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(stream_dir, 'epochs', '000001', 'manifest.json')):
        assert time.time() < deadline and first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    land('changes', 'w2-cdc', wave2)
    again = subprocess.run(command + ['--seconds', '8'], capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stderr
    assert 'every one accounted for' in again.stdout, again.stdout

    assert_acquirer_equals_oracle(workdir, truth.plan(), str(tmp_path / 'final'), config,
                                  snapshot.run_dir, stream_dir)

    cutover = json.load(open(os.path.join(stream_dir, 'cutover.json')))
    check = cutover['conservation']
    assert check['holds'], check
    totals = {}
    for file in check['files']:
        for outcome, n in file['outcomes'].items():
            if isinstance(n, dict):
                for kind, k in n.items():
                    totals[f'{outcome}:{kind}'] = totals.get(f'{outcome}:{kind}', 0) + k
            else:
                totals[outcome] = totals.get(outcome, 0) + n
    # the Canal message landed twice; of w's three updates the two older in its log
    assert totals['repeat'] == 2 and totals['superseded'] == 2, totals
    assert totals['not_a_change:tombstone'] == 1 and totals['not_a_change:heartbeat'] == 1
    assert totals['not_a_change:transaction'] == 1
    assert totals['not_a_change:schema_change'] == 2
    assert totals['consent_event'] == 1
    manifests = [json.load(open(os.path.join(stream_dir, e['manifest'])))
                 for e in cutover['epochs']]
    dead = {}
    for m in manifests:
        for t in m['tables'].values():
            for reason, n in t['dead_letters'].items():
                dead[reason] = dead.get(reason, 0) + n
    assert dead == {'consent_withdrawn': 1, 'implausible_time': 1}, dead
    held_columns = [m['held_columns'] for m in manifests if m['held_columns']]
    assert held_columns == [{'contracts': {'tenant_id': 1}}]
