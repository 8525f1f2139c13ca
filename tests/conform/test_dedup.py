"""DropDuplicates with TestPipeline: keep latest or none, parked rows on scratch."""

import dataclasses

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import local_pipeline
from tests.stages import GOOD, text_batch
from transforms.common.batches import ROW, with_provenance
from transforms.conform.conform import conform_batch
from transforms.read.tables import ReadTable


@pytest.mark.parametrize('parts', [1, 4])
def test_duplicates_keep_latest_refuses_older_copies_only(config, tmp_path, scratch, parts):
    from transforms.conform.dedup import DropDuplicates
    table = config.table('customers')
    assert table.keep_duplicates == 'latest' and table.order_by == 'updated_at'
    header = ','.join(table.schema.field_names)

    def line(cid, updated):
        values = {n: '' for n in table.schema.field_names}
        values.update(customer_id=cid, created_at='2020-01-01 00:00:00', updated_at=updated)
        return ','.join(values[n] for n in table.schema.field_names)

    path = tmp_path / 'c.csv'
    path.write_bytes('\n'.join([header, line('A', '2024-01-01 00:00:00'),
                                line('B', '2024-01-01 00:00:00'),
                                line('A', '2024-06-01 00:00:00'),
                                line('A', '2023-01-01 00:00:00')]).encode('gbk') + b'\n')
    table = dataclasses.replace(table, path=str(path))
    with local_pipeline() as p:
        conformed = (p | ReadTable(table))[ReadTable.ROWS] | 'Conform' >> beam.ParDo(
            lambda b: [conform_batch(b, table)[0]])
        out = conformed | DropDuplicates(table, scratch, parts=parts)
        assert_that(out[DropDuplicates.ROWS] | beam.FlatMap(
            lambda b: list(zip(b.column('customer_id').to_pylist(),
                               b.column(ROW).to_pylist()))),
            equal_to([('A', 3), ('B', 2)]), label='rows')
        assert_that(out[DropDuplicates.DEAD] | beam.Map(lambda d: (d.reason, d.row, d.field)),
                    equal_to([('duplicate_key', 1, 'customer_id'),
                              ('duplicate_key', 4, 'customer_id')]), label='dead')


def test_parking_rolls_files_and_flushes_each_bundle(scratch, monkeypatch):
    from transforms.conform import dedup
    monkeypatch.setattr(dedup, 'PARK_ROWS', 3)
    park = dedup._ParkRowsFn(scratch, 'customers')

    def batch(ids, source='a.csv'):
        return with_provenance(pa.record_batch({'customer_id': ids}), source, np.arange(
            1, len(ids) + 1))
    wider = pa.record_batch({'customer_id': ['C9'], 'x': [1]})
    batches = [batch(['C1', 'C2']), batch([]), batch(['C3'], 'b.csv'), batch(['C4']), wider,
               batch(['C5'])]
    park.start_bundle()
    paths = [path for b in batches for path in park.process(b)]
    paths += [wv.value for wv in park.finish_bundle()]
    files = [[r for b in scratch.read_batches(path) for r in b.to_pylist()] for path in paths]
    # full at 3 rows; a batch of another schema starts a new file; the rest at the bundle's end
    assert [[r['customer_id'] for r in f] for f in files] == [['C1', 'C2', 'C3'], ['C4'],
                                                               ['C9'], ['C5']]
    assert files[0][2]['__source'] == 'b.csv'
    park.start_bundle()
    assert list(park.finish_bundle()) == []  # an empty bundle writes nothing


def test_duplicates_keep_none_refuses_every_copy(config):
    from transforms.conform.dedup import duplicate_rows
    table = dataclasses.replace(config.table('customers'), keep_duplicates='none',
                                order_by=None)
    typed, _ = conform_batch(text_batch(table, [GOOD, {**GOOD, 'customer_id': 'C2'}, GOOD]),
                             table)
    assert duplicate_rows(typed, table, {'C1': None}).tolist() == [True, False, True]
    assert duplicate_rows(typed, table, {}).tolist() == [False, False, False]
