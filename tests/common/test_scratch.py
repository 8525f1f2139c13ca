"""Scratch files: per-customer state between stages, encrypted and bound to their run and name."""

import os

import numpy as np
import pyarrow as pa
import pytest
import tink

from transforms.common.batches import with_provenance
from transforms.common.scratch import MAX_PARTITIONS, PARTITION_BYTES, Scratch, partitions_for, \
    write_partitions
from transforms.common.sorted_keys import fixed_width, keys_of, partition_of, sorted_run

SUBJECTS = ['王小明110105199001011234', 'C0000042', 'C0000042', 'zoe@example.com']


@pytest.fixture
def scratch(tmp_path, keys_dir):
    return Scratch(str(tmp_path / 'scratch'), keys_dir, 'run-1')


def written(scratch, parts=1):
    keys, rows = sorted_run(fixed_width(pa.array(SUBJECTS)), np.arange(len(SUBJECTS)))
    return keys, rows, write_partitions(scratch, 'keys', parts, keys,
                                        {'row': pa.array(rows), 'code': keys})


def test_a_scratch_file_reads_back_and_shows_no_key(scratch):
    keys, rows, [(partition, path)] = written(scratch)
    assert partition == 0
    back = scratch.read(path)
    assert keys_of(back.column('key')).tolist() == keys.tolist()
    assert back.column('row').to_pylist() == rows.tolist()
    assert keys_of(back.column('code')).tolist() == keys.tolist()  # NumPy columns too
    data = open(path, 'rb').read()
    for subject in SUBJECTS:
        assert subject.encode('utf-8') not in data
        assert subject.encode('utf-8')[:6] not in data


def test_each_key_lands_in_its_partition(scratch):
    keys, _, files = written(scratch, parts=3)
    seen = []
    for p, path in files:
        part = keys_of(scratch.read(path).column('key'))
        assert (partition_of(part, 3) == p).all() and (np.sort(part) == part).all()
        seen += part.tolist()
    assert sorted(seen) == sorted(keys.tolist()) and len({p for p, _ in files}) == len(files)


def test_a_scratch_file_is_bound_to_its_run_name_and_bytes(scratch, keys_dir, tmp_path):
    _, _, [(_, path)] = written(scratch)
    assert scratch.read(path).num_rows == len(SUBJECTS)
    with pytest.raises(tink.TinkError):
        Scratch(scratch.directory, keys_dir, 'run-2').read(path)
    moved = os.path.join(scratch.directory, 'keys-1-' + os.path.basename(path)[7:])
    os.rename(path, moved)
    with pytest.raises(tink.TinkError):
        scratch.read(moved)
    os.rename(moved, path)
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 1
    open(path, 'wb').write(bytes(data))
    with pytest.raises(tink.TinkError):
        scratch.read(path)



def parked(scratch):
    """Three batches of rows from two sources (each batch its own dictionary of sources), as
    the duplicate check parks them."""
    batches = [with_provenance(pa.record_batch({'customer_id': SUBJECTS[i:i + 2]}), source,
                               np.arange(i + 1, i + 3)) for i, source in
               [(0, 'a.csv'), (2, 'a.csv'), (1, 'gs://b/c.csv')]]
    file = scratch.batch_file('rows-customers', batches[0].schema)
    for batch in batches:
        file.write(batch)
    assert file.rows == 6
    return batches, file.close()


def test_parked_rows_come_back_batch_by_batch_and_show_no_subject(scratch):
    batches, path = parked(scratch)
    back = list(scratch.read_batches(path))
    assert [b.to_pylist() for b in back] == [b.to_pylist() for b in batches]
    data = open(path, 'rb').read()
    for subject in SUBJECTS:
        assert subject.encode('utf-8')[:6] not in data


def test_parked_rows_are_bound_to_their_run_and_bytes(scratch, keys_dir):
    _, path = parked(scratch)
    with pytest.raises(tink.TinkError):
        list(Scratch(scratch.directory, keys_dir, 'run-2').read_batches(path))
    data = bytearray(open(path, 'rb').read())
    data[len(data) - 20] ^= 1  # the last segment: earlier batches may already have been read
    open(path, 'wb').write(bytes(data))
    with pytest.raises(tink.TinkError):
        list(scratch.read_batches(path))

def test_remove_deletes_the_directory_and_tolerates_none(scratch):
    written(scratch)
    scratch.remove()
    assert not os.path.exists(scratch.directory)
    scratch.remove()


@pytest.mark.parametrize('size, parts', [
    (0, 1), (1, 1), (PARTITION_BYTES, 1), (PARTITION_BYTES + 1, 2), (46 * PARTITION_BYTES, 46),
    (10 * MAX_PARTITIONS * PARTITION_BYTES, MAX_PARTITIONS)])
def test_partitions_follow_the_input_size(size, parts):
    assert partitions_for(size) == parts


def test_group_in_scratch_gathers_each_shard_from_several_inputs(scratch, monkeypatch):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that
    from tests.conftest import local_pipeline
    from transforms.common import scratch as module
    monkeypatch.setattr(module, 'SPILL_BYTES', 64)  # a file every few tables

    def items(tag, n):
        return [(i % 3, (kind, pa.table({'id': [f'{tag}{i}'], kind: [i]})))
                for i in range(n) for kind in ('a', 'b')]

    def check(gathered):
        assert sorted(shard for shard, _ in gathered) == [0, 1, 2]
        for shard, kinds in gathered:
            for kind in ('a', 'b'):
                ids = sorted(i for k, t in kinds if k == kind for i in t.column('id').to_pylist())
                assert ids == sorted([f'x{i}' for i in range(10) if i % 3 == shard]
                                     + [f'y{i}' for i in range(7) if i % 3 == shard])
        files = os.listdir(scratch.directory)
        assert len(files) > 6 and all(f.endswith('.arrows') for f in files)

    with local_pipeline() as p:
        x = p | 'X' >> beam.Create(items('x', 10))
        y = p | 'Y' >> beam.Create(items('y', 7))
        gathered = (x, y) | module.GroupInScratch(scratch, 'test', 4)
        assert_that(gathered, check)
