"""novation classify: proposals per column from values and names, and a draft the loader
refuses until a person confirms it."""

import json
import os

import pytest

from pipelines.classify import classify_export, draft_schema, name_category, propose_column
from pipelines.cli import main
from schemas import parse_schema
from transforms.common.errors import SchemaError


@pytest.mark.parametrize('column, expected', [
    ('手机号', 'cn_mobile'), ('联系电话', 'cn_mobile'), ('mobile', 'cn_mobile'),
    ('证件号码', 'cn_resident_id'), ('身份证号', 'cn_resident_id'),
    ('id_card_no', 'cn_resident_id'),
    ('客户编号', 'customer_id'), ('cust_no', 'customer_id'), ('姓名', 'person_name'),
    ('guarantor_name', 'person_name'), ('备注', 'free_text'), ('call_notes', 'free_text'),
    ('银行卡号', 'bank_card'), ('开户行', 'bank_name'), ('登录密码', 'auth_credential'),
    ('车牌号', 'cn_vehicle_plate'), ('统一社会信用代码', 'cn_uscc'), ('repayment_id', None),
    ('purpose', None),
])
def test_names_in_english_and_chinese(column, expected):
    assert name_category(column) == expected


@pytest.mark.parametrize('column, values, expected', [
    # the values decide over the name
    ('col7', ['13812345678', '13912345678', None], {
        'category': 'cn_mobile', 'classification': 'personal', 'type': 'string',
        'nullable': True}),
    ('remark', ['11010519491231002X', '11010519491231002X'], {
        'category': 'cn_resident_id', 'classification': 'sensitive'}),
    ('备注', ['客户要求下午致电 13812345678', '老客户，按时还款'], {
        'category': 'free_text', 'classification': 'personal'}),
    ('金额', ['12.50', '8', '1000.25'], {
        'category': 'amount', 'classification': 'internal',
        'type': {'type': 'bytes', 'logicalType': 'decimal', 'precision': 8, 'scale': 2}}),
    ('signed_at', ['2024-01-02 10:00:00', '2024-01-03T11:00:00Z'], {
        'category': 'timestamp', 'type': {'type': 'long', 'logicalType': 'timestamp-micros'}}),
    ('x', ['a', 'b'], {'category': None, 'classification': 'personal', 'nullable': False}),
    ('flag', ['true', 'false'], {'type': 'boolean'}),
    ('qty', ['1', '20'], {'type': 'long'}),
])
def test_proposals(column, values, expected):
    proposal = propose_column(column, values)
    assert {k: proposal[k] for k in expected} == expected
    assert proposal['evidence']
    for v in values:
        assert not v or len(v) < 4 or not any(v in e for e in proposal['evidence'])  # no values


def test_a_draft_is_refused_until_confirmed_and_chinese_names_become_aliases():
    proposals = [propose_column('客户编号', ['C1', 'C2']),
                 propose_column('手机号', ['13812345678', '13912345678'])]
    draft = draft_schema('t', proposals, 't.csv')
    assert [f['name'] for f in draft['fields']] == ['customer_id', 'mobile']
    assert draft['fields'][1]['aliases'] == ['手机号']
    assert draft['subject_key'] == 'customer_id'
    with pytest.raises(SchemaError, match='is a draft'):
        parse_schema(json.dumps(draft), 'draft.avsc')
    draft.pop('draft')
    schema = parse_schema(json.dumps(draft), 'draft.avsc')
    assert schema.field('mobile').category == 'cn_mobile'


@pytest.mark.slow
def test_classify_drafts_the_demo_exports_close_to_their_real_schemas(demo_copy, capsys):
    workdir, _, _ = demo_copy
    out = os.path.join(workdir, 'draft.avsc')
    assert main(['classify', os.path.join(workdir, 'exports', 'customers.csv'),
                 '--encoding', 'gbk', '--out', out]) == 0
    printed = capsys.readouterr().out
    draft = json.load(open(out, encoding='utf-8'))
    real = json.load(open(os.path.join(workdir, 'schemas', 'customers.avsc'), encoding='utf-8'))
    real_categories = {f['name']: f.get('category') for f in real['fields']}
    proposed = {f['name']: f.get('category') for f in draft['fields']}
    for name in ('national_id', 'mobile', 'email', 'bank_card', 'customer_id', 'name',
                 'address', 'remarks', 'login_password_hash'):
        assert proposed[name] == real_categories[name], name
    agree = sum(proposed[n] == c for n, c in real_categories.items() if n in proposed)
    assert agree >= 17, (agree, len(real_categories))
    # nothing from the export is echoed: the first customer's mobile number, say
    first = open(os.path.join(workdir, 'exports', 'customers.csv'), encoding='gbk').readlines()[1]
    for value in first.strip().split(',')[1:6]:
        if len(value) > 3:
            assert value not in printed and value not in json.dumps(draft, ensure_ascii=False)
    # the JSON Lines export with Chinese keys, and Avro with its own types
    _, proposals = classify_export(os.path.join(workdir, 'exports', 'repayments.jsonl'))
    by_column = {p['column']: p for p in proposals}
    assert by_column['客户编号']['category'] == 'customer_id'
    assert by_column['payer_account']['category'] == 'bank_card'
    draft, proposals = classify_export(os.path.join(workdir, 'exports',
                                                    'collection_calls.avro'))
    assert {p['column']: p['category'] for p in proposals}['tel'] == 'cn_mobile'


def test_unreadable_exports_fail_in_one_line(tmp_path, capsys):
    bad = tmp_path / 'x.parquet'
    bad.write_bytes(b'not parquet')
    assert main(['classify', str(bad), '--out', str(tmp_path / 'd.avsc')]) == 2
    assert 'cannot be read as parquet' in capsys.readouterr().err
    assert main(['classify', str(tmp_path / 'x.txt'), '--out', str(tmp_path / 'd.avsc')]) == 2


def test_a_change_feed_drafts_the_column_the_stream_holds_back(tmp_path, capsys):
    """A column the seller added mid-stream, seen in the tool's own lines (Canal here), is
    drafted with the rest of its table's columns; other tables and lines are left out."""
    from tests.cdc_forms import canal, maxwell
    rows = [{'id': str(n), 'customer_id': f'C{n:08d}', 'contact_mobile': f'1391234{n:04d}'}
            for n in range(1, 6)]
    lines = [canal('UPDATE', rows, table='t_customer'), None, {'ts_ms': 1},
             maxwell('insert', {'id': 9, 'amount': 3}, ts=1767225600, table='t_repayment')]
    feed = tmp_path / 'changes.jsonl'
    feed.write_text(''.join(json.dumps(x) + '\n' for x in lines), encoding='utf-8')
    assert main(['classify', str(feed), '--format', 'cdc', '--table', 'loan_db.t_customer',
                 '--out', str(tmp_path / 'draft.avsc')]) == 0
    out = capsys.readouterr().out
    assert '1391234' not in out  # evidence as counts, never values
    draft = json.load(open(tmp_path / 'draft.avsc'))
    fields = {f['name']: f for f in draft['fields']}
    assert draft['name'] == 't_customer' and set(fields) == {'id', 'customer_id',
                                                             'contact_mobile'}
    assert fields['contact_mobile']['category'] == 'cn_mobile'
    assert main(['classify', str(feed), '--format', 'cdc', '--out',
                 str(tmp_path / 'x.avsc')]) == 2  # which table: --table is needed
