"""build_manifest: conservation, missing columns, the dead-letter limit."""

import dataclasses

import pytest

from pipelines.summary import print_summary
from transforms.commit.manifest import build_manifest
from transforms.common.errors import DeadLetterLimitExceeded
from transforms.common.run import Run

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
