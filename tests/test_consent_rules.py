import pytest

from transforms.consent_rules import ConsentRow, decide_all, decide_subject

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


def test_decide_all_covers_registry_and_erasures():
    registry = [
        {'subject_id': 'A', 'purpose': 'credit', 'granted': True, 'withdrawn_at': None,
         'sensitive_consent': True, 'cross_border_consent': True},
        {'subject_id': 'B', 'purpose': 'credit', 'granted': True, 'withdrawn_at': 'then',
         'sensitive_consent': True, 'cross_border_consent': True},
    ]
    out = decide_all(registry, ['C', 'A'], purposes=PURPOSES, cross_border=False)
    assert {k: v.reason for k, v in out.items()} == {
        'A': 'erasure_requested', 'B': 'consent_withdrawn', 'C': 'erasure_requested'}
