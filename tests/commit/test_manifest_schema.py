"""The manifest's published shape: what the writer builds fits it, and a reader refuses, in
one line naming the place, a manifest that does not."""

import copy
import dataclasses

import pytest

from transforms.commit.manifest import build_manifest
from transforms.commit.manifest_schema import MANIFEST_FORMAT, check
from transforms.common.errors import NovationError
from transforms.common.run import Run

RUN = Run('20261207T120000Z-abcdef', 'out/r', 'keys', config_sha256='a' * 64,
          plan_sha256='b' * 64, tables=('t',), max_ratio=0.1, config='c.yaml',
          fields={'t': [{'name': 'id', 'classification': 'personal', 'category': None,
                         'masking': 'hash', 'domain': 'id'}]},
          column_keys={'t': {'data.personal': ['id']}}, subject_keys={'t': 'id'},
          transfer={'seller': 'S', 'acquirer': 'A'},
          key_ids={'data.personal': {'primary': 7, 'keys': [7]}})


def manifest():
    counts = {('read', 't', 's.csv', ''): 3, ('written', 't', 's.csv', ''): 2,
              ('dead', 't', 's.csv', 'no_consent'): 1, ('lines', 't', 's.csv', ''): 3}
    files = [{'table': 't', 'kind': 'data', 'path': 'data/t/part-0123456789abcdef.parquet',
              'rows': 2, 'bytes': 100, 'crc32c': '0a1b2c3d', 'keys': {'data.personal': 7}},
             {'table': 't', 'kind': 'deadletter', 'path': 'deadletter/t/part-1.jsonl.enc',
              'rows': 1, 'bytes': 50, 'crc32c': 'ffffffff', 'keys': {'deadletter': 3}}]
    return build_manifest(RUN, counts, files)


def test_what_the_writer_builds_fits_the_schema():
    m = manifest()
    assert m['format'] == MANIFEST_FORMAT
    assert check(m, 'm') is m
    assert check(build_manifest(dataclasses.replace(RUN, replay_of='r0'), {}, []), 'm')


def _set(path, value):
    def edit(m):
        *parents, last = path
        for key in parents:
            m = m[key]
        if value is KeyError:
            del m[last]
        else:
            m[last] = value
    return edit


@pytest.mark.parametrize('edit, place, what', [
    (_set(['format'], 'novation-manifest/9'), 'format', 'is not novation-manifest/1'),
    (_set(['tables'], []), 'tables', 'is not what'),
    (_set(['tables', 't', 'files', 0, 'crc32c'], '0a1b'), 'tables.t.files[0].crc32c',
     'is not in its form'),
    (_set(['tables', 't', 'files', 0, 'rows'], -1), 'tables.t.files[0].rows', 'is not what'),
    (_set(['tables', 't', 'files', 0, 'rows'], '2'), 'tables.t.files[0].rows', 'is not what'),
    (_set(['tables', 't', 'files', 0, 'extra'], 1), 'tables.t.files[0]', 'has an unknown key'),
    (_set(['tables', 't', 'deadletter_files', 0, 'path'], KeyError),
     'tables.t.deadletter_files[0]', 'lacks a required key'),
    (_set(['tables', 't', 'dead_letters', 'lost'], 1), 'tables.t.dead_letters',
     'names an unknown key'),
    (_set(['tables', 't', 'format'], 'csv'), 'tables.t.format', 'is not one of the allowed'),
    (_set(['run_id'], '../etc'), 'run_id', 'is not in its form'),
    (_set(['config_sha256'], 'x'), 'config_sha256', 'is not in its form'),
    (_set(['sources'], KeyError), 'the manifest', 'lacks a required key'),
])
def test_a_manifest_of_another_shape_is_refused_naming_the_place(edit, place, what):
    m = copy.deepcopy(manifest())
    edit(m)
    with pytest.raises(NovationError) as e:
        check(m, 'RUN/manifest.json')
    assert str(e.value).startswith(f'RUN/manifest.json: {place} {what}')
    assert str(e.value).endswith('the manifest is refused')


EPOCH = {
    'format': 'novation-epoch/1', 'run_id': 'stream-20261207T120000Z-abcdef', 'epoch': 2,
    'committed_at': '2026-12-07T12:00:05+00:00', 'previous_manifest_sha256': 'c' * 64,
    'latest_change_at': '2026-12-07T12:00:01+00:00', 'plan_sha256': 'b' * 64,
    'config_sha256': 'a' * 64, 'audit_started_sha256': None,
    'tables': {'t': {'rows_written': 2, 'ops': {'c': 1, 'd': 1},
                     'dead_letters': {'no_consent': 1}}},
    'retractions': 0, 'retraction_ids': [], 'backfill': {},
    'files': [{'table': 't', 'kind': 'data', 'path': 'epochs/000002/data/t/part-1.parquet',
               'rows': 2, 'bytes': 10, 'crc32c': '0a1b2c3d', 'keys': {'data.personal': 7}}],
    'files_read': [], 'held_columns': {},
    'sources': [{'path': 'data/a.jsonl', 'first_line': 1, 'last_line': 3, 'changes': 3}],
    'consumed': [{'path': 'data/a.jsonl', 'lines': [[1, 3]]}],
    'outcomes': {'data/a.jsonl': {'delivered': 2, 'dead_letter': 1}},
}


@pytest.mark.parametrize('edit, place, what', [
    (_set(['epoch'], 0), 'epoch', 'is not what'),
    (_set(['tables', 't', 'ops', 'x'], 1), 'tables.t.ops', 'names an unknown key'),
    (_set(['files', 0, 'kind'], 'other'), 'files[0].kind', 'is not one of the allowed'),
    (_set(['consumed', 0, 'lines'], [[1]]), 'consumed[0].lines[0]', 'is not what'),
    (_set(['previous_manifest_sha256'], 'x'), 'previous_manifest_sha256', 'is not what'),
    (_set(['format'], 'novation-manifest/1'), 'format', 'is not novation-epoch/1'),
])
def test_an_epoch_manifest_of_another_shape_is_refused_naming_the_place(edit, place, what):
    from transforms.commit.manifest_schema import check_epoch
    assert check_epoch(copy.deepcopy(EPOCH), 'e') == EPOCH
    m = copy.deepcopy(EPOCH)
    edit(m)
    with pytest.raises(NovationError) as e:
        check_epoch(m, 'OUT/s: epoch 000002')
    assert str(e.value).startswith(f'OUT/s: epoch 000002: {place} {what}')
