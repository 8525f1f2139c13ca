"""Sealing dead letters: erasure, restricted fields, one encoding."""

import dataclasses
import datetime
import decimal

import pytest

from transforms.common.reasons import DeadLetter
from transforms.write.deadletter import encode, seal


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
