"""WriteTable with TestPipeline: encrypted, bound to its place, counted."""

import dataclasses
import io
import os
import re

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
import tink
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import local_pipeline
from tests.stages import GOOD, text_batch
from transforms.common.errors import NovationError
from transforms.common.run import Run
from transforms.conform.conform import conform_batch
from transforms.keys.crypto import file_identity, keyed_ops, pme_decryption_properties
from transforms.keys.keyring import load_keyring
from transforms.mask.mask import mask_batch
from transforms.mask.methods import make_operator
from transforms.write.delivered import avro_records, count_rows
from transforms.write.tables import WriteTable


@pytest.mark.parametrize('output_format', ['parquet', 'avro'])
def test_write_table_encrypts_binds_and_counts_by_source(config, keys_dir, tmp_path,
                                                          output_format):
    table = config.table('customers')
    if output_format == 'avro':  # avro has no per-column keys: deliver the income bucketed
        table = dataclasses.replace(table, rules=tuple(
            dataclasses.replace(r, operator=make_operator('generalize', r.field, 'test',
                                                          {'bucket': 5000}))
            if r.operator.name == 'encrypt' else r for r in table.rules))
    typed, _ = conform_batch(text_batch(table, [GOOD, {**GOOD, 'customer_id': 'C2'}]), table)
    masked = mask_batch(typed, table, keyed_ops(load_keyring(keys_dir)))
    run = Run('r1', str(tmp_path / 'run'), keys_dir)
    with local_pipeline() as p:
        out = p | beam.Create([masked]) | WriteTable(table, output_format, run, keys_dir)
        assert_that(out[WriteTable.WRITTEN], equal_to([(('customers', 'src.csv'), 2)]),
                    label='written')
        assert_that(out[WriteTable.FILES] | beam.Map(
            lambda path: bool(re.fullmatch(r'part-[0-9a-f]{16}\.(parquet|avro\.enc)',
                                           os.path.basename(path)))),
            equal_to([True]), label='files')
    [name] = os.listdir(os.path.join(run.run_dir, 'data', 'customers'))
    assert sorted(os.listdir(run.run_dir)) == ['data']  # temporary files are gone
    path = os.path.join(run.run_dir, 'data', 'customers', name)
    keyring = load_keyring(keys_dir)
    identity = file_identity('r1', f'data/customers/{name}')
    with open(path, 'rb') as f:
        data = f.read()
    if output_format == 'parquet':
        with pytest.raises(OSError):
            pq.read_table(path)  # no keys, no data: the footer itself is encrypted
        assert data[:4] == data[-4:] == b'PARE'  # Parquet magic for an encrypted footer
        back = pq.read_table(path, decryption_properties=pme_decryption_properties(keyring,
                                                                                   identity))
        assert back.schema.names == table.delivered_schema.names
        rows = back.to_pylist()
    else:
        schema, records = avro_records(io.BytesIO(data), keyring, identity)
        rows = list(records)
        assert [f['name'] for f in schema['fields']] == table.delivered_schema.names
        assert schema['fields'][0]['classification'] == 'personal'
    assert [r['customer_id'] for r in rows] == masked.column('customer_id').to_pylist()
    with pytest.raises((OSError, NovationError, tink.TinkError)):  # bound to run and place
        count_rows(output_format, io.BytesIO(data), keyring,
                   file_identity('r2', f'data/customers/{name}'))


def test_write_table_writes_one_empty_file_for_no_rows(config, keys_dir, tmp_path):
    table = config.table('contracts')
    run = Run('r1', str(tmp_path / 'run'), keys_dir)
    with local_pipeline() as p:
        out = p | beam.Create([]) | WriteTable(table, 'parquet', run, keys_dir)
        assert_that(out[WriteTable.FILES] | beam.Map(lambda path: 1), equal_to([1]))
    [name] = os.listdir(os.path.join(run.run_dir, 'data', 'contracts'))
    with open(os.path.join(run.run_dir, 'data', 'contracts', name), 'rb') as f:
        assert count_rows('parquet', f, load_keyring(keys_dir),
                          file_identity('r1', f'data/contracts/{name}')) == 0
