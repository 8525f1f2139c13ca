import datetime

from hypothesis import given, settings, strategies as st
import numpy as np
import pyarrow as pa
import pytest

from transforms.consent.rules import (VERDICTS, ConsentRow, Decision, decide_subject,
                                      decide_table, refusal_problems)

PURPOSES = {'servicing': 'contract', 'credit': 'consent'}


def row(purpose='credit', granted=True, withdrawn=False, sensitive=True, cross=True):
    return ConsentRow(purpose, granted, withdrawn, sensitive, cross)


@pytest.mark.parametrize('rows, erased, cross_border, reason, sensitive_ok', [
    ([row()], False, False, None, True),
    ([row()], True, False, 'erasure_requested', False),          # erasure wins over consent
    ([], False, False, 'no_consent', False),
    ([row(purpose='servicing')], False, False, 'no_consent', False),
    ([row(purpose='marketing')], False, False, 'no_consent', False),  # another purpose
    ([row(granted=False)], False, False, 'no_consent', False),
    ([row(withdrawn=True)], False, False, 'consent_withdrawn', False),
    ([row(withdrawn=True), row()], False, False, None, True),    # granted again later
    ([row(cross=False)], False, True, 'no_cross_border_consent', False),
    ([row(cross=False)], False, False, None, True),              # domestic: not needed
    ([row(sensitive=False)], False, False, None, False),          # moves, sensitive nulled
    ([row(withdrawn=True, cross=False)], False, True, 'consent_withdrawn', False),
])
def test_decide_subject(rows, erased, cross_border, reason, sensitive_ok):
    d = decide_subject(rows, erased=erased, purposes=PURPOSES, cross_border=cross_border)
    assert (d.reason, d.sensitive_ok) == (reason, sensitive_ok)


def test_contract_only_transfer_needs_no_consent_row():
    d = decide_subject([], erased=False, purposes={'servicing': 'contract'}, cross_border=False)
    assert d.reason is None and d.sensitive_ok is False


def registry_table(rows):
    """rows: (subject, purpose, granted, withdrawn, sensitive, cross)."""
    return pa.table({
        'subject_id': pa.array([r[0] for r in rows], pa.string()),
        'purpose': pa.array([r[1] for r in rows], pa.string()),
        'granted': pa.array([r[2] for r in rows], pa.bool_()),
        'withdrawn_at': pa.array([datetime.datetime(2024, 1, 1) if r[3] else None
                                  for r in rows], pa.timestamp('us', tz='UTC')),
        'sensitive_consent': pa.array([r[4] for r in rows], pa.bool_()),
        'cross_border_consent': pa.array([r[5] for r in rows], pa.bool_()),
    })


def test_decide_table_covers_registry_and_erasures():
    rows = [('A', 'credit', True, False, True, True), ('B', 'credit', True, True, True, True),
            ('D', 'credit', True, False, False, True)]
    codes = decide_table(registry_table(rows), ['C', 'A'], purposes=PURPOSES,
                         cross_border=False)
    assert {k: VERDICTS[v] for k, v in codes.items()} == {
        'A': Decision('erasure_requested', False), 'B': Decision('consent_withdrawn', False),
        'C': Decision('erasure_requested', False), 'D': Decision(None, False)}


ROWS = st.lists(st.tuples(st.sampled_from('ABCDE'),
                          st.sampled_from(['credit', 'servicing', 'marketing', 'risk']),
                          st.booleans(), st.booleans(), st.booleans(), st.booleans()),
                max_size=25)


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, erased=st.sets(st.sampled_from('ABCDEF'), max_size=3),
       purposes=st.dictionaries(st.sampled_from(['credit', 'servicing', 'risk']),
                                st.sampled_from(['consent', 'contract']), min_size=1),
       cross_border=st.booleans())
def test_decide_table_agrees_with_decide_subject(rows, erased, purposes, cross_border):
    codes = decide_table(registry_table(rows), sorted(erased), purposes=purposes,
                         cross_border=cross_border)
    subjects = {r[0] for r in rows} | erased
    assert set(codes) == subjects
    for s in subjects:
        expected = decide_subject(
            [ConsentRow(p, g, w, se, cb) for subj, p, g, w, se, cb in rows if subj == s],
            erased=s in erased, purposes=purposes, cross_border=cross_border)
        assert VERDICTS[codes[s]] == expected, s


@settings(max_examples=200, deadline=None)
@given(known=st.dictionaries(st.text(max_size=12), st.integers(0, 9), max_size=40),
       asked=st.lists(st.text(max_size=14), max_size=20))
def test_subject_codes_agree_with_a_dict(known, asked):
    """Any text as an id (empty, non-ASCII, NUL bytes, prefixes of others, longer than every
    known id) finds exactly the code a dict would give, or the default."""
    from transforms.consent.rules import SubjectCodes
    codes = SubjectCodes(pa.array(list(known), pa.string()),
                         np.array(list(known.values()), dtype=np.int8))
    assert dict(codes.items()) == known and len(codes) == len(known)
    queries = list(known) + asked + [k + '\x00' for k in known] + [k[:-1] for k in known]
    got = codes.lookup(pa.array(queries, pa.string()), -3).tolist()
    assert got == [known.get(q, -3) for q in queries]
    assert all(codes.get(q, -3) == known.get(q, -3) for q in queries[:10])


@pytest.mark.parametrize('purposes, problem', [
    ({'credit': 'consent', 'servicing': 'contract'},
     'no live consent for purpose credit (legal basis: consent)'),
    ({'credit': 'consent', 'marketing': 'consent'},
     'no live consent for one or more of the purposes credit, marketing (legal basis: consent)'),
])
def test_refusals_say_which_purpose_or_separate_consent_is_missing(purposes, problem):
    problems = refusal_problems(purposes, 'HK')
    assert problems['no_consent'] == problem
    assert problems['consent_withdrawn'] == problem.replace('no live consent', 'consent withdrawn')
    assert problems['no_cross_border_consent'] == ('no separate consent to a transfer to HK '
                                                   '(PIPL Art. 39)')
    assert set(problems) == {d.reason for d in VERDICTS if d.reason}


@pytest.mark.parametrize('header, rows, problem', [
    ('subject_id,purpose,granted,withdrawn_at,sensitive_consent,cross_border_consent',
     'C1,p,true,,true,true\n', None),  # granted_at: no rule reads it
    ('subject_id,granted,withdrawn_at,sensitive_consent,cross_border_consent',
     'C1,true,,true,true\n', 'lacks the column(s) purpose;'),
    ('subject_id,purpose,granted,granted_at,withdrawn_at,sensitive_consent,cross_border_consent',
     '', 'has a header and no rows'),
])
def test_a_registry_is_checked_before_any_data_is_read(tmp_path, header, rows, problem):
    from transforms.consent.gate import REGISTRY_FIELDS, consent_file_problem, read_consent_file
    path = tmp_path / 'registry.csv'
    path.write_text(header + '\n' + rows, encoding='utf-8')
    found = consent_file_problem(str(path), REGISTRY_FIELDS, 'consent registry',
                                 rows_needed=True)
    assert (found is None) == (problem is None) and (problem is None or problem in found)
    if problem is None:
        [table] = read_consent_file(str(path), REGISTRY_FIELDS, 'consent registry')
        assert table.column('granted_at').to_pylist() == [None]
        assert table.column('subject_id').to_pylist() == ['C1']
