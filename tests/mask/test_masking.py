import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from schemas import FieldSpec
from transforms.keys.crypto import keyed_ops
from transforms.keys.keyring import load_keyring
from transforms.common.errors import ConfigError
from transforms.mask.methods import MaskContext, make_operator, map_unique, mask_text, year_or_month


def spec(kind='string', classification='personal', category=None, **extra):
    return FieldSpec('f', kind, True, classification, category=category, **extra)


@pytest.mark.parametrize('value, first, last, expected', [
    ('张三丰', 1, 0, '张**'),
    ('张三', 1, 0, '张*'),
    ('张', 1, 0, '*'),                   # too short to hide anything: masked whole
    ('13812345678', 3, 4, '138****5678'),
    ('1381234', 3, 4, '*******'),        # length <= first + last: masked whole
    ('京A12345', 2, 0, '京A*****'),
    ('', 1, 0, ''),
    (None, 1, 1, None),
])
def test_mask_text(value, first, last, expected):
    assert mask_text(pa.array([value], pa.string()), first, last).to_pylist() == [expected]


@pytest.fixture(scope='module')
def ops(tmp_path_factory):
    from transforms.keys.admin import init_keyring
    path = str(tmp_path_factory.mktemp('k') / 'ring')
    init_keyring(path)
    return keyed_ops(load_keyring(path))


def apply(method, values, field, ops, subjects=None, **params):
    op = make_operator(method, field, 'test', params)
    arr = pa.array(values, type=field.arrow_type)
    subj = pa.array(subjects or ['s'] * len(values))
    return op.apply(arr, MaskContext(ops, subj)).to_pylist()


def test_hash_is_deterministic_domain_separated_and_keeps_nulls(ops):
    f = spec(category='customer_id')
    a = apply('hash', ['C1', 'C2', 'C1', None], f, ops)
    assert a[0] == a[2] and a[0] != a[1] and a[3] is None
    assert len(a[0]) == 32 and all(c in '0123456789abcdef' for c in a[0])
    other = apply('hash', ['C1'], f, ops, domain='email')
    assert other[0] != a[0]


def test_hash_joins_across_tables_by_category(ops):
    customers = make_operator('hash', FieldSpec('customer_id', 'string', False, 'personal',
                                                category='customer_id'), 't')
    contracts = make_operator('hash', FieldSpec('cust', 'string', False, 'personal',
                                                category='customer_id'), 't')
    assert customers.domain == contracts.domain == 'customer_id'


def test_tokenize_round_trips_for_the_key_holder_only(ops):
    f = spec('string', 'sensitive', 'cn_resident_id')
    token = apply('tokenize', ['11010519491231002X'], f, ops)[0]
    assert '11010519491231002X' not in token
    assert ops.detokenize('cn_resident_id', token) == b'11010519491231002X'
    with pytest.raises(Exception):
        ops.detokenize('bank_card', token)  # the domain is bound as associated data


@pytest.mark.parametrize('kind, params, value, expected', [
    ('date', {'to': 'year'}, datetime.date(1987, 5, 6), '1987'),
    ('date', {'to': 'month'}, datetime.date(1987, 5, 6), '1987-05'),
    ('int', {'bucket': 50}, 737, '[700,750)'),
    ('int', {'bucket': 50}, -1, '[-50,0)'),
    ('decimal', {'bucket': 5000}, __import__('decimal').Decimal('9999.99'), '[5000,10000)'),
    ('string', {'prefix': 3}, '北京市朝阳区', '北京市'),
])
def test_generalize(ops, kind, params, value, expected):
    extra = {'precision': 12, 'scale': 2} if kind == 'decimal' else {}
    assert apply('generalize', [value], spec(kind, **extra), ops, **params) == [expected]



@pytest.mark.parametrize('values, type_', [
    ([datetime.date(1987, 5, 6), None, datetime.date(5, 3, 1), datetime.date(9999, 12, 31)],
     pa.date32()),
    ([datetime.datetime(2024, 12, 31, 23, 30), None, datetime.datetime(1, 1, 1)],
     pa.timestamp('us')),
    # 2024-12-31 23:30 UTC is already January 2025 in Shanghai: the zone's own calendar
    ([datetime.datetime(2024, 12, 31, 23, 30), datetime.datetime(2024, 6, 30, 16, 0)],
     pa.timestamp('us', tz='Asia/Shanghai')),
])
@pytest.mark.parametrize('to, form', [('year', '%Y'), ('month', '%Y-%m')])
def test_year_or_month_prints_what_strftime_prints(values, type_, to, form):
    array = pa.array(values, type_)
    assert year_or_month(array, to).to_pylist() == pc.strftime(array, format=form).to_pylist()

def test_date_shift_is_constant_per_customer_and_never_zero(ops):
    f = spec('date')
    base = datetime.date(2020, 1, 1)
    subjects = [f'C{i}' for i in range(200)]
    shifted = apply('date_shift', [base] * 200, f, ops, subjects=subjects, max_days=30)
    again = apply('date_shift', [base + datetime.timedelta(days=10)] * 200, f, ops,
                  subjects=subjects, max_days=30)
    deltas = [(s - base).days for s in shifted]
    assert all(1 <= abs(d) <= 30 for d in deltas)
    assert [(a - s).days for a, s in zip(again, shifted)] == [10] * 200
    assert len(set(deltas)) > 20


@pytest.mark.parametrize('method, params, value, expected', [
    ('redact', {}, 'anything', None),
    ('redact', {'value': '[redacted]'}, 'anything', '[redacted]'),
    ('keep', {}, 'x', 'x'),
])
def test_simple_methods(ops, method, params, value, expected):
    assert apply(method, [value], spec(), ops, **params) == [expected]


@pytest.mark.parametrize('method, field, params, message', [
    ('scramble', spec(), {}, "unknown masking method 'scramble'; allowed: keep, drop"),
    ('keep', spec(classification='sensitive'), {}, "method 'keep' is not allowed for 'f', a "
                                                   "sensitive field"),
    ('hash', spec(classification='restricted'), {}, "allowed: drop"),
    ('mask', spec('int'), {}, "method 'mask' does not apply to field 'f' of type int"),
    ('mask', spec(), {'keep_first': -1}, 'keep_first must be an integer between 0 and 1000000'),
    ('mask', spec(), {'keep': 1}, "unknown parameter(s) keep for method 'mask'; allowed: "
                                  "keep_first, keep_last, char"),
    ('generalize', spec('date'), {'to': 'week'}, 'needs to: year|month'),
    ('generalize', spec('int'), {}, 'needs bucket: a positive width'),
    ('date_shift', spec('date'), {'max_days': 0}, 'max_days must be an integer between 1'),
])
def test_bad_policies_fail_with_a_clear_message(method, field, params, message):
    with pytest.raises(ConfigError) as e:
        make_operator(method, field, 'demo.yaml: masking.fields.t.f', params)
    assert message in str(e.value)
    assert str(e.value).startswith('demo.yaml: masking.fields.t.f')


def test_map_unique_computes_each_distinct_value_once():
    calls = []

    def compute(values):
        calls.append(values.to_pylist())
        return pc.utf8_upper(values)

    out = map_unique(pa.array(['a', 'b', 'a', None, 'b']), compute)
    assert out.to_pylist() == ['A', 'B', 'A', None, 'B']
    assert calls == [['a', 'b']]


@pytest.mark.parametrize('value, params, expected', [
    ('客户称下周还款，联系 13812345678', {}, '客户称下周还款，联系 ***********'),
    ('电话１３８１２３４５６７８，邮箱a@example.com', {},
     '电话***********，邮箱*************'),
    ('老客户，按时还款', {}, '老客户，按时还款'),
    ('联系 13812345678 或 zhang@example.com', {'find': ['email']},
     '联系 13812345678 或 *****************'),
    ('身份证11010519491231002X，卡6222021234567890128', {},
     '身份证******************，卡*******************'),
    (None, {}, None),
])
def test_scrub_masks_identifiers_inside_text_and_keeps_the_rest(ops, value, params, expected):
    assert apply('scrub', [value], spec(category='free_text'), ops, **params) == [expected]


def test_scrub_pseudonyms_are_those_of_a_hashed_column_of_that_kind(ops):
    note = apply('scrub', ['请回电 +86 138-1234-5678，或 13912345678'],
                 spec(category='free_text'), ops, replace='pseudonym')[0]
    mobile = apply('hash', ['13812345678', '13912345678'], spec(category='cn_mobile'), ops)
    assert note == f'请回电 [cn_mobile:{mobile[0]}]，或 [cn_mobile:{mobile[1]}]'


@pytest.mark.parametrize('params, message', [
    ({'replace': 'label'}, 'replace must be mask or pseudonym'),
    ({'find': ['phone']}, 'find must be a list of identifier kinds'),
    ({'find': 'cn_mobile'}, 'find must be a list of identifier kinds'),
])
def test_scrub_policies_are_checked(params, message):
    with pytest.raises(ConfigError, match=message):
        make_operator('scrub', spec(), 'test', params)
