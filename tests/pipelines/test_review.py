"""Compliance review: the dead letters of a run decrypted and filtered, exported, decided on by
group and signed off; an erased customer never shows a raw row; the review file holds no
personal value."""

import csv
import hashlib
import json
import os
import shutil

import pytest

from pipelines.cli import main
from pipelines.review import (REVIEW_FILE, decide, display_pad, display_width, matches, select,
                              signoff)
from transforms.common.errors import NovationError


@pytest.fixture
def run_copy(demo_run, tmp_path):
    """A copy of the demo run (decisions are written into the run directory)."""
    workdir, planted, result = demo_run
    copy = str(tmp_path / os.path.basename(result.run_dir))
    shutil.copytree(result.run_dir, copy)
    return copy, os.path.join(workdir, 'keys'), planted, result.manifest


def test_filters_select_a_group_and_erased_customers_have_no_raw_row(run_copy):
    run, keys, _, manifest = run_copy
    for table in ('customers', 'repayments'):
        for reason, n in manifest['tables'][table]['dead_letters'].items():
            chosen = select(run, keys, {'table': table, 'reason': reason})
            assert len(chosen) == n and {r['reason'] for r in chosen} <= {reason}
    erased = select(run, keys, {'reason': 'erasure_requested'})
    assert erased and all(r['raw'] is None and r['value'] is None for r in erased)
    dates = select(run, keys, {'table': 'customers', 'field': 'birth_date',
                               'source_file': 'customers.csv'})
    assert dates and all(r['field'] == 'birth_date' and r['value'] for r in dates)


def test_decisions_are_recorded_by_group_and_a_later_one_replaces_the_earlier(run_copy):
    run, keys, _, manifest = run_copy
    group = {'table': 'customers', 'reason': 'no_consent'}
    first = decide(run, keys, group, 'hold', by='A. Operator')
    second = decide(run, keys, group, 'replay', by='B. Operator', note='consent arrived')
    assert first['dead_letters'] == second['dead_letters'] == \
        manifest['tables']['customers']['dead_letters']['no_consent']
    review = json.load(open(os.path.join(run, REVIEW_FILE), encoding='utf-8'))
    [old, new] = review['decisions']
    assert old['decision'] == 'hold' and old['replaced_at'] is not None
    assert new['decision'] == 'replay' and new['replaced_at'] is None
    assert new['group'] == {'table': 'customers', 'reason': 'no_consent', 'field': None,
                            'source_file': None}
    entry = signoff(run, keys=keys, by='C. Officer')
    with open(os.path.join(run, 'manifest.json'), 'rb') as f:
        assert entry['manifest_sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert entry['config_sha256'] == manifest['config_sha256'] and entry['decisions'] == 1


@pytest.mark.parametrize('group, decision, note, message', [
    ({'table': 'customers', 'reason': 'malformed'}, 'discard', None, 'needs a --note'),
    ({'table': 'customers', 'reason': 'no_such_reason'}, 'hold', None, 'no dead letter matches'),
    ({'table': 'clients'}, 'hold', None, '--table clients: not a table of this run'),
    ({'table': 'customers'}, 'keep', None, "--decide 'keep': allowed: replay, discard, hold"),
])
def test_decision_mistakes_are_one_line(run_copy, group, decision, note, message):
    run, keys, _, _ = run_copy
    with pytest.raises(NovationError, match=message):
        decide(run, keys, group, decision, by='A. Operator', note=note)
    assert not os.path.exists(os.path.join(run, REVIEW_FILE))


def test_novation_review_shows_exports_and_decides(run_copy, tmp_path, capsys):
    run, keys, planted, manifest = run_copy
    assert main(['review', run, '--keys', keys, '--table', 'customers', '--reason',
                 'malformed', '--limit', '2']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ['table', 'source_file', 'row', 'reason']
    assert out[-1].startswith('... and ') and len(out) == 4
    target = str(tmp_path / 'dead.csv')
    assert main(['review', run, '--keys', keys, '--table', 'repayments', '--out', target]) == 0
    with open(target, encoding='utf-8', newline='') as f:
        assert len(list(csv.DictReader(f))) == sum(
            manifest['tables']['repayments']['dead_letters'].values())
    assert main(['review', run, '--keys', keys, '--reason', 'no_consent', '--decide',
                 'replay']) == 2
    assert '--decide needs --by NAME' in capsys.readouterr().err
    assert main(['review', run, '--keys', keys, '--reason', 'no_consent', '--decide',
                 'replay', '--by', 'A. Operator']) == 0
    assert main(['signoff', run, '--keys', keys, '--by', 'C. Officer']) == 0
    data = open(os.path.join(run, REVIEW_FILE), 'rb').read()
    values = {v for kind in ('name', 'national_id', 'mobile', 'email', 'bank_card')
              for v in planted.secrets[kind]}
    assert not any(v.encode('utf-8') in data for v in values)  # who, when, counts: no values


@pytest.mark.parametrize('text, width, padded', [
    ('abc', 5, 'abc  '), ('五千元', 6, '五千元'), ('五千元', 5, '五千 '), ('', 2, '  ')])
def test_cells_are_padded_by_terminal_columns(text, width, padded):
    assert display_pad(text, width) == padded and display_width(padded) == width


LETTER = {'table': 'customers', 'reason': 'malformed', 'field': 'birth_date',
          'source_file': '/exports/customers.csv'}


@pytest.mark.parametrize('group, matched', [
    ({}, True),
    ({'table': 'customers', 'reason': 'malformed'}, True),
    ({'source_file': 'customers.csv'}, True),             # by its name, as the report shows it
    ({'source_file': '/exports/customers.csv'}, True),    # or its whole path
    ({'source_file': 'contracts.parquet'}, False),
    ({'reason': 'no_consent'}, False),
    ({'table': 'customers', 'field': 'mobile'}, False),
])
def test_a_dead_letter_belongs_to_the_groups_its_filters_name(group, matched):
    assert matches(LETTER, group) is matched
