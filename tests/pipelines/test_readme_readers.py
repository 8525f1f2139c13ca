"""docs/outputs.md's "Reading the delivered data without Novation" code, run exactly as written.

Each example block follows a ``<!-- example: NAME -->`` marker. It runs in a directory where
``delivery/`` is a run directory and ``keys/`` a keyring, and must give the rows Novation's own
reader gives.
"""

import os
import re

import pytest

from tests.conftest import ROOT, keyring_without
from pipelines.decrypt import read_table
from pipelines.migrate import run


def example(name: str) -> str:
    page = open(os.path.join(ROOT, 'docs', 'outputs.md'), encoding='utf-8').read()
    match = re.search(rf'<!-- example: {name} -->\n```python\n(.*?)```', page, re.S)
    assert match, f'docs/outputs.md has no example {name!r}'
    return match.group(1)


def run_examples(place, run_dir, keys, *names) -> dict:
    os.makedirs(place)
    os.symlink(run_dir, os.path.join(place, 'delivery'))
    os.symlink(keys, os.path.join(place, 'keys'))
    namespace = {'__name__': 'readme_example'}
    cwd = os.getcwd()
    os.chdir(place)
    try:
        for name in names:
            exec(compile(example(name), f'docs/outputs.md example {name}', 'exec'), namespace)
    finally:
        os.chdir(cwd)
    return namespace


def test_plain_pyarrow_reads_a_delivered_parquet_table(demo_run, tmp_path):
    workdir, _, result = demo_run
    keys = os.path.join(workdir, 'keys')
    found = run_examples(str(tmp_path / 'a'), result.run_dir, keys, 'common', 'parquet')
    ours, _ = read_table(result.run_dir, keys=keys, table='customers')
    assert found['customers'].num_rows == ours.num_rows > 0
    assert found['customers'].equals(ours)


def test_plain_pyarrow_reads_every_column_but_the_one_whose_key_is_missing(demo_run, tmp_path):
    workdir, _, result = demo_run
    keys = keyring_without(os.path.join(workdir, 'keys'), str(tmp_path / 'analyst'),
                           'column.customers.monthly_income')
    found = run_examples(str(tmp_path / 'b'), result.run_dir, keys, 'common', 'parquet')
    ours, _ = read_table(result.run_dir, keys=os.path.join(workdir, 'keys'), table='customers')
    assert found['customers'].equals(ours.drop_columns(['monthly_income']))


@pytest.fixture
def avro_run(demo_copy):
    workdir, config, _ = demo_copy
    text = open(config, encoding='utf-8').read()
    text = text.replace('format: parquet\n  keys:', 'format: avro\n  keys:').replace(
        'customers.monthly_income: encrypt', 'customers.monthly_income: {method: generalize, '
                                             'bucket: 5000}')
    open(config, 'w', encoding='utf-8').write(text)
    return workdir, run(['--config', config])


def test_plain_tink_and_fastavro_read_a_delivered_avro_table(avro_run, tmp_path):
    workdir, result = avro_run
    keys = os.path.join(workdir, 'keys')
    found = run_examples(str(tmp_path / 'c'), result.run_dir, keys, 'common', 'avro')
    ours, _ = read_table(result.run_dir, keys=keys, table='customers')
    assert found['rows'] == ours.to_pylist() and found['rows']
    assert found['classification']['national_id'] == 'sensitive'


def test_the_readme_seal_check_refuses_an_edited_manifest(demo_run, tmp_path):
    import json
    import shutil
    import tink
    workdir, _, result = demo_run
    copy = str(tmp_path / 'run' / result.manifest['run_id'])
    shutil.copytree(result.run_dir, copy)
    path = os.path.join(copy, 'manifest.json')
    manifest = json.load(open(path, encoding='utf-8'))
    manifest['tables']['customers']['files'] *= 2  # a file listed twice
    json.dump(manifest, open(path, 'w', encoding='utf-8'))
    with pytest.raises(tink.TinkError):
        run_examples(str(tmp_path / 'd'), copy, os.path.join(workdir, 'keys'), 'common')
    shared = str(tmp_path / 'shared')  # the public half of a shared keyring checks it too
    from transforms.keys.admin import share_keyring
    share_keyring(os.path.join(workdir, 'keys'), shared, ['data.footer', 'data.personal'])
    found = run_examples(str(tmp_path / 'e'), result.run_dir, shared, 'common')
    assert found['manifest']['run_id'] == result.manifest['run_id']
