"""The plan: what a run will do, from the config alone; its hash, its diff, its approval."""

import copy
import json
import os

import pytest
import yaml

from config import parse_config
from config.plan import build_plan, diff_plans, plan_sha256, render_plan
from pipelines.cli import main

from tests.conftest import ROOT


@pytest.fixture(scope='module')
def demo_doc():
    with open(os.path.join(ROOT, 'config', 'demo.yaml'), encoding='utf-8') as f:
        return yaml.safe_load(f)


def plan_of(doc, base=ROOT):
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    return build_plan(parse_config(text, 'demo.yaml', base))


def field(plan, table, name):
    t = next(t for t in plan['tables'] if t['name'] == table)
    return next(f for f in t['fields'] if f['name'] == name)


@pytest.mark.parametrize('table, name, expected', [
    ('customers', 'login_password_hash',
     {'method': 'drop', 'delivered_type': None, 'key_role': None, 'in_clear': False}),
    ('customers', 'national_id',
     {'method': 'tokenize', 'key_role': 'data.sensitive', 'in_clear': False,
      'withheld_without_separate_consent': True, 'domain': 'cn_resident_id'}),
    ('customers', 'monthly_income',
     {'method': 'encrypt', 'key_role': 'column.customers.monthly_income', 'in_clear': True,
      'params': {'key': 'customers.monthly_income'}}),
    ('customers', 'mobile',
     {'method': 'mask', 'params': {'keep_first': 3, 'keep_last': 4, 'char': '*'},
      'delivered_type': 'string', 'key_role': 'data.personal'}),
    ('customers', 'customer_id', {'method': 'hash', 'subject_key': True}),
    ('contracts', 'product', {'method': 'keep', 'key_role': 'data.footer', 'in_clear': True}),
    ('customers', 'birth_date', {'method': 'generalize', 'params': {
        'to': 'year', 'bucket': None, 'prefix': None}, 'delivered_type': 'string'}),
])
def test_the_plan_says_what_happens_to_each_field(demo_doc, table, name, expected):
    entry = field(plan_of(demo_doc), table, name)
    assert {k: entry.get(k) for k in expected} == expected


def test_the_plan_names_the_consent_rules_and_reasons(demo_doc):
    plan = plan_of(demo_doc)
    rules = ' '.join(plan['consent_rules'])
    assert 'Art. 39' in rules and 'Art. 29' in rules and 'credit_management' in rules
    customers = next(t for t in plan['tables'] if t['name'] == 'customers')
    assert 'no_cross_border_consent' in customers['reasons']
    assert 'duplicate_key' in customers['reasons']
    assert set(plan['reason_codes']) >= {'malformed', 'no_consent', 'erasure_requested'}
    domestic = copy.deepcopy(demo_doc)
    domestic['transfer']['destination_region'] = 'CN'
    assert 'no_cross_border_consent' not in plan_of(domestic)['reason_codes']


def test_the_hash_ignores_where_files_are_and_follows_what_is_done(demo_doc, tmp_path):
    base = plan_sha256(plan_of(demo_doc))
    moved = copy.deepcopy(demo_doc)
    moved['tables']['customers']['path'] = 'exports/2026-12/customers.csv'
    moved['output']['path'] = 'elsewhere'
    assert plan_sha256(plan_of(moved)) == base
    for dotted, value in [('masking.fields.customers.gender', 'hash'),
                          ('transfer.destination_region', 'SG'),
                          ('deadletter.max_ratio', 0.01),
                          ('masking.fields.customers.mobile', {'method': 'mask',
                                                               'keep_first': 3})]:
        doc = copy.deepcopy(demo_doc)
        keys = dotted.split('.', 2) if dotted.startswith('masking') else dotted.split('.')
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
        assert plan_sha256(plan_of(doc)) != base, dotted


def test_a_diff_names_the_field_that_changed(demo_doc):
    a = plan_of(demo_doc)
    doc = copy.deepcopy(demo_doc)
    doc['masking']['fields']['customers.gender'] = 'hash'
    text = diff_plans(a, plan_of(doc))
    assert '-tables[customers].fields[gender].method: "keep"' in text
    assert '+tables[customers].fields[gender].method: "hash"' in text
    assert 'mobile' not in text
    assert diff_plans(a, a) == ''


@pytest.mark.parametrize('fmt', ['text', 'md'])
def test_rendered_plans_show_every_field_and_the_hash(demo_doc, fmt):
    plan = plan_of(demo_doc)
    text = render_plan(plan, fmt)
    assert plan_sha256(plan) in text
    for table in plan['tables']:
        for f in table['fields']:
            assert f['name'] in text
    assert 'IN CLEAR' in text and 'withheld without separate consent' in text


def test_the_command_saves_compares_and_refuses_an_edited_plan(demo_copy, capsys):
    workdir, config, _ = demo_copy
    saved = os.path.join(workdir, 'plan.json')
    assert main(['plan', '--config', config, '--format', 'json', '--out', saved]) == 0
    assert main(['plan', '--diff', saved, config]) == 0
    assert 'the plans are the same' in capsys.readouterr().out
    changed = os.path.join(workdir, 'changed.yaml')
    text = open(config, encoding='utf-8').read().replace('customers.gender: keep',
                                                         'customers.gender: hash')
    open(changed, 'w', encoding='utf-8').write(text)
    assert main(['plan', '--diff', saved, changed]) == 1
    assert 'fields[gender].method' in capsys.readouterr().out
    doc = json.load(open(saved, encoding='utf-8'))
    doc['tables'][0]['fields'][2]['method'] = 'hash'
    json.dump(doc, open(saved, 'w', encoding='utf-8'))
    assert main(['plan', '--diff', saved, config]) == 2
    assert 'edited after it was written' in capsys.readouterr().err


def test_a_run_records_its_plan_and_refuses_another(demo_copy, capsys):
    workdir, config, _ = demo_copy
    approved = plan_sha256(build_plan(__import__('config').load_config(config)))
    assert main(['run', '--config', config, '--plan-hash', '0' * 64]) == 2
    err = capsys.readouterr().err
    assert 'no longer gives the approved plan' in err and err.count('\n') == 1
    assert main(['run', '--config', config, '--plan-hash', approved[:16]]) == 2
    assert 'is 64 hexadecimal digits, got 16' in capsys.readouterr().err
    out = os.path.join(workdir, 'out')
    assert not os.path.exists(out) or not os.listdir(out)  # refused before anything ran
    assert main(['run', '--config', config, '--plan-hash', approved.upper()]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    manifest = json.load(open(os.path.join(run_dir, 'manifest.json'), encoding='utf-8'))
    assert manifest['plan_sha256'] == approved and manifest['plan_checked']
    report = json.load(open(os.path.join(run_dir, 'report.json'), encoding='utf-8'))
    assert 'checked against the approved plan' in report['plan']


@pytest.mark.parametrize('table, name, readers', [
    ('customers', 'monthly_income', ['Harbour Credit credit risk']),  # its own column key
    ('customers', 'mobile', ['Harbour Credit data team']),
    ('contracts', 'product', ['Harbour Credit data team', 'Harbour Credit credit risk']),
    ('customers', 'login_password_hash', []),  # dropped: no one
])
def test_the_plan_names_who_can_read_each_field(demo_doc, table, name, readers):
    assert field(plan_of(demo_doc), table, name)['readable_by'] == readers


def test_a_parquet_column_needs_the_footer_key_too(demo_doc):
    doc = copy.deepcopy(demo_doc)
    doc['key_holders']['Harbour Credit credit risk'].remove('data.footer')
    assert field(plan_of(doc), 'customers', 'monthly_income')['readable_by'] == []


def test_without_key_holders_the_plan_names_the_keys(demo_doc):
    doc = copy.deepcopy(demo_doc)
    del doc['key_holders']
    plan = plan_of(doc)
    assert field(plan, 'customers', 'mobile')['readable_by'] == [
        'holders of key data.footer and data.personal']
    assert all(k['holders'] is None for k in plan['keys'])
    assert 'not named (no key_holders in the config)' in render_plan(plan)


def test_the_plan_says_who_holds_each_key(demo_doc):
    plan = plan_of(demo_doc)
    keys = {k['role']: k for k in plan['keys']}
    assert set(keys) == {'data.footer', 'data.internal', 'data.personal', 'data.sensitive',
                         'column.customers.monthly_income', 'deadletter', 'pseudonym', 'token',
                         'notice', 'manifest'}
    assert keys['notice']['holders'] == ['seller compliance office']
    assert 'Harbour Credit data team' not in keys['token']['holders']
    assert 'customers.monthly_income' in keys['column.customers.monthly_income']['allows']
    text = render_plan(plan)
    assert 'Who can read what' in text and 'seller compliance office' in text
    doc = copy.deepcopy(demo_doc)
    doc['key_holders'] = {'Harbour Credit data team': ['data.footer']}
    unheld = {k['role']: k['holders'] for k in plan_of(doc)['keys']}
    assert unheld['notice'] == [] and 'NO ONE NAMED' in render_plan(plan_of(doc))
    assert plan_sha256(plan_of(doc)) != plan_sha256(plan)  # who holds a key is approved too


def test_a_plan_of_the_earlier_format_can_still_be_compared(demo_copy, capsys):
    workdir, config, _ = demo_copy
    saved = os.path.join(workdir, 'plan.json')
    assert main(['plan', '--config', config, '--format', 'json', '--out', saved]) == 0
    doc = json.load(open(saved, encoding='utf-8'))
    doc.pop('sha256')
    doc.pop('keys')
    doc['format'] = 'novation.plan/1'
    for table in doc['tables']:
        for f in table['fields']:
            f['readable_by'] = (f'holders of key {f["key_role"]}' if f['key_role']
                                else 'no one (not delivered)')
    json.dump(doc, open(saved, 'w', encoding='utf-8'))
    capsys.readouterr()
    assert main(['plan', '--diff', saved, config]) == 1
    out = capsys.readouterr().out
    assert '-format: "novation.plan/1"' in out and '+format: "novation.plan/2"' in out
    assert 'readable_by' in out and 'fields[mobile].method' not in out


def test_the_plan_hash_ignores_the_yaml_order_and_region_case(demo_doc):
    doc = copy.deepcopy(demo_doc)
    doc['tables'] = dict(reversed(list(doc['tables'].items())))
    doc['transfer']['purposes'] = list(reversed(doc['transfer']['purposes']))
    doc['transfer']['source_region'] = doc['transfer']['source_region'].lower()
    doc['transfer']['destination_region'] = doc['transfer']['destination_region'].lower()
    doc = dict(reversed(list(doc.items())))
    assert plan_sha256(plan_of(doc)) == plan_sha256(plan_of(demo_doc))


def test_a_stream_section_leaves_the_batch_plan_as_it_was(demo_doc):
    with_stream = plan_of(demo_doc)
    assert with_stream['stream']['reasons']['customers'] == ['implausible_time']
    batch = copy.deepcopy(demo_doc)
    del batch['stream']
    assert plan_of(batch)['stream'] is None
    assert plan_sha256(plan_of(batch)) == plan_sha256(with_stream)
    assert 'Live stream' in render_plan(with_stream) and 'Live stream' not in render_plan(
        plan_of(batch))


def test_the_same_region_in_another_case_is_no_cross_border_transfer(demo_doc):
    doc = copy.deepcopy(demo_doc)
    doc['transfer']['source_region'], doc['transfer']['destination_region'] = 'CN', 'cn'
    assert plan_of(doc)['transfer']['cross_border'] is False


def test_plan_finds_a_consent_registry_without_a_column_it_needs(demo_copy, capsys):
    workdir, config, _ = demo_copy
    path = os.path.join(workdir, 'exports', 'consent_registry.csv')
    lines = open(path, encoding='utf-8').read().splitlines()
    header = lines[0].split(',')
    at = header.index('withdrawn_at')
    rows = [','.join(c for i, c in enumerate(line.split(',')) if i != at) for line in lines]
    open(path, 'w', encoding='utf-8').write('\n'.join(rows) + '\n')
    assert main(['plan', '--config', config]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if 'DEMO/TEST' not in line]
    assert len(err) == 1 and 'lacks the column(s) withdrawn_at' in err[0]
