"""The notification list (Art. 22) checked against the run, and novation incident."""

import csv
import json
import os

import pytest

from pipelines.cli import main
from pipelines.decrypt import read_notice, read_table
from transforms.commit.notice import notice_table

SENSITIVE = {'cn_resident_id', 'bank_card', 'income', 'credit_score'}


@pytest.fixture(scope='module')
def noticed(demo_run):
    workdir, planted, result = demo_run
    notice_dir = os.path.join(workdir, 'notices', result.manifest['run_id'])
    return workdir, planted, result, notice_dir, read_notice(notice_dir,
                                                            os.path.join(workdir, 'keys'))


def by_customer(rows):
    out = {}
    for r in rows:
        out.setdefault(r['customer_id'], []).append(r)
    return out


def test_the_list_names_every_customer_whose_data_moved_and_what_moved(noticed):
    workdir, planted, result, _, rows = noticed
    keys = os.path.join(workdir, 'keys')
    customers = by_customer(rows)
    moved = {c for c, rs in customers.items() if rs[0]['moved']}
    assert all(r['moved'] == (c in moved) for c, rs in customers.items() for r in rs)
    # every delivered customer id (a pseudonym) is one listed customer's, table by table
    for table in result.manifest['tables']:
        delivered, _ = read_table(result.run_dir, keys=keys, table=table)
        ids = set(delivered.column('customer_id').to_pylist())
        listed = {r['delivered_as'] for r in rows
                  if r['table'] == table and r['categories'] is not None}
        assert listed == ids, table
    assert result.manifest['notice']['moved'] == len(moved)
    for r in rows:
        if r['categories'] is not None:
            assert r['recipient'] == result.manifest['transfer']['acquirer']
            assert r['recipient_contact'].startswith('privacy@')
    def categories(customer):
        return {c for r in customers[customer] if r['table'] == 'customers' and r['categories']
                for c in r['categories'].split(', ')}
    # no separate consent for sensitive data: not told that sensitive data moved
    for customer in planted.no_sensitive_consent & moved:
        assert not SENSITIVE & categories(customer)
    someone = next(c for c in moved if c not in planted.no_sensitive_consent and
                   categories(c))
    assert 'cn_resident_id' in categories(someone)


def test_those_who_did_not_move_are_listed_with_why_and_erasures_only_counted(noticed):
    _, planted, result, _, rows = noticed
    customers = by_customer(rows)
    not_moved = {c: rs for c, rs in customers.items() if not rs[0]['moved']}
    for reason in ('no_consent', 'consent_withdrawn', 'no_cross_border_consent'):
        for customer in getattr(planted, reason):
            assert all(reason in r['refused'] for r in not_moved[customer]), (reason, customer)
    assert not set(customers) & planted.erasure_requested
    summary = result.manifest['notice']
    assert summary['erased_not_listed'] == len(planted.erasure_requested)
    assert summary['not_moved'] == len(not_moved)
    report = json.load(open(os.path.join(result.run_dir, 'report.json'), encoding='utf-8'))
    assert f'{summary["moved"]:,} customers to tell' in report['notice']
    assert report['plan'].startswith(f'Plan sha256 {result.manifest["plan_sha256"]}: not '
                                     f'checked')


def test_the_list_never_reaches_the_acquirer(noticed):
    workdir, _, result, notice_dir, rows = noticed
    assert os.path.relpath(notice_dir, os.path.join(workdir, 'out')).startswith(os.pardir)
    some_id = rows[0]['customer_id'].encode()
    for root, _, files in os.walk(result.run_dir):
        for name in files:
            assert some_id not in open(os.path.join(root, name), 'rb').read()
    for root, _, files in os.walk(notice_dir):
        for name in files:
            if name.endswith('.enc'):
                assert some_id not in open(os.path.join(root, name), 'rb').read()


def test_incident_names_what_is_in_a_file_and_whom_to_notify(noticed, tmp_path, capsys):
    workdir, _, result, notice_dir, rows = noticed
    keys = os.path.join(workdir, 'keys')
    entry = result.manifest['tables']['contracts']['files'][0]
    out = str(tmp_path / 'notify.csv')
    assert main(['incident', '--run', result.run_dir, '--file', entry['path'], '--keys', keys,
                 '--notice', notice_dir, '--out', out]) == 0
    printed = capsys.readouterr().out
    assert 'the file the run wrote' in printed and 'repayment_account' in printed
    assert 'data.sensitive' in printed
    from transforms.keys.crypto import file_identity
    from transforms.write.delivered import parquet_file
    from transforms.keys.keyring import load_keyring
    in_file = set(parquet_file(os.path.join(result.run_dir, entry['path']), load_keyring(keys),
                               file_identity(result.manifest['run_id'], entry['path']))
                  .read(columns=['customer_id']).column('customer_id').to_pylist())
    written = list(csv.DictReader(open(out, encoding='utf-8')))
    expected = {r['customer_id'] for r in rows if r['table'] == 'contracts' and
                r['categories'] is not None and r['delivered_as'] in in_file}
    assert {r['customer_id'] for r in written} == expected and len(expected) == len(in_file)
    assert not any(r['customer_id'] in printed for r in written)  # ids only in --out
    # without the notice list it still says what the file holds
    assert main(['incident', '--run', result.run_dir, '--file', entry['path'],
                 '--keys', keys]) == 0
    assert 'give --notice' in capsys.readouterr().out


def test_a_shards_rows_are_pure_and_erasure_wins():
    import pyarrow as pa
    from transforms.commit.notice import _PARTS, _REFUSED
    moved = pa.table({'subject': ['A', 'B', 'A'], 'table': ['t', 't', 't'],
                      'delivered_as': ['pa', 'pb', 'pa'], 'mask': [0b01, 0b10, 0b10]},
                     schema=_PARTS)
    refused = pa.table({'subject': ['B', 'C', 'A', 'C'], 'table': ['t', 't', 'u', 'u'],
                        'reason': ['erasure_requested', 'no_consent', 'malformed',
                                   'no_consent']}, schema=_REFUSED)
    table, counts = notice_table([('moved', moved), ('refused', refused)],
                                 {'t': ['cn_mobile', 'email']}, 'R', 'r@example')
    assert table.to_pylist() == [
        {'customer_id': 'A', 'moved': True, 'table': 't', 'categories': 'cn_mobile, email',
         'delivered_as': 'pa', 'refused': None, 'recipient': 'R',
         'recipient_contact': 'r@example'},
        {'customer_id': 'A', 'moved': True, 'table': 'u', 'categories': None,
         'delivered_as': None, 'refused': 'malformed', 'recipient': None,
         'recipient_contact': None},
        {'customer_id': 'C', 'moved': False, 'table': 't', 'categories': None,
         'delivered_as': None, 'refused': 'no_consent', 'recipient': None,
         'recipient_contact': None},
        {'customer_id': 'C', 'moved': False, 'table': 'u', 'categories': None,
         'delivered_as': None, 'refused': 'no_consent', 'recipient': None,
         'recipient_contact': None}]
    assert counts == {'moved': 1, 'not_moved': 1, 'erased_not_listed': 1,
                      'not_moved_by_reason': {'no_consent': 1}, 'rows': 4}
