"""ReadTable with TestPipeline and assert_that; the undecodable-byte screens."""

import dataclasses

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import local_pipeline
from transforms.common.batches import ROW
from transforms.read.tables import ReadTable


def test_read_table_keeps_row_numbers_and_dead_letters_broken_rows(config, tmp_path):
    table = config.table('customers')
    header = ','.join(table.schema.field_names)
    good = ['C1,张三,M' + ',' * 18, 'C3,李四,F' + ',' * 18]
    broken = 'C2,王五,F,only,five'
    path = tmp_path / 'c.csv'
    path.write_bytes('\n'.join([header, good[0], broken, good[1]]).encode('gbk') + b'\n')
    table = dataclasses.replace(table, path=str(path))
    with local_pipeline() as p:
        out = p | ReadTable(table)
        assert_that(out[ReadTable.ROWS] | beam.FlatMap(lambda b: b.column(ROW).to_pylist()),
                    equal_to([1, 3]), label='rows')
        assert_that(out[ReadTable.DEAD] | beam.Map(
            lambda d: (d.reason, d.stage, d.row, d.problem, d.subject)),
            equal_to([('malformed', 'read', 2, 'expected 21 columns, found 5', 'C2')]),
            label='dead')
        assert_that(out[ReadTable.SOURCES], equal_to([('customers', str(path), 3, [], [], 3)]),
                    label='sources')


@pytest.mark.parametrize('values, expected', [
    (['plain', None, '北京'], False),
    ([None, None], False),
    ([], False),
    (['ok', 'x\ufffdy'], True),
    # U+FFFD (3 bytes) before, across and after the end of the first 1 MB search window
    *[(['a' * ((1 << 20) + shift) + '\ufffd'], True) for shift in (-3, -2, -1, 0, 1)],
])
def test_undecodable_screen_finds_every_replacement_character(values, expected):
    from transforms.read.encodings import may_hold_replacement
    assert may_hold_replacement(pa.array(values, pa.string())) is expected


@pytest.mark.parametrize('data, encoding, offset', [
    ('名字,王五\n'.encode('gbk'), 'utf-8-sig', 0),
    (b'id,name\n1,ok\n2,' + '王'.encode('gbk') + b'\n', 'utf-8-sig', 15),
    (b'a' * (1 << 20) + b'\xff', 'utf-8', 1 << 20),           # across the read chunk size
    ('王五'.encode('gbk') + b'\x81\x20', 'gbk', 4),            # a truncated GBK pair
    ('王五'.encode('gbk'), 'gbk', -1),
])
def test_first_undecodable_byte_is_a_file_offset(tmp_path, data, encoding, offset):
    from transforms.read.encodings import first_undecodable_byte
    path = tmp_path / 'f.csv'
    path.write_bytes(data)
    assert first_undecodable_byte(str(path), encoding) == offset
