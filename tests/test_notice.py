"""The notification list (Art. 22) checked against the run, and novation incident."""

import csv
import json
import os

import pytest

from pipelines.cli import main
from pipelines.decrypt import read_notice, read_table
from transforms.notice import notice_records

SENSITIVE = {'cn_resident_id', 'bank_card', 'income', 'credit_score'}


@pytest.fixture(scope='module')
def noticed(demo_run):
    workdir, planted, result = demo_run
    notice_dir = os.path.join(workdir, 'notices', result.manifest['run_id'])
    return workdir, planted, result, notice_dir, read_notice(notice_dir,
                                                            os.path.join(workdir, 'keys'))


def test_the_list_names_every_customer_whose_data_moved_and_what_moved(noticed):
    workdir, planted, result, _, records = noticed
    keys = os.path.join(workdir, 'keys')
    moved = {r['customer_id']: r for r in records if r['moved']}
    # every delivered customer id (a pseudonym) is one listed customer's, table by table
    for table in result.manifest['tables']:
        delivered, _ = read_table(result.run_dir, keys=keys, table=table)
        ids = set(delivered.column('customer_id').to_pylist())
        listed = {r['tables'][table]['delivered_as'] for r in moved.values()
                  if table in r['tables']}
        assert listed == ids, table
    assert result.manifest['notice']['moved'] == len(moved)
    for r in moved.values():
        assert r['recipient'] == result.manifest['transfer']['acquirer']
        assert r['recipient_contact'].startswith('privacy@')
    # no separate consent for sensitive data: not told that sensitive data moved
    for customer in planted.no_sensitive_consent & set(moved):
        assert not SENSITIVE & set(moved[customer]['tables']['customers']['categories'])
    someone = next(c for c in moved if c not in planted.no_sensitive_consent and
                   'customers' in moved[c]['tables'])
    assert 'cn_resident_id' in moved[someone]['tables']['customers']['categories']


def test_those_who_did_not_move_are_listed_with_why_and_erasures_only_counted(noticed):
    _, planted, result, _, records = noticed
    not_moved = {r['customer_id']: r for r in records if not r['moved']}
    for reason in ('no_consent', 'consent_withdrawn', 'no_cross_border_consent'):
        for customer in getattr(planted, reason):
            assert reason in not_moved[customer]['refused'], (reason, customer)
    listed = {r['customer_id'] for r in records}
    assert not listed & planted.erasure_requested
    summary = result.manifest['notice']
    assert summary['erased_not_listed'] == len(planted.erasure_requested)
    assert summary['not_moved'] == len(not_moved)


def test_the_list_never_reaches_the_acquirer(noticed):
    workdir, _, result, notice_dir, records = noticed
    assert os.path.relpath(notice_dir, os.path.join(workdir, 'out')).startswith(os.pardir)
    some_id = records[0]['customer_id'].encode()
    for root, _, files in os.walk(result.run_dir):
        for name in files:
            assert some_id not in open(os.path.join(root, name), 'rb').read()
    for root, _, files in os.walk(notice_dir):
        for name in files:
            if name.endswith('.enc'):
                assert some_id not in open(os.path.join(root, name), 'rb').read()


def test_incident_names_what_is_in_a_file_and_whom_to_notify(noticed, tmp_path, capsys):
    workdir, _, result, notice_dir, records = noticed
    keys = os.path.join(workdir, 'keys')
    entry = result.manifest['tables']['contracts']['files'][0]
    out = str(tmp_path / 'notify.csv')
    assert main(['incident', '--run', result.run_dir, '--file', entry['path'], '--keys', keys,
                 '--notice', notice_dir, '--out', out]) == 0
    printed = capsys.readouterr().out
    assert 'the file the run wrote' in printed and 'repayment_account' in printed
    assert 'data.sensitive' in printed
    from transforms.crypto import file_identity
    from transforms.delivered import parquet_file
    from transforms.keyring import load_keyring
    in_file = set(parquet_file(os.path.join(result.run_dir, entry['path']), load_keyring(keys),
                               file_identity(result.manifest['run_id'], entry['path']))
                  .read(columns=['customer_id']).column('customer_id').to_pylist())
    rows = list(csv.DictReader(open(out, encoding='utf-8')))
    expected = {r['customer_id'] for r in records if r['moved'] and
                r['tables'].get('contracts', {}).get('delivered_as') in in_file}
    assert {r['customer_id'] for r in rows} == expected and len(expected) == len(in_file)
    assert not any(r['customer_id'] in printed for r in rows)  # ids only in --out
    # without the notice list it still says what the file holds
    assert main(['incident', '--run', result.run_dir, '--file', entry['path'],
                 '--keys', keys]) == 0
    assert 'give --notice' in capsys.readouterr().out


def test_records_of_a_shard_are_pure_and_erasure_wins():
    import pyarrow as pa
    moved = pa.table({'subject': ['A', 'B'], 'table': ['t', 't'], 'delivered_as': ['pa', 'pb'],
                      'categories': ['cn_mobile\u241femail', 'email']})
    lines, counts = notice_records(
        [('moved', moved), ('refused', ('B', 'erasure_requested', 't')),
         ('refused', ('C', 'no_consent', 't')), ('refused', ('A', 'malformed', 't'))],
        'R', 'r@example')
    records = [json.loads(line) for line in lines]
    assert [r['customer_id'] for r in records] == ['A', 'C']
    assert records[0]['tables'] == {'t': {'categories': ['cn_mobile', 'email'],
                                          'delivered_as': 'pa'}}
    assert records[0]['refused'] == {'malformed': ['t']}
    assert counts == {'moved': 1, 'not_moved': 1, 'erased_not_listed': 1,
                      'not_moved_by_reason': {'no_consent': 1}}
