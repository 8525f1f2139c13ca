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
    from transforms.detect.detectors import scan
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


def test_verify_authenticates_the_pseudonym_and_token_columns_too(demo_run):
    """A crc32c can be forged to match; AES-GCM cannot: verify decrypts every column it can,
    including those it does not scan (hash, tokenize), so a changed chunk of one is found."""
    import pyarrow as pa
    from pipelines.decrypt import load_manifest
    from pipelines.verify import _scan_file, readable_columns
    from transforms.keys.crypto import file_identity
    from transforms.write.delivered import parquet_file
    from transforms.keys.keyring import load_keyring
    workdir, _, result = demo_run
    keys = os.path.join(workdir, 'keys')
    keyring = load_keyring(keys, warn=False)
    manifest = load_manifest(result.run_dir, keys)
    entry = manifest['tables']['customers']
    fields = {f['name']: f for f in entry['fields']}
    readable, _ = readable_columns(entry, keyring)
    f = entry['files'][0]
    identity = file_identity(manifest['run_id'], f['path'])
    data = bytearray(open(os.path.join(result.run_dir, f['path']), 'rb').read())
    meta = parquet_file(pa.BufferReader(bytes(data)), keyring, identity).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chunk = meta.row_group(0).column(names.index('customer_id'))  # hash: not scanned
    assert fields['customer_id']['masking'] == 'hash'
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x01
    scanned = [c for c in readable if fields[c]['masking'] not in ('hash', 'tokenize')]
    # reading only the scanned columns would not notice
    assert _scan_file('parquet', bytes(data), keyring, identity, scanned, scanned, fields,
                      'customers', {}) == f['rows']
    with pytest.raises(Exception):
        _scan_file('parquet', bytes(data), keyring, identity, readable, scanned, fields,
                   'customers', {})
