"""Replay: the dead letters a review marks for replay move through the same path with the
consent registry as it is now, into a new run linked to the first, with the same pseudonyms;
conservation holds across the two runs, and replaying again moves nothing."""

import csv
import json
import os

import pytest

from tests.conftest import keyring_without, user_lines
from pipelines.cli import main
from pipelines.decrypt import read_table
from pipelines.migrate import run
from pipelines.review import REVIEW_FILE, decide, select


def test_a_replay_moves_what_consent_now_allows_once_with_the_first_runs_pseudonyms(
        demo_copy, capsys):
    workdir, config, _ = demo_copy
    keys = os.path.join(workdir, 'keys')
    first = run(['--config', config])
    group = {'table': 'customers', 'reason': 'no_consent'}
    decide(first.run_dir, keys, group, 'replay', by='A. Operator', note='consents found')
    letters = select(first.run_dir, keys, group)
    subjects = sorted({r['raw']['customer_id'] for r in letters})
    granted = set(subjects[:len(subjects) // 2])
    assert granted and len(granted) < len(subjects)
    # the seller's registry, now: half of those customers' consent was found
    registry = os.path.join(workdir, 'exports', 'consent_registry.csv')
    with open(registry, 'a', encoding='utf-8', newline='') as f:
        writer = csv.writer(f)
        for subject in sorted(granted):
            writer.writerow([subject, 'credit_management', 'true', '2026-12-01T09:00:00+08:00',
                             '', 'true', 'true'])
    expected = sum(r['raw']['customer_id'] in granted for r in letters)  # predicted first
    capsys.readouterr()
    assert main(['replay', first.run_dir, '--config', config]) == 0
    replay_dir = capsys.readouterr().out.strip().splitlines()[-1]
    manifest = json.load(open(os.path.join(replay_dir, 'manifest.json')))
    assert manifest['replay_of'] == first.manifest['run_id']
    customers = manifest['tables']['customers']
    assert (customers['rows_read'], customers['rows_written']) == (len(letters), expected)
    assert customers['dead_letters'] == {'no_consent': len(letters) - expected}
    assert all(manifest['tables'][t]['rows_read'] == 0 for t in manifest['tables']
               if t != 'customers')
    # conservation across the runs, and the same pseudonyms as the first run's
    review = json.load(open(os.path.join(first.run_dir, REVIEW_FILE), encoding='utf-8'))
    [entry] = review['replays']
    assert entry['dead_letters_replayed'] == len(letters) == \
        entry['rows_written'] + entry['dead_letters_again']
    delivered = read_table(replay_dir, keys=keys, table='customers')[0].to_pylist()
    moved = {r['subject_id'] for r in letters if r['raw']['customer_id'] in granted}
    assert {r['customer_id'] for r in delivered} == moved
    # again: nothing moves twice
    assert main(['replay', first.run_dir, '--config', config]) == 2
    assert 'replayed already' in capsys.readouterr().err


@pytest.mark.parametrize('argv, message', [
    (['--only', 'x'], '--only N[,N...]: the numbers of replay decisions'),
    (['--only', '9'], '--only 9: not a replay decision in force'),
    (['--keys', 'ANALYST'], "has no 'data.sensitive' keyset"),
])
def test_replay_mistakes_are_one_line_before_any_data_moves(demo_copy, capsys, argv, message):
    workdir, config, _ = demo_copy
    first = run(['--config', config])
    decide(first.run_dir, os.path.join(workdir, 'keys'), {'reason': 'malformed'}, 'replay',
           by='A. Operator')
    runs = set(os.listdir(os.path.join(workdir, 'out')))
    if 'ANALYST' in argv:  # a keyring without a role the run needs
        argv = ['--keys', keyring_without(os.path.join(workdir, 'keys'),
                                          os.path.join(workdir, 'analyst'), 'data.sensitive')]
    capsys.readouterr()
    assert main(['replay', first.run_dir, '--config', config] + argv) == 2
    err = user_lines(capsys.readouterr().err)
    assert len(err) == 1 and message in err[-1]
    assert set(os.listdir(os.path.join(workdir, 'out'))) == runs  # no run was started


def test_a_key_the_run_delivered_once_is_not_replayed_a_second_time(demo_copy, capsys):
    workdir, config, _ = demo_copy
    first = run(['--config', config])  # customers keep the latest copy of a key
    decide(first.run_dir, os.path.join(workdir, 'keys'),
           {'table': 'customers', 'reason': 'duplicate_key'}, 'replay', by='A. Operator')
    capsys.readouterr()
    assert main(['replay', first.run_dir, '--config', config]) == 2
    assert 'customers: its duplicate_key dead letters cannot be replayed' in \
        capsys.readouterr().err


def test_a_config_whose_schema_changed_is_refused_before_any_data_moves(demo_copy, capsys):
    workdir, config, _ = demo_copy
    first = run(['--config', config])
    decide(first.run_dir, os.path.join(workdir, 'keys'),
           {'table': 'customers', 'reason': 'no_consent'}, 'replay', by='A. Operator')
    schema = os.path.join(workdir, 'schemas', 'customers.avsc')
    doc = json.load(open(schema, encoding='utf-8'))
    doc['fields'].append({'name': 'wechat', 'type': ['null', 'string'], 'default': None,
                          'classification': 'personal'})
    json.dump(doc, open(schema, 'w', encoding='utf-8'), ensure_ascii=False)
    capsys.readouterr()
    assert main(['replay', first.run_dir, '--config', config]) == 2
    assert "tables.customers: its fields are not the run's" in capsys.readouterr().err


def test_a_run_without_replay_decisions_cannot_be_replayed(demo_copy, capsys):
    _, config, _ = demo_copy
    first = run(['--config', config])
    assert main(['replay', first.run_dir, '--config', config]) == 2
    assert 'no dead letters are marked for replay' in capsys.readouterr().err
