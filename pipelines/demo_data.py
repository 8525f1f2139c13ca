"""Deterministic demo exports of a leasing / consumer-finance seller.

``generate(workdir, customers=N, seed=S)`` writes, under ``workdir/exports``:

- ``customers.csv``: GBK-encoded CSV, 21 fields (valid resident IDs, Luhn-valid cards, ...);
- ``contracts.parquet``: about 1.5 contracts per customer, decimals as decimal128; two columns are
  exported as text by the seller's legacy system (start_date, monthly_payment), as they often are;
- ``consent_registry.csv`` and ``erasure_requests.csv`` (UTF-8);

with planted cases: customers without consent, with withdrawn consent, with erasure requests,
without separate consent for sensitive data or for cross-border transfer, and malformed rows in
both tables. The same seed gives the same bytes; the returned ``Planted`` says where the planted
cases are so tests can check each one lands under its reason. Values come from small Faker
zh_CN pools combined with a seeded NumPy generator, so millions of rows take seconds, not hours.
"""

import csv
import dataclasses
import datetime
import io
import json
import os
from typing import Dict, List, Set

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.detect.check_digits import luhn_check_digit, resident_id_check_digit

__all__ = ['Planted', 'generate']

CUSTOMER_COLUMNS = (
    'customer_id', 'name', 'gender', 'national_id', 'mobile', 'email', 'birth_date', 'address',
    'city', 'occupation', 'employer', 'bank_card', 'bank_name', 'monthly_income', 'credit_score',
    'marketing_opt_in', 'login_password_hash', 'kyc_verified_on', 'created_at', 'updated_at',
    'remarks')

_AREAS = ('110105', '110108', '310104', '310115', '440106', '440305', '330106', '320102',
          '510107', '420106', '610113', '500103', '120101', '370202', '350203', '430104')
_MOBILE_PREFIXES = ('138', '139', '136', '158', '186', '187', '135', '150', '177', '199')
_BANKS = (('622202', '中国工商银行'), ('622848', '中国农业银行'), ('621700', '中国建设银行'),
          ('621661', '中国银行'), ('622588', '招商银行'), ('622262', '交通银行'))
_PROVINCES = '京沪粤浙苏川鄂陕渝津鲁闽湘'
_PLATE_LETTERS = 'ABCDEFGHJKLMNPQRSTUVWXYZ'
_PRODUCTS = ('auto_lease', 'equipment_lease', 'consumer_loan')
_STATUSES = ('active', 'overdue', 'closed', 'written_off')
_PURPOSE_CONSENT = 'credit_management'
_PURPOSE_CONTRACT = 'contract_servicing'


@dataclasses.dataclass
class Planted:
    """Where the planted cases are (seller-side truth, for tests; never written to outputs)."""
    customers: int
    contracts: int
    no_consent: Set[str] = dataclasses.field(default_factory=set)
    consent_withdrawn: Set[str] = dataclasses.field(default_factory=set)
    erasure_requested: Set[str] = dataclasses.field(default_factory=set)
    no_sensitive_consent: Set[str] = dataclasses.field(default_factory=set)
    no_cross_border_consent: Set[str] = dataclasses.field(default_factory=set)
    # table -> {row number (1-based, header not counted): reason}
    bad_rows: Dict[str, Dict[int, str]] = dataclasses.field(default_factory=dict)
    # values that must never appear in any output byte
    secrets: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    contract_customers: List[str] = dataclasses.field(default_factory=list)


def generate(workdir: str, *, customers: int = 10_000, seed: int = 20261123,
             customers_only: bool = False, on_step=lambda step: None) -> Planted:
    """Write the demo exports under ``workdir/exports``; returns what was planted where.

    ``customers_only`` writes the customers table and the consent files only (benchmarks).
    ``on_step`` is called with what is being generated next, in words (for progress).
    """
    exports = os.path.join(workdir, 'exports')
    os.makedirs(exports, exist_ok=True)
    rng = np.random.default_rng(seed)
    on_step('name and address pools')
    pools = _pools(seed)
    ids = [f'C{i:08d}' for i in range(1, customers + 1)]
    planted = Planted(customers=customers, contracts=0)
    _plant_consent_cases(rng, ids, planted)
    on_step(f'{customers:,} customers (GBK CSV)')
    rows = _customer_rows(rng, pools, ids, planted)
    _plant_duplicate_customers(rng, rows, planted)
    _write_gbk_csv(os.path.join(exports, 'customers.csv'), CUSTOMER_COLUMNS, rows)
    if not customers_only:
        on_step('contracts (Parquet)')
        contracts = _write_contracts(os.path.join(exports, 'contracts.parquet'), rng, pools,
                                     ids, planted)
        on_step('repayments (JSON Lines)')
        _write_repayments(os.path.join(exports, 'repayments.jsonl'), rng, contracts, planted)
        on_step('collection calls (Avro)')
        _write_calls(os.path.join(exports, 'collection_calls.avro'), rng, contracts, planted)
    on_step('the consent registry and the erasure list')
    _write_consent(exports, rng, ids, planted)
    return planted


def _pools(seed):
    from faker import Faker
    fake = Faker('zh_CN')
    fake.seed_instance(seed)

    def gbk_safe(values):
        out = []
        for v in values:
            try:
                v.encode('gbk')
                out.append(v)
            except UnicodeEncodeError:
                pass
        return out

    return {
        'surname': gbk_safe(fake.last_name() for _ in range(300)),
        'given': gbk_safe(fake.first_name_male() for _ in range(300)) +
                 gbk_safe(fake.first_name_female() for _ in range(300)),
        'address': gbk_safe(fake.street_address() for _ in range(3000)),
        'city': gbk_safe(fake.city() for _ in range(300)),
        'job': gbk_safe(fake.job() for _ in range(300)),
        'company': gbk_safe(fake.company() for _ in range(1000)),
        'user': [fake.user_name() for _ in range(2000)],
        'domain': ('qq.com', '163.com', '126.com', 'sina.com', 'gmail.com', 'hotmail.com'),
        'province': gbk_safe(fake.province() for _ in range(100)),
    }


def _pick(rng, pool, n):
    return [pool[i] for i in rng.integers(0, len(pool), n)]


def _plant_consent_cases(rng, ids, planted):
    order = rng.permutation(len(ids))
    n = len(ids)

    def take(share, start):
        count = max(1, int(n * share))
        return {ids[i] for i in order[start:start + count]}, start + count

    start = 0
    planted.erasure_requested, start = take(0.005, start)
    planted.consent_withdrawn, start = take(0.015, start)
    planted.no_consent, start = take(0.02, start)
    planted.no_cross_border_consent, start = take(0.01, start)
    planted.no_sensitive_consent, start = take(0.05, start)


def _customer_rows(rng, pools, ids, planted):
    n = len(ids)
    birth = _dates(rng, n, datetime.date(1955, 1, 1), datetime.date(2004, 12, 31))
    gender = rng.integers(0, 2, n)
    area = _pick(rng, _AREAS, n)
    seq = rng.integers(0, 100, n)
    names = [s + g for s, g in zip(_pick(rng, pools['surname'], n), _pick(rng, pools['given'], n))]
    mobiles = [p + f'{x:08d}' for p, x in zip(_pick(rng, _MOBILE_PREFIXES, n),
                                              rng.integers(0, 10**8, n))]
    banks = rng.integers(0, len(_BANKS), n)
    card_body = rng.integers(0, 10**9, n)
    income = np.round(np.exp(rng.normal(9.1, 0.6, n)), 2)
    score = rng.integers(350, 900, n)
    created = _datetimes(rng, n, datetime.datetime(2015, 1, 1), datetime.datetime(2024, 6, 30))
    kyc = _dates(rng, n, datetime.date(2016, 1, 1), datetime.date(2024, 6, 30))
    addresses = _pick(rng, pools['address'], n)
    cities = _pick(rng, pools['city'], n)
    provinces = _pick(rng, pools['province'], n)
    jobs = _pick(rng, pools['job'], n)
    companies = _pick(rng, pools['company'], n)
    users = _pick(rng, pools['user'], n)
    domains = _pick(rng, pools['domain'], n)
    opt_in = rng.random(n) < 0.4
    remark_kind = rng.integers(0, 4, n)
    pw = rng.integers(0, 2**62, n)
    rows = []
    secrets = {'national_id': [], 'mobile': [], 'name': [], 'bank_card': [], 'email': []}
    for i in range(n):
        bd = birth[i]
        first17 = f'{area[i]}{bd:%Y%m%d}{seq[i]:02d}{2 * (seq[i] % 5) + (1 - gender[i])}'
        national_id = first17 + resident_id_check_digit(first17)
        bin_, bank = _BANKS[banks[i]]
        payload = f'{bin_}{card_body[i]:09d}'
        card = payload + luhn_check_digit(payload)
        email = f'{users[i]}{i}@{domains[i]}'
        remark = ('', '老客户，按时还款', f'客户要求下午致电 {mobiles[i]}',
                  f'担保人同住，地址 {addresses[i]}')[remark_kind[i]]
        row = [ids[i], names[i], 'MF'[gender[i]], national_id, mobiles[i], email,
               f'{bd:%Y-%m-%d}', provinces[i] + cities[i] + addresses[i], cities[i], jobs[i],
               companies[i], card, bank, f'{income[i]:.2f}', str(score[i]),
               'Y' if opt_in[i] else 'N', f'$2b$12${int(pw[i]):016x}{int(pw[i]) * 7 % 10**12:012d}',
               f'{kyc[i]:%Y/%m/%d}', f'{created[i]:%Y-%m-%d %H:%M:%S}',
               f'{created[i] + datetime.timedelta(days=30):%Y-%m-%d %H:%M:%S}', remark]
        rows.append(row)
        secrets['national_id'].append(national_id)
        secrets['mobile'].append(mobiles[i])
        secrets['name'].append(names[i])
        secrets['bank_card'].append(card)
        secrets['email'].append(email)
    planted.secrets = secrets
    planted.bad_rows['customers'] = _plant_bad_customer_rows(rng, rows, planted)
    return rows


def _plant_bad_customer_rows(rng, rows, planted):
    """Break about 0.3% of rows: bad dates, non-numeric amounts, wrong column counts."""
    refused = (planted.erasure_requested | planted.consent_withdrawn | planted.no_consent |
               planted.no_cross_border_consent)
    candidates = [i for i in range(len(rows)) if rows[i][0] not in refused]
    count = max(5, len(rows) * 3 // 1000)
    chosen = sorted(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    bad = {}
    for k, i in enumerate(chosen):
        kind = k % 5
        row = rows[i]
        if kind == 0:
            row[6] = row[6][:5] + '02-30'  # birth_date: no such day
        elif kind == 1:
            row[13] = '五千元'  # monthly_income: not a number
        elif kind == 2:
            rows[i] = row[:-2]  # a truncated line: two columns short
        elif kind == 3:
            rows[i] = row + ['多余字段']  # a stray delimiter: one column too many
        else:
            row[18] = ''  # created_at is required
        bad[i + 1] = 'missing_required' if kind == 4 else 'malformed'
    return bad


def _plant_duplicate_customers(rng, rows, planted):
    """Re-export a few customers with a later updated_at: the older copy is the duplicate."""
    refused = _refused(planted)
    bad = planted.bad_rows['customers']
    candidates = [i for i, r in enumerate(rows) if r[0] not in refused and i + 1 not in bad]
    for i in sorted(rng.choice(candidates, size=max(2, len(rows) // 1000), replace=False)):
        copy = list(rows[i])
        copy[19] = '2024-09-01 12:00:00'  # updated_at: later than every original
        rows.append(copy)
        bad[i + 1] = 'duplicate_key'


def _write_gbk_csv(path, header, rows):
    with open(path, 'wb') as f:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator='\n')
        writer.writerow(header)
        for start in range(0, len(rows), 50_000):
            writer.writerows(rows[start:start + 50_000])
            f.write(buf.getvalue().encode('gbk'))
            buf.seek(0)
            buf.truncate()
        f.write(buf.getvalue().encode('gbk'))


def _write_contracts(path, rng, pools, ids, planted):
    per_customer = rng.choice([0, 1, 1, 2, 2, 3], size=len(ids))
    owners = np.repeat(np.arange(len(ids)), per_customer)
    n = len(owners)
    planted.contracts = n
    customer_ids = [ids[i] for i in owners]
    planted.contract_customers = customer_ids
    start = _dates(rng, n, datetime.date(2018, 1, 1), datetime.date(2024, 6, 30))
    term = rng.choice([12, 24, 36, 48, 60], size=n)
    principal_cents = rng.integers(2_000_000, 60_000_000, n)
    rate_bp = rng.integers(350, 1500, n)
    payment = principal_cents * (1 + rate_bp / 10_000 * term / 12) / term / 100
    status = rng.choice(len(_STATUSES), size=n, p=[0.6, 0.1, 0.25, 0.05])
    overdue = np.where(status == 1, rng.integers(1, 180, n), 0)
    plates = [f'{p}{l}{x:05d}' for p, l, x in zip(_pick(rng, _PROVINCES, n),
                                                  _pick(rng, _PLATE_LETTERS, n),
                                                  rng.integers(0, 100_000, n))]
    vins = [f'LSV{x:014d}' for x in rng.integers(0, 10**14, n)]
    accounts = [f'{b}{x:09d}' for b, x in zip(_pick(rng, [b for b, _ in _BANKS], n),
                                              rng.integers(0, 10**9, n))]
    accounts = [a + luhn_check_digit(a) for a in accounts]
    guarantors = [s + g for s, g in zip(_pick(rng, pools['surname'], n),
                                        _pick(rng, pools['given'], n))]
    g_mobiles = [p + f'{x:08d}' for p, x in zip(_pick(rng, _MOBILE_PREFIXES, n),
                                                rng.integers(0, 10**8, n))]
    signed = [datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc)
              - datetime.timedelta(days=3) for d in start]
    start_text = [f'{d:%Y-%m-%d}' for d in start]
    payment_text = [f'{p:.2f}' for p in payment]
    bad = {}
    if n:
        chosen = sorted(rng.choice(n, size=min(n, max(4, n * 2 // 1000)), replace=False))
        refused = (planted.erasure_requested | planted.consent_withdrawn | planted.no_consent |
                   planted.no_cross_border_consent)
        for k, i in enumerate(c for c in chosen if customer_ids[c] not in refused):
            if k % 2 == 0:
                start_text[i] = start_text[i][:5] + '13-01'  # no month 13
            else:
                payment_text[i] = 'N/A'  # not an amount
            bad[i + 1] = 'malformed'
    planted.bad_rows['contracts'] = bad
    planted.secrets['bank_card'].extend(accounts)
    planted.secrets['name'].extend(guarantors)
    planted.secrets['mobile'].extend(g_mobiles)
    table = pa.table({
        'contract_id': [f'L{d.year}{i:07d}' for i, d in enumerate(start, 1)],
        'customer_id': customer_ids,
        'product': pa.array([_PRODUCTS[i] for i in rng.integers(0, 3, n)]),
        'principal': pa.array([f'{c / 100:.2f}' for c in principal_cents]).cast(
            pa.decimal128(18, 2)),
        'annual_rate': pa.array([f'{r / 10_000:.4f}' for r in rate_bp]).cast(
            pa.decimal128(6, 4)),
        'term_months': pa.array(term, type=pa.int32()),
        'monthly_payment': pa.array(payment_text),
        'start_date': pa.array(start_text),
        'status': pa.array([_STATUSES[s] for s in status]),
        'overdue_days': pa.array(overdue, type=pa.int32()),
        'vehicle_plate': plates,
        'vehicle_vin': vins,
        'repayment_account': accounts,
        'guarantor_name': guarantors,
        'guarantor_mobile': g_mobiles,
        'signed_at': pa.array(signed, type=pa.timestamp('us', tz='UTC')),
    })
    pq.write_table(table, path, row_group_size=100_000)
    return {'contract_id': table.column('contract_id').to_pylist(), 'customer_id': customer_ids,
            'start': start, 'payment': payment, 'status': status, 'account': accounts,
            'mobile': g_mobiles}


def _refused(planted):
    return (planted.erasure_requested | planted.consent_withdrawn | planted.no_consent |
            planted.no_cross_border_consent)


def _write_repayments(path, rng, contracts, planted):
    """JSON Lines with the billing system's Chinese keys (mapped by schema aliases)."""
    n_contracts = len(contracts['contract_id'])
    chosen = np.flatnonzero(rng.random(n_contracts) < 0.6)
    channels = ('bank_debit', 'wechat_pay', 'alipay', 'counter')
    lines, owners = [], []
    for k, c in enumerate(chosen):
        due = contracts['start'][c] + datetime.timedelta(days=30)
        late = bool(contracts['status'][c] == 1)
        paid = None if late else f'{due - datetime.timedelta(days=2):%Y-%m-%d} 10:15:00'
        amount = f'{contracts["payment"][c]:.2f}'
        record = {'repayment_id': f'R{k + 1:09d}', 'contract_id': contracts['contract_id'][c],
                  '客户编号': contracts['customer_id'][c], 'due_date': f'{due:%Y-%m-%d}',
                  'paid_at': paid, '应还金额': float(amount),
                  '还款金额': None if late else float(amount),
                  'channel': channels[k % 4], 'payer_account': contracts['account'][c],
                  'late': late}
        lines.append(json.dumps(record, ensure_ascii=False))
        owners.append(contracts['customer_id'][c])
    bad = {}
    refused = _refused(planted)
    candidates = [i for i, o in enumerate(owners) if o not in refused]
    for k, i in enumerate(sorted(rng.choice(candidates, size=min(len(candidates),
                                                               max(4, len(lines) // 500)),
                                           replace=False))):
        kind = k % 4
        if kind == 0:
            lines[i] = lines[i][:len(lines[i]) // 2]  # cut off mid-record
        elif kind == 1:
            lines[i] = _set_json(lines[i], 'due_date', '2023-02-30')
        elif kind == 2:
            lines[i] = _set_json(lines[i], '应还金额', '一千二百元')
        else:
            lines[i] = _set_json(lines[i], 'repayment_id', None, drop=True)
        bad[i + 1] = 'missing_required' if kind == 3 else 'malformed'
    for i in sorted(rng.choice(candidates, size=2, replace=False)):
        if i + 1 not in bad:  # the same payment exported twice: both copies are refused
            lines.append(lines[i])
            bad[i + 1] = bad[len(lines)] = 'duplicate_key'
    planted.bad_rows['repayments'] = bad
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


def _set_json(line, key, value, drop=False):
    record = json.loads(line)
    if drop:
        del record[key]
    else:
        record[key] = value
    return json.dumps(record, ensure_ascii=False)


def _write_calls(path, rng, contracts, planted):
    """Avro from the call centre: legacy names (cust_no, tel), amounts and dates as text."""
    import fastavro
    overdue = [i for i, s in enumerate(contracts['status']) if s in (1, 3)]
    outcomes = ('no_answer', 'promised', 'refused', 'wrong_number', 'paid')
    records = []
    for k, c in enumerate(overdue * 2):
        outcome = outcomes[k % 5]
        when = datetime.datetime.combine(contracts['start'][c], datetime.time(9 + k % 8),
                                         tzinfo=datetime.timezone.utc) + \
            datetime.timedelta(days=60 + k % 30)
        records.append({
            'call_id': f'K{k + 1:08d}', 'cust_no': contracts['customer_id'][c],
            'called_at': when, 'agent_id': f'A{k % 40:03d}', 'tel': contracts['mobile'][c],
            'outcome': outcome,
            'promised_amount': f'{contracts["payment"][c]:.2f}' if outcome == 'promised'
            else None,
            'promised_date': f'{when + datetime.timedelta(days=7):%Y-%m-%d}'
            if outcome == 'promised' else None,
            'notes': f'客户称下周还款，联系 {contracts["mobile"][c]}' if k % 3 == 0 else None})
    bad = {}
    refused = _refused(planted)
    candidates = [i for i, r in enumerate(records) if r['cust_no'] not in refused]
    if candidates:
        for k, i in enumerate(sorted(rng.choice(candidates, size=min(len(candidates), 4),
                                                replace=False))):
            if k % 2 == 0:
                records[i]['promised_amount'] = '约五千'  # the legacy system kept free text
            else:
                records[i]['promised_date'] = '2024-04-31'
            bad[i + 1] = 'malformed'
    planted.bad_rows['collection_calls'] = bad
    schema = fastavro.parse_schema({
        'type': 'record', 'name': 'CallRecord', 'namespace': 'legacy.callcentre', 'fields': [
            {'name': 'call_id', 'type': 'string'},
            {'name': 'cust_no', 'type': 'string'},
            {'name': 'called_at', 'type': {'type': 'long', 'logicalType': 'timestamp-micros'}},
            {'name': 'agent_id', 'type': 'string'},
            {'name': 'tel', 'type': ['null', 'string']},
            {'name': 'outcome', 'type': 'string'},
            {'name': 'promised_amount', 'type': ['null', 'string']},
            {'name': 'promised_date', 'type': ['null', 'string']},
            {'name': 'notes', 'type': ['null', 'string']}]})
    with open(path, 'wb') as f:
        fastavro.writer(f, schema, records, codec='deflate')


def _write_consent(exports, rng, ids, planted):
    with open(os.path.join(exports, 'consent_registry.csv'), 'w', encoding='utf-8',
              newline='') as f:
        w = csv.writer(f, lineterminator='\n')
        w.writerow(['subject_id', 'purpose', 'granted', 'granted_at', 'withdrawn_at',
                    'sensitive_consent', 'cross_border_consent'])
        granted_at = _datetimes(rng, len(ids), datetime.datetime(2019, 1, 1),
                                datetime.datetime(2024, 6, 30))
        for cid, at in zip(ids, granted_at):
            when = f'{at:%Y-%m-%dT%H:%M:%S}+08:00'
            sensitive = 'false' if cid in planted.no_sensitive_consent else 'true'
            cross = 'false' if cid in planted.no_cross_border_consent else 'true'
            w.writerow([cid, _PURPOSE_CONTRACT, 'true', when, '', sensitive, cross])
            if cid in planted.no_consent:
                continue  # consented to servicing only, never to credit management
            withdrawn = f'{at + datetime.timedelta(days=200):%Y-%m-%dT%H:%M:%S}+08:00' \
                if cid in planted.consent_withdrawn else ''
            w.writerow([cid, _PURPOSE_CONSENT, 'true', when, withdrawn, sensitive, cross])
    with open(os.path.join(exports, 'erasure_requests.csv'), 'w', encoding='utf-8',
              newline='') as f:
        w = csv.writer(f, lineterminator='\n')
        w.writerow(['subject_id', 'requested_at'])
        for cid in sorted(planted.erasure_requested):
            w.writerow([cid, '2024-07-01T09:00:00+08:00'])


def _dates(rng, n, low, high):
    days = rng.integers(0, (high - low).days + 1, n)
    return [low + datetime.timedelta(days=int(d)) for d in days]


def _datetimes(rng, n, low, high):
    secs = rng.integers(0, int((high - low).total_seconds()), n)
    return [low + datetime.timedelta(seconds=int(s)) for s in secs]
