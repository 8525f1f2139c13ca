"""Composites with TestPipeline + assert_that on every output; DoFn logic called directly."""

import dataclasses
import datetime
import decimal
import io
import os
import re

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tink

from config import load_config
from transforms.common.batches import ROW, SOURCE, RecordBatchCoder, with_provenance
from transforms.common.run import Run
from transforms.conform.conform import conform_batch
from transforms.consent.gate import (ConsentDecisions, ConsentGate, ErasedSubjects, load_decisions,
                                write_decision_part)
from transforms.consent.rules import VERDICT_CODE, Decision, SubjectCodes
from transforms.keys.crypto import file_identity, keyed_ops, pme_decryption_properties
from transforms.write.delivered import avro_records, count_rows
from transforms.write.deadletter import encode, seal
from transforms.common.errors import DeadLetterLimitExceeded, NovationError
from transforms.keys.keyring import load_keyring
from transforms.commit.manifest import build_manifest
from transforms.mask.mask import mask_batch
from transforms.mask.methods import make_operator
from transforms.read.tables import ReadTable
from transforms.common.reasons import DeadLetter
from transforms.common.scratch import Scratch
from transforms.write.tables import WriteTable
from pipelines.summary import print_summary

from conftest import local_pipeline


@pytest.fixture
def config(demo_copy):
    return load_config(demo_copy[1])


def rows_of(pcoll, label):
    return (pcoll | f'{label}Rows' >> beam.Map(lambda b: b.num_rows)
            | f'{label}Sum' >> beam.CombineGlobally(sum))


_TYPED = pa.record_batch({'id': pa.array(['C1', 'C2', None]),
                          'amount': pa.array([decimal.Decimal('1.50'), None,
                                              decimal.Decimal('-2.25')], pa.decimal128(12, 2)),
                          'on': pa.array([datetime.date(2024, 1, 31), None,
                                          datetime.date(1999, 12, 1)])})


@pytest.mark.parametrize('batch', [
    with_provenance(_TYPED, 'gs://b/x.csv', np.array([4, 5, 9])),  # dictionary column
    with_provenance(_TYPED, 'x.csv', np.arange(1, 4)).slice(1, 2),  # a slice of larger buffers
    _TYPED.slice(0, 0),
])
def test_record_batch_coder_round_trips_and_estimates_without_encoding(batch):
    coder = beam.coders.registry.get_coder(pa.RecordBatch)
    assert isinstance(coder, RecordBatchCoder)
    decoded = coder.decode(coder.encode(batch))
    assert decoded.equals(batch) and decoded.schema == batch.schema
    assert coder.get_impl().estimate_size(batch) == batch.nbytes


def test_read_table_keeps_row_numbers_and_dead_letters_broken_rows(config, tmp_path):
    table = config.table('customers')
    header = ','.join(table.schema.field_names)
    good = ['C1,张三,M' + ',' * 18, 'C3,李四,F' + ',' * 18]
    broken = 'C2,王五,F,only,five'
    path = tmp_path / 'c.csv'
    path.write_bytes('\n'.join([header, good[0], broken, good[1]]).encode('gbk') + b'\n')
    table = dataclasses.replace(table, path=str(path))
    with local_pipeline() as p:
        out = p | ReadTable(table)
        assert_that(out[ReadTable.ROWS] | beam.FlatMap(lambda b: b.column(ROW).to_pylist()),
                    equal_to([1, 3]), label='rows')
        assert_that(out[ReadTable.DEAD] | beam.Map(
            lambda d: (d.reason, d.stage, d.row, d.problem, d.subject)),
            equal_to([('malformed', 'read', 2, 'expected 21 columns, found 5', 'C2')]),
            label='dead')
        assert_that(out[ReadTable.SOURCES], equal_to([('customers', str(path), 3, [], [], 3)]),
                    label='sources')


def text_batch(table, rows):
    names = table.schema.field_names
    columns = {n: [r.get(n, '') for r in rows] for n in names}
    batch = pa.RecordBatch.from_pydict(columns, schema=pa.schema([(n, pa.string())
                                                                  for n in names]))
    return with_provenance(batch, 'src.csv', np.arange(1, len(rows) + 1))


GOOD = {'customer_id': 'C1', 'birth_date': '1990-01-02', 'monthly_income': '8000.50',
        'created_at': '2020-01-01 08:00:00', 'mobile': '13812345678'}


def test_conform_casts_and_refuses_bad_rows_without_values(config):
    table = config.table('customers')
    batch = text_batch(table, [GOOD, {**GOOD, 'customer_id': 'C2', 'birth_date': '1990-02-30',
                                      'monthly_income': '五千'},
                               {**GOOD, 'customer_id': 'C3', 'created_at': ''}])
    typed, dead = conform_batch(batch, table)
    assert typed.num_rows == 1
    assert typed.column('birth_date').to_pylist() == [datetime.date(1990, 1, 2)]
    assert typed.column('monthly_income').to_pylist() == [decimal.Decimal('8000.50')]
    assert [(d.reason, d.row, d.field, d.subject) for d in dead] == [
        ('malformed', 2, 'birth_date, monthly_income', 'C2'),
        ('missing_required', 3, 'created_at', 'C3')]
    for d in dead:
        assert '1990-02-30' not in d.problem and '五千' not in d.problem
        assert d.raw['mobile'] == '13812345678'  # kept only for the encrypted dead letter


NO_CONSENT = VERDICT_CODE[Decision('no_consent', False)]


def codes_for(**reasons) -> SubjectCodes:
    return SubjectCodes(pa.array(list(reasons), pa.string()), np.array(
        [VERDICT_CODE[Decision(r, r is None and s != 'NOSENS')] for s, r in reasons.items()],
        dtype=np.int8))


@pytest.fixture
def scratch(tmp_path, keys_dir):
    return Scratch(str(tmp_path / 'scratch'), keys_dir, 'r1')


def test_consent_gate_refuses_suppresses_and_counts(config, scratch):
    table = config.table('customers')
    typed, _ = conform_batch(text_batch(table, [
        {**GOOD, 'customer_id': c, 'national_id': '11010519491231002X'}
        for c in ('OK', 'NOSENS', 'ERASED', 'GONE', 'UNKNOWN')]), table)
    part = write_decision_part(scratch, 0, 1, codes_for(
        OK=None, NOSENS=None, ERASED='erasure_requested', GONE='consent_withdrawn'), NO_CONSENT)
    with local_pipeline() as p:
        d = p | 'Decisions' >> beam.Create([part])
        out = p | beam.Create([typed]) | ConsentGate(table, d, scratch, config.transfer)
        assert_that(out[ConsentGate.ROWS] | beam.FlatMap(
            lambda b: list(zip(b.column('customer_id').to_pylist(),
                               b.column('national_id').to_pylist()))),
            equal_to([('OK', '11010519491231002X'), ('NOSENS', None)]), label='rows')
        assert_that(out[ConsentGate.DEAD] | beam.Map(
            lambda l: (l.subject, l.reason, l.raw is None, l.field, l.problem)),
            equal_to([('ERASED', 'erasure_requested', True, 'customer_id',
                       'the customer asked for erasure (PIPL Art. 47)'),
                      ('GONE', 'consent_withdrawn', False, 'customer_id',
                       'consent withdrawn for purpose credit_management (legal basis: '
                       'consent)'),
                      ('UNKNOWN', 'no_consent', False, 'customer_id',
                       'no live consent for purpose credit_management (legal basis: consent)'
                       )]), label='dead')
        assert_that(out[ConsentGate.SUPPRESSED], equal_to([('customers', 1)]),
                    label='suppressed')


@pytest.mark.parametrize('parts', [1, 3])
def test_consent_decisions_read_inside_the_pipeline(config, demo_copy, scratch, parts):
    _, _, planted = demo_copy
    erased = sorted(planted.erasure_requested)
    withdrawn = sorted(planted.consent_withdrawn)
    with local_pipeline() as p:
        d = p | ConsentDecisions(config.consent, config.transfer,
                                 p | ErasedSubjects(config.consent), scratch, parts=parts)
        assert_that(d | beam.Map(lambda part: part.partition), equal_to(list(range(parts))),
                    label='partitions')

        def reasons(_, parts):
            decisions = load_decisions(scratch, parts)
            return ({decisions.decision(s).reason for s in erased},
                    {decisions.decision(s).reason for s in withdrawn},
                    decisions.decision('nobody').reason)

        assert_that(p | 'Start' >> beam.Create([None]) | beam.Map(reasons, beam.pvalue.AsList(d)),
                    equal_to([({'erasure_requested'}, {'consent_withdrawn'}, 'no_consent')]),
                    label='reasons')


def test_mask_batch_follows_the_policy(config, keys_dir):
    table = config.table('customers')
    typed, _ = conform_batch(text_batch(table, [{**GOOD, 'name': '张三丰',
                                                 'login_password_hash': 'secret'}]), table)
    ops = keyed_ops(load_keyring(keys_dir))
    out = mask_batch(typed, table, ops).to_pylist()[0]
    assert out['name'] == '张**' and out['mobile'] == '138****5678'
    assert out['birth_date'] == '1990'
    assert out['monthly_income'] == decimal.Decimal('8000.50')  # encrypt: clear, own column key
    assert 'login_password_hash' not in out
    assert out['customer_id'] == ops.pseudonym('customer_id', 'C1')
    assert out[SOURCE] == 'src.csv' and out[ROW] == 1


def test_seal_drops_the_raw_row_of_erased_customers_whatever_the_stage():
    letter = DeadLetter('malformed', 'conform', 'customers', 'a.csv', 7, field='birth_date',
                        problem='expected a date', subject='ERASED', raw={'name': '张三'})
    sealed = seal(letter, {'ERASED'}, lambda s: 'p-' + s[::-1])
    assert sealed == {'reason': 'erasure_requested', 'stage': 'consent', 'table': 'customers',
                      'source_file': 'a.csv', 'row': 7, 'field': None, 'problem': None,
                      'subject_id': 'p-DESARE', 'raw': None}
    kept = seal(dataclasses.replace(letter, subject='OK'), {'ERASED'}, str.lower)
    assert kept['reason'] == 'malformed' and kept['raw'] == {'name': '张三'}


@pytest.mark.parametrize('stage, raw, expected', [
    ('conform', {'name': '张三', 'login_password_hash': '$2b$x'}, {'name': '张三'}),
    ('consent', {'name': '张三', 'login_password_hash': '$2b$x'}, {'name': '张三'}),
    ('read', {'text': 'C1,张三,$2b$x'}, None),  # cannot tell the columns apart: withheld
])
def test_seal_never_keeps_restricted_fields(stage, raw, expected):
    letter = DeadLetter('malformed' if stage != 'consent' else 'no_consent', stage,
                        'customers', 'a.csv', 1, subject='OK', raw=raw)
    sealed = seal(letter, set(), str.lower, ('login_password_hash',))
    assert sealed['raw'] == expected


@pytest.mark.parametrize('value, text', [
    (datetime.datetime(2024, 1, 2, 3, 4, 5), '"2024-01-02T03:04:05"'),
    (datetime.date(2024, 1, 2), '"2024-01-02"'),
    (decimal.Decimal('1234.50'), '"1234.50"'),
    (b'\x01\xff', '"01ff"'),
    ('张三', '"张三"'),
])
def test_one_encoding_for_the_batch_and_the_streams_dead_letters(value, text):
    """The batch's _SealFn and the stream's epochs both write what encode gives."""
    letter = DeadLetter('malformed', 'conform', 't', 'a.csv', 1, subject='S', raw={'v': value})
    line = encode(seal(letter, set(), str.lower)).decode('utf-8')
    assert f'"raw": {{"v": {text}}}' in line


@pytest.mark.parametrize('output_format', ['parquet', 'avro'])
def test_write_table_encrypts_binds_and_counts_by_source(config, keys_dir, tmp_path,
                                                          output_format):
    table = config.table('customers')
    if output_format == 'avro':  # avro has no per-column keys: deliver the income bucketed
        table = dataclasses.replace(table, rules=tuple(
            dataclasses.replace(r, operator=make_operator('generalize', r.field, 'test',
                                                          {'bucket': 5000}))
            if r.operator.name == 'encrypt' else r for r in table.rules))
    typed, _ = conform_batch(text_batch(table, [GOOD, {**GOOD, 'customer_id': 'C2'}]), table)
    masked = mask_batch(typed, table, keyed_ops(load_keyring(keys_dir)))
    run = Run('r1', str(tmp_path / 'run'), keys_dir)
    with local_pipeline() as p:
        out = p | beam.Create([masked]) | WriteTable(table, output_format, run, keys_dir)
        assert_that(out[WriteTable.WRITTEN], equal_to([(('customers', 'src.csv'), 2)]),
                    label='written')
        assert_that(out[WriteTable.FILES] | beam.Map(
            lambda path: bool(re.fullmatch(r'part-[0-9a-f]{16}\.(parquet|avro\.enc)',
                                           os.path.basename(path)))),
            equal_to([True]), label='files')
    [name] = os.listdir(os.path.join(run.run_dir, 'data', 'customers'))
    assert sorted(os.listdir(run.run_dir)) == ['data']  # temporary files are gone
    path = os.path.join(run.run_dir, 'data', 'customers', name)
    keyring = load_keyring(keys_dir)
    identity = file_identity('r1', f'data/customers/{name}')
    with open(path, 'rb') as f:
        data = f.read()
    if output_format == 'parquet':
        with pytest.raises(OSError):
            pq.read_table(path)  # no keys, no data: the footer itself is encrypted
        assert data[:4] == data[-4:] == b'PARE'  # Parquet magic for an encrypted footer
        back = pq.read_table(path, decryption_properties=pme_decryption_properties(keyring,
                                                                                   identity))
        assert back.schema.names == table.delivered_schema.names
        rows = back.to_pylist()
    else:
        schema, records = avro_records(io.BytesIO(data), keyring, identity)
        rows = list(records)
        assert [f['name'] for f in schema['fields']] == table.delivered_schema.names
        assert schema['fields'][0]['classification'] == 'personal'
    assert [r['customer_id'] for r in rows] == masked.column('customer_id').to_pylist()
    with pytest.raises((OSError, NovationError, tink.TinkError)):  # bound to run and place
        count_rows(output_format, io.BytesIO(data), keyring,
                   file_identity('r2', f'data/customers/{name}'))


def test_write_table_writes_one_empty_file_for_no_rows(config, keys_dir, tmp_path):
    table = config.table('contracts')
    run = Run('r1', str(tmp_path / 'run'), keys_dir)
    with local_pipeline() as p:
        out = p | beam.Create([]) | WriteTable(table, 'parquet', run, keys_dir)
        assert_that(out[WriteTable.FILES] | beam.Map(lambda path: 1), equal_to([1]))
    [name] = os.listdir(os.path.join(run.run_dir, 'data', 'contracts'))
    with open(os.path.join(run.run_dir, 'data', 'contracts', name), 'rb') as f:
        assert count_rows('parquet', f, load_keyring(keys_dir),
                          file_identity('r1', f'data/contracts/{name}')) == 0


RUN = Run('r', 'out/r', 'keys', config_sha256='x', tables=('t',), max_ratio=0.1,
          config='c.yaml', fields={'t': []}, column_keys={'t': {}})


def facts(read=10, written=8, dead=(('no_consent', 2),)):
    counts = {('read', 't', 's', ''): read, ('written', 't', 's', ''): written}
    counts.update({('dead', 't', 's', r): n for r, n in dead})
    files = [{'table': 't', 'kind': 'data', 'path': 'data/t/p', 'rows': written, 'bytes': 1,
              'crc32c': '00', 'keys': {}},
             {'table': 't', 'kind': 'deadletter', 'path': 'deadletter/t/p',
              'rows': sum(n for _, n in dead), 'bytes': 1, 'crc32c': '00', 'keys': {}}]
    return counts, files


def test_manifest_proves_conservation():
    m = build_manifest(RUN, *facts())
    assert m['tables']['t']['rows_read'] == 10
    assert m['sources'] == [{'path': 's', 'table': 't', 'rows_read': 10, 'rows_written': 8,
                             'dead_letters': {'no_consent': 2}, 'ignored_columns': [],
                             'missing_columns': []}]


def test_manifest_names_the_fields_missing_from_each_file():
    counts, files = facts()
    counts.update({('missing', 't', 's', 'remarks'): 1, ('missing', 't', 's', 'email'): 1,
                   ('read', 't', 's2', ''): 0})
    m = build_manifest(dataclasses.replace(RUN, transfer={'seller': 'S', 'acquirer': 'A'}), counts,
                       files)
    assert m['tables']['t']['missing_columns'] == ['email', 'remarks']
    assert [(s['path'], s['missing_columns']) for s in m['sources']] == [
        ('s', ['email', 'remarks']), ('s2', [])]
    lines = []
    print_summary(m, out=lines.append)
    assert '  fields missing from the export (delivered as nulls): t: email, remarks (in 1 of 2 ' \
           'files)' in lines


def test_manifest_refuses_a_lost_row():
    with pytest.raises(AssertionError, match='conservation violated'):
        build_manifest(RUN, *facts(read=11))


def test_manifest_aborts_above_the_dead_letter_limit_counting_only_bad_data():
    build_manifest(RUN, *facts(written=5, dead=(('no_consent', 5),)))  # consent: no abort
    with pytest.raises(DeadLetterLimitExceeded, match=r'table t: 2 of 10 rows \(20%\)'):
        build_manifest(RUN, *facts(dead=(('malformed', 2),)))


def test_mask_dofn_builds_keys_in_setup_then_masks_batches(config, keys_dir):
    from transforms.mask.mask import KeyedBatchFn, _masked
    table = config.table('contracts')
    fn = KeyedBatchFn(_masked, table, keys_dir)
    fn.setup()
    batch = pa.RecordBatch.from_pydict({
        'contract_id': ['L1'], 'customer_id': ['C1'], 'product': ['auto_lease'],
        'principal': ['1000.00'], 'annual_rate': ['0.0500'], 'term_months': ['12'],
        'monthly_payment': ['90.00'], 'start_date': ['2024-01-02'], 'status': ['active'],
        'overdue_days': ['0'], 'vehicle_plate': ['京A12345'], 'vehicle_vin': ['LSV1'],
        'repayment_account': ['6222021234567890'], 'guarantor_name': ['王五'],
        'guarantor_mobile': ['13900001111'], 'signed_at': ['2024-01-01 10:00:00']})
    typed, dead = conform_batch(with_provenance(batch, 'k.parquet', np.array([1])), table)
    assert not dead
    [out] = list(fn.process(typed))
    row = out.to_pylist()[0]
    assert row['vehicle_plate'] == '京A*****' and row['guarantor_mobile'] == '139****1111'
    assert row['customer_id'] == fn._ops.pseudonym('customer_id', 'C1')
    assert row['repayment_account'] != '6222021234567890'


@pytest.mark.parametrize('values, expected', [
    (['plain', None, '北京'], False),
    ([None, None], False),
    ([], False),
    (['ok', 'x\ufffdy'], True),
    # U+FFFD (3 bytes) before, across and after the end of the first 1 MB search window
    *[(['a' * ((1 << 20) + shift) + '\ufffd'], True) for shift in (-3, -2, -1, 0, 1)],
])
def test_undecodable_screen_finds_every_replacement_character(values, expected):
    from transforms.read.tables import _may_hold_replacement
    assert _may_hold_replacement(pa.array(values, pa.string())) is expected


@pytest.mark.parametrize('data, encoding, offset', [
    ('名字,王五\n'.encode('gbk'), 'utf-8-sig', 0),
    (b'id,name\n1,ok\n2,' + '王'.encode('gbk') + b'\n', 'utf-8-sig', 15),
    (b'a' * (1 << 20) + b'\xff', 'utf-8', 1 << 20),           # across the read chunk size
    ('王五'.encode('gbk') + b'\x81\x20', 'gbk', 4),            # a truncated GBK pair
    ('王五'.encode('gbk'), 'gbk', -1),
])
def test_first_undecodable_byte_is_a_file_offset(tmp_path, data, encoding, offset):
    from transforms.read.tables import first_undecodable_byte
    path = tmp_path / 'f.csv'
    path.write_bytes(data)
    assert first_undecodable_byte(str(path), encoding) == offset


@pytest.mark.parametrize('parts', [1, 4])
def test_duplicates_keep_latest_refuses_older_copies_only(config, tmp_path, scratch, parts):
    from transforms.conform.dedup import DropDuplicates
    table = config.table('customers')
    assert table.keep_duplicates == 'latest' and table.order_by == 'updated_at'
    header = ','.join(table.schema.field_names)

    def line(cid, updated):
        values = {n: '' for n in table.schema.field_names}
        values.update(customer_id=cid, created_at='2020-01-01 00:00:00', updated_at=updated)
        return ','.join(values[n] for n in table.schema.field_names)

    path = tmp_path / 'c.csv'
    path.write_bytes('\n'.join([header, line('A', '2024-01-01 00:00:00'),
                                line('B', '2024-01-01 00:00:00'),
                                line('A', '2024-06-01 00:00:00'),
                                line('A', '2023-01-01 00:00:00')]).encode('gbk') + b'\n')
    table = dataclasses.replace(table, path=str(path))
    with local_pipeline() as p:
        conformed = (p | ReadTable(table))[ReadTable.ROWS] | 'Conform' >> beam.ParDo(
            lambda b: [conform_batch(b, table)[0]])
        out = conformed | DropDuplicates(table, scratch, parts=parts)
        assert_that(out[DropDuplicates.ROWS] | beam.FlatMap(
            lambda b: list(zip(b.column('customer_id').to_pylist(),
                               b.column(ROW).to_pylist()))),
            equal_to([('A', 3), ('B', 2)]), label='rows')
        assert_that(out[DropDuplicates.DEAD] | beam.Map(lambda d: (d.reason, d.row, d.field)),
                    equal_to([('duplicate_key', 1, 'customer_id'),
                              ('duplicate_key', 4, 'customer_id')]), label='dead')


def test_parking_rolls_files_and_flushes_each_bundle(scratch, monkeypatch):
    from transforms.conform import dedup
    monkeypatch.setattr(dedup, 'PARK_ROWS', 3)
    park = dedup._ParkRowsFn(scratch, 'customers')

    def batch(ids, source='a.csv'):
        return with_provenance(pa.record_batch({'customer_id': ids}), source, np.arange(
            1, len(ids) + 1))
    wider = pa.record_batch({'customer_id': ['C9'], 'x': [1]})
    batches = [batch(['C1', 'C2']), batch([]), batch(['C3'], 'b.csv'), batch(['C4']), wider,
               batch(['C5'])]
    park.start_bundle()
    paths = [path for b in batches for path in park.process(b)]
    paths += [wv.value for wv in park.finish_bundle()]
    files = [[r for b in scratch.read_batches(path) for r in b.to_pylist()] for path in paths]
    # full at 3 rows; a batch of another schema starts a new file; the rest at the bundle's end
    assert [[r['customer_id'] for r in f] for f in files] == [['C1', 'C2', 'C3'], ['C4'],
                                                               ['C9'], ['C5']]
    assert files[0][2]['__source'] == 'b.csv'
    park.start_bundle()
    assert list(park.finish_bundle()) == []  # an empty bundle writes nothing


def test_duplicates_keep_none_refuses_every_copy(config):
    from transforms.conform.dedup import duplicate_rows
    table = dataclasses.replace(config.table('customers'), keep_duplicates='none',
                                order_by=None)
    typed, _ = conform_batch(text_batch(table, [GOOD, {**GOOD, 'customer_id': 'C2'}, GOOD]),
                             table)
    assert duplicate_rows(typed, table, {'C1': None}).tolist() == [True, False, True]
    assert duplicate_rows(typed, table, {}).tolist() == [False, False, False]


@pytest.mark.parametrize('text, message', [
    ('subject_id,purpose\nC1,credit\n', 'needs the columns subject_id, purpose, granted'),
    ('subject_id,purpose,granted,granted_at,withdrawn_at,sensitive_consent,'
     'cross_border_consent\nC1,credit,Y,,,N,N\nC2,credit,maybe,,,N,N\n',
     'row 2, column granted: expected'),
])
def test_a_bad_consent_file_names_the_row_and_column(tmp_path, text, message):
    from transforms.consent.gate import REGISTRY_FIELDS, read_consent_file
    from transforms.common.errors import InputError
    path = tmp_path / 'registry.csv'
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        list(read_consent_file(str(path), REGISTRY_FIELDS, 'consent registry'))


def test_a_sellers_own_consent_column_names_are_mapped(tmp_path):
    from transforms.consent.gate import ERASURE_FIELDS, REGISTRY_FIELDS, read_consent_file
    from transforms.common.errors import InputError
    path = tmp_path / 'registry.csv'
    path.write_text('customer_id,purpose,granted,granted_at,withdrawn_at,separate_sensitive,'
                    'separate_cross_border,branch\nC1,credit,Y,,,N,Y,SH\nC2,credit,Y,,,x,N,SH\n')
    columns = (('subject_id', 'customer_id'), ('sensitive_consent', 'separate_sensitive'),
               ('cross_border_consent', 'separate_cross_border'))
    with pytest.raises(InputError, match='row 2, column separate_sensitive: expected'):
        list(read_consent_file(str(path), REGISTRY_FIELDS, 'consent registry',
                               columns=columns))
    path.write_text(path.read_text().replace(',x,', ',Y,'))
    (table,) = read_consent_file(str(path), REGISTRY_FIELDS, 'consent registry', columns=columns)
    assert table.column_names == [f.name for f in REGISTRY_FIELDS]
    assert table.column('subject_id').to_pylist() == ['C1', 'C2']
    assert table.column('cross_border_consent').to_pylist() == [True, False]
    erasures = tmp_path / 'erasures.csv'
    erasures.write_text('customer_id,requested_at\nC9,2024-01-01T00:00:00Z\n')
    (table,) = read_consent_file(str(erasures), ERASURE_FIELDS, 'erasure list', columns=columns)
    assert table.column('subject_id').to_pylist() == ['C9']


def test_a_broken_consent_csv_does_not_quote_its_rows(tmp_path):
    from transforms.consent.gate import REGISTRY_FIELDS, read_consent_file
    from transforms.common.errors import InputError
    path = tmp_path / 'registry.csv'
    path.write_text('subject_id,purpose,granted,granted_at,withdrawn_at,sensitive_consent,'
                    'cross_border_consent\nC1,credit,Y,,,N,N\n张三丰SECRET,credit\n')
    with pytest.raises(InputError, match='not a valid CSV in its first rows') as caught:
        list(read_consent_file(str(path), REGISTRY_FIELDS, 'consent registry'))
    assert 'SECRET' not in str(caught.value)


REGISTRY_HEADER = ('subject_id,purpose,granted,granted_at,withdrawn_at,sensitive_consent,'
                   'cross_border_consent\n')


def registry_lines(n):
    """n customers, each with a grant for two purposes; every third withdrew one."""
    lines = []
    for i in range(n):
        withdrawn = '2024-03-01T00:00:00+08:00' if i % 3 == 0 else ''
        lines.append(f'C{i},contract_servicing,true,2023-01-01T00:00:00+08:00,,true,true\n')
        lines.append(f'C{i},credit_management,true,2023-01-01T00:00:00+08:00,{withdrawn},'
                     f'{"true" if i % 2 else "false"},true\n')
    return lines


def test_a_registry_read_in_ranges_and_partitions_decides_as_a_whole_read(
        tmp_path, monkeypatch, config, scratch):
    from apache_beam.io.filesystem import FileMetadata
    from transforms.consent import gate as consent
    from transforms.read import tables as read
    from transforms.consent.rules import decide_table
    path = tmp_path / 'registry.csv'
    path.write_text(REGISTRY_HEADER + ''.join(registry_lines(300)))
    monkeypatch.setattr(read, 'MIN_RANGE_BYTES', 1000)
    monkeypatch.setattr(read, 'MAX_RANGE_BYTES', 5000)
    ranges = read.plan_ranges(FileMetadata(str(path), path.stat().st_size),
                              consent._REGISTRY_LAYOUT, 2)
    assert len(ranges) >= 4
    purposes = config.transfer.legal_bases
    flags = [f for r in ranges for f in consent._spill_range_flags(r, purposes, scratch, 3)]
    assert {p for p, _ in flags} == {0, 1, 2}
    decided = [consent._decide_partition(p, config.transfer, scratch, 3, flags, {'C7', 'X'})
               for p in range(3)]
    whole = decide_table(consent.read_consent_file(str(path), consent.REGISTRY_FIELDS, 'r'),
                         ["C7", "X"], purposes=purposes,
                         cross_border=config.transfer.cross_border)
    subjects = pa.array([f'C{i}' for i in range(300)] + ['C999', 'X'])
    default = decided[0].default
    split = load_decisions(scratch, decided).lookup(subjects)
    assert split.tolist() == whole.lookup(subjects, default).tolist()
    assert len(set(split.tolist())) >= 3  # several verdicts were decided
    for incomplete in (decided[1:], decided[:2], []):
        with pytest.raises(RuntimeError, match='consent decisions incomplete'):
            load_decisions(scratch, incomplete)


def test_a_bad_value_in_a_later_range_names_its_row_in_the_file(tmp_path, monkeypatch):
    from apache_beam.io.filesystem import FileMetadata
    from transforms.consent import gate as consent
    from transforms.read import tables as read
    from transforms.common.errors import InputError
    lines = registry_lines(300)
    lines[500] = lines[500].replace(',true,2023', ',maybe,2023')
    path = tmp_path / 'registry.csv'
    path.write_text(REGISTRY_HEADER + ''.join(lines))
    monkeypatch.setattr(read, 'MIN_RANGE_BYTES', 1000)
    monkeypatch.setattr(read, 'MAX_RANGE_BYTES', 5000)
    ranges = read.plan_ranges(FileMetadata(str(path), path.stat().st_size),
                              consent._REGISTRY_LAYOUT, 2)
    bad = max((r for r in ranges if r.first_row <= 501), key=lambda r: r.first_row)
    assert bad.start > 0
    with pytest.raises(InputError, match='row 501, column granted'):
        list(consent.read_consent_file(str(path), consent.REGISTRY_FIELDS, 'consent registry',
                                       bad))
