"""ConsentDecisions and ConsentGate with TestPipeline; consent files that are wrong."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import local_pipeline
from tests.stages import GOOD, text_batch
from transforms.conform.conform import conform_batch
from transforms.consent.gate import (
    ConsentDecisions,
    ConsentGate,
    ErasedSubjects,
    load_decisions,
    write_decision_part,
)
from transforms.consent.rules import VERDICT_CODE, Decision, SubjectCodes

NO_CONSENT = VERDICT_CODE[Decision('no_consent', False)]


def codes_for(**reasons) -> SubjectCodes:
    return SubjectCodes(pa.array(list(reasons), pa.string()), np.array(
        [VERDICT_CODE[Decision(r, r is None and s != 'NOSENS')] for s, r in reasons.items()],
        dtype=np.int8))


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


@pytest.mark.parametrize('text, message', [
    ('subject_id,purpose\nC1,credit\n', 'needs the columns subject_id, purpose, granted'),
    ('subject_id,purpose,granted,granted_at,withdrawn_at,sensitive_consent,'
     'cross_border_consent\nC1,credit,Y,,,N,N\nC2,credit,maybe,,,N,N\n',
     'row 2, column granted: expected'),
])
def test_a_bad_consent_file_names_the_row_and_column(tmp_path, text, message):
    from transforms.common.errors import InputError
    from transforms.consent.gate import REGISTRY_FIELDS, read_consent_file
    path = tmp_path / 'registry.csv'
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        list(read_consent_file(str(path), REGISTRY_FIELDS, 'consent registry'))


def test_a_sellers_own_consent_column_names_are_mapped(tmp_path):
    from transforms.common.errors import InputError
    from transforms.consent.gate import ERASURE_FIELDS, REGISTRY_FIELDS, read_consent_file
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
    from transforms.common.errors import InputError
    from transforms.consent.gate import REGISTRY_FIELDS, read_consent_file
    path = tmp_path / 'registry.csv'
    path.write_text('subject_id,purpose,granted,granted_at,withdrawn_at,sensitive_consent,'
                    'cross_border_consent\nC1,credit,Y,,,N,N\n张三丰SECRET,credit\n')
    with pytest.raises(InputError, match='not a valid CSV in its first rows') as caught:
        list(read_consent_file(str(path), REGISTRY_FIELDS, 'consent registry'))
    assert 'SECRET' not in str(caught.value)


def test_a_registry_read_in_ranges_and_partitions_decides_as_a_whole_read(
        tmp_path, monkeypatch, config, scratch):
    from apache_beam.io.filesystem import FileMetadata

    from transforms.consent import gate as consent
    from transforms.consent.rules import decide_table
    from transforms.read import ranges as read_ranges
    path = tmp_path / 'registry.csv'
    path.write_text(REGISTRY_HEADER + ''.join(registry_lines(300)))
    monkeypatch.setattr(read_ranges, 'MIN_RANGE_BYTES', 1000)
    monkeypatch.setattr(read_ranges, 'MAX_RANGE_BYTES', 5000)
    ranges = read_ranges.plan_ranges(FileMetadata(str(path), path.stat().st_size),
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

    from transforms.common.errors import InputError
    from transforms.consent import gate as consent
    from transforms.read import ranges as read_ranges
    lines = registry_lines(300)
    lines[500] = lines[500].replace(',true,2023', ',maybe,2023')
    path = tmp_path / 'registry.csv'
    path.write_text(REGISTRY_HEADER + ''.join(lines))
    monkeypatch.setattr(read_ranges, 'MIN_RANGE_BYTES', 1000)
    monkeypatch.setattr(read_ranges, 'MAX_RANGE_BYTES', 5000)
    ranges = read_ranges.plan_ranges(FileMetadata(str(path), path.stat().st_size),
                              consent._REGISTRY_LAYOUT, 2)
    bad = max((r for r in ranges if r.first_row <= 501), key=lambda r: r.first_row)
    assert bad.start > 0
    with pytest.raises(InputError, match='row 501, column granted'):
        list(consent.read_consent_file(str(path), consent.REGISTRY_FIELDS, 'consent registry',
                                       bad))
