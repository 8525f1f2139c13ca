"""novation verify: a clean run is clean; kept free text with phone numbers, an ID number in an
internal field, a changed file and a file the manifest does not list are each found."""

import json
import os
import shutil

import pytest

from pipelines.cli import main
from pipelines.migrate import run
from pipelines.verify import verify_run


def test_the_demo_run_is_clean(demo_run, capsys):
    workdir, _, result = demo_run
    assert main(['verify', result.run_dir, '--keys', os.path.join(workdir, 'keys')]) == 0
    out = capsys.readouterr().out
    assert 'clean' in out and 'no identifier in clear' in out


def _rerun(workdir, config, replace):
    text = open(config, encoding='utf-8').read()
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    changed = os.path.join(workdir, 'changed.yaml')
    open(changed, 'w', encoding='utf-8').write(text)
    return run(['--config', changed])


@pytest.fixture(scope='module')
def leaky_run(tmp_path_factory):
    """A demo whose config keeps the call notes (they hold mobile numbers) and the customers'
    remarks in clear."""
    from pipelines.demo import prepare_demo
    workdir = str(tmp_path_factory.mktemp('leaky'))
    config, _ = prepare_demo(workdir, customers=300, seed=5)
    result = _rerun(workdir, config, [
        ('collection_calls.notes: {method: scrub, replace: pseudonym}',
         'collection_calls.notes: keep'),
        ('customers.remarks: redact', 'customers.remarks: keep')])
    return workdir, result


pytestmark = pytest.mark.slow


def test_kept_notes_with_phone_numbers_fail_with_counts_and_no_values(leaky_run, capsys):
    workdir, result = leaky_run
    keys = os.path.join(workdir, 'keys')
    found = verify_run(result.run_dir, keys)
    assert not found['problems']
    notes = found['identifiers']['collection_calls.notes']['cn_mobile']
    assert notes['found'] == notes['rows'] > 0
    assert found['identifiers']['customers.remarks']['cn_mobile']['rows'] > 0
    # the counts equal what the delivered notes hold
    from pipelines.decrypt import read_table
    from transforms.detectors import scan
    calls, _ = read_table(result.run_dir, keys=keys, table='collection_calls')
    assert len(scan(calls.column('notes'))) == notes['found']
    assert main(['verify', result.run_dir, '--keys', keys]) == 1
    out = capsys.readouterr().out
    assert 'FAILED' in out and 'collection_calls.notes' in out and 'cn_mobile' in out
    mobiles = {v[-11:] for v in calls.column('notes').to_pylist() if v}
    assert not any(m in out for m in mobiles)


def test_a_changed_file_and_an_unlisted_file_are_problems(leaky_run, tmp_path):
    workdir, result = leaky_run
    copy = str(tmp_path / 'run')
    shutil.copytree(result.run_dir, copy)
    manifest = json.load(open(os.path.join(copy, 'manifest.json'), encoding='utf-8'))
    target = os.path.join(copy, manifest['tables']['contracts']['files'][0]['path'])
    data = bytearray(open(target, 'rb').read())
    data[len(data) // 2] ^= 0x01
    open(target, 'wb').write(bytes(data))
    shutil.copy(target, os.path.join(copy, 'data', 'contracts', 'part-extra.parquet'))
    problems = verify_run(copy, os.path.join(workdir, 'keys'))['problems']
    assert any('does not match the manifest' in p for p in problems)
    assert 'data/contracts/part-extra.parquet is in the run but not in its manifest' in problems


def test_an_id_number_in_an_internal_field_is_found(demo_copy):
    workdir, config, _ = demo_copy
    # the seller's export puts ID numbers into a column the schema calls internal
    schema_path = os.path.join(workdir, 'schemas', 'customers.avsc')
    schema = json.load(open(schema_path, encoding='utf-8'))
    for field in schema['fields']:
        if field['name'] == 'national_id':
            field.update(classification='internal', category=None)
    json.dump(schema, open(schema_path, 'w', encoding='utf-8'), ensure_ascii=False)
    result = run(['--config', config])
    found = verify_run(result.run_dir, os.path.join(workdir, 'keys'))
    assert found['identifiers']['customers.national_id']['cn_resident_id']['rows'] > 0
