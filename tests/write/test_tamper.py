"""Tamper sweep: a changed, truncated, cut or swapped delivered file fails; it never decrypts to
other data.

Small files are written with the product's own writers (Parquet, Avro, dead letters), then every
byte is flipped in turn and the file read back. Each read must fail or give exactly the original
plaintext.
"""

import io
import json
import multiprocessing
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config import load_config
from pipelines.decrypt import read_table
from transforms.keys.crypto import file_identity, pme_decryption_properties
from transforms.write.deadletter import EncryptedJsonLines
from transforms.write.delivered import avro_records, deadletter_lines
from transforms.keys.admin import init_keyring
from transforms.keys.keyring import load_keyring
from transforms.write.tables import ParquetFiles, _AvroFiles

RUN = 'r-tamper'


class _Kept(io.BytesIO):
    """An in-memory file whose bytes survive ``close`` (writers close their file)."""

    def close(self):
        self.value = self.getvalue()
        super().close()


def written(file_format, values, identity) -> bytes:
    handle = _Kept()
    state = file_format.open(handle, identity)
    for value in values:
        file_format.write(state, value)
    file_format.close(state)
    return handle.value


def read_parquet(data, keyring, identity):
    return pq.ParquetFile(pa.BufferReader(data), decryption_properties=pme_decryption_properties(
        keyring, identity)).read().to_pylist()


def read_avro(data, keyring, identity):
    return list(avro_records(io.BytesIO(data), keyring, identity)[1])


def read_deadletters(data, keyring, identity):
    return list(deadletter_lines(io.BytesIO(data), keyring, identity))


READERS = {'parquet': read_parquet, 'avro': read_avro, 'deadletter': read_deadletters}
SUFFIX = {'parquet': '.parquet', 'avro': '.avro.enc', 'deadletter': '.jsonl.enc'}


def identity(kind, table, n=0):
    folder = 'deadletter' if kind == 'deadletter' else 'data'
    return file_identity(RUN, f'{folder}/{table}/part-{n:016x}{SUFFIX[kind]}')


@pytest.fixture(scope='module')
def delivered(demo_run):
    """Three delivered rows of collection_calls (and three dead letters) as small files."""
    workdir, _, result = demo_run
    keys = os.path.join(workdir, 'keys')
    table = load_config(os.path.join(workdir, 'demo.yaml')).table('collection_calls')
    rows, _ = read_table(result.run_dir, keys=keys, table='collection_calls')
    batch = rows.slice(0, 3).cast(table.delivered_schema).to_batches()
    lines = [b'{"reason": "malformed", "row": %d, "raw": {"notes": "x"}}' % i for i in range(3)]
    formats = {'parquet': (ParquetFiles(table, keys), batch),
               'avro': (_AvroFiles(table, keys), batch),
               'deadletter': (EncryptedJsonLines(keys), lines)}
    files = {kind: [written(fmt, values, identity(kind, table.name, n)) for n in (0, 1)]
             for kind, (fmt, values) in formats.items()}
    return keys, table.name, files


def outcome(kind, data, keys, ident, expected):
    try:
        got = READERS[kind](data, load_keyring_cached(keys), ident)
    except Exception:  # noqa: BLE001 - any failure to read is the wanted outcome
        return 'rejected'
    return 'identical' if got == expected else 'DIFFERENT'


_KEYRINGS = {}


def load_keyring_cached(keys):
    if keys not in _KEYRINGS:
        _KEYRINGS[keys] = load_keyring(keys, warn=False)
    return _KEYRINGS[keys]


def _flip_sweep(args):
    kind, data, keys, ident, expected, chunk = args
    counts = {'rejected': 0, 'identical': 0, 'DIFFERENT': 0, 'identical_at': []}
    for i in chunk:
        changed = bytearray(data)
        changed[i] ^= 0x01  # the smallest change: one bit
        result = outcome(kind, bytes(changed), keys, ident, expected)
        counts[result] += 1
        if result == 'identical':
            counts['identical_at'].append(i)
    return counts


@pytest.mark.parametrize('kind', ['parquet', 'avro', 'deadletter'])
def test_every_flipped_byte_is_rejected_or_harmless(delivered, kind, capsys):
    keys, table, files = delivered
    data, ident = files[kind][0], identity(kind, table)
    expected = READERS[kind](data, load_keyring_cached(keys), ident)
    assert expected  # the file holds rows
    where = range(len(data))
    chunks = [(kind, data, keys, ident, expected, where[k::2]) for k in range(2)]
    with multiprocessing.get_context('fork').Pool(2) as pool:
        results = pool.map(_flip_sweep, chunks)
    total = {k: sum(r[k] for r in results) for k in ('rejected', 'identical', 'DIFFERENT')}
    harmless = sorted(i for r in results for i in r['identical_at'])
    with capsys.disabled():
        print(f'\n  tamper sweep {kind}: {len(data)} bytes flipped one at a time: '
              f'{total["rejected"]} rejected, {total["identical"]} read identical '
              f'(at {harmless[:12]}), {total["DIFFERENT"]} different')
    assert total['DIFFERENT'] == 0
    assert total['rejected'] >= 0.95 * len(where)


@pytest.mark.parametrize('kind', ['parquet', 'avro', 'deadletter'])
def test_truncated_files_are_rejected(delivered, kind):
    keys, table, files = delivered
    data, ident = files[kind][0], identity(kind, table)
    step = 1 if kind != 'parquet' else 7
    cuts = sorted(set(range(0, len(data), step)) | set(range(max(0, len(data) - 64), len(data))))
    for cut in cuts:
        assert outcome(kind, data[:cut], keys, ident, None) == 'rejected', cut


@pytest.mark.parametrize('kind', ['parquet', 'avro', 'deadletter'])
def test_swapped_or_moved_files_are_rejected(delivered, kind, tmp_path):
    keys, table, files = delivered
    first, second = files[kind]
    # two shards swapped: each file read in the other's place
    assert outcome(kind, first, keys, identity(kind, table, 1), None) == 'rejected'
    assert outcome(kind, second, keys, identity(kind, table, 0), None) == 'rejected'
    # the same place in another run, or another table
    path = identity(kind, table)[len(RUN) + 1:]
    assert outcome(kind, first, keys, file_identity('r-other', path), None) == 'rejected'
    assert outcome(kind, first, keys, identity(kind, 'customers'), None) == 'rejected'
    # another keyring
    other = str(tmp_path / 'other')
    init_keyring(other)
    assert outcome(kind, first, other, identity(kind, table), None) == 'rejected'


def test_a_dropped_segment_is_rejected(demo_run, tmp_path):
    """A stream over several 1 MiB segments with one segment cut out, and a Parquet file with a
    middle range cut out, both fail."""
    workdir, _, result = demo_run
    keys = os.path.join(workdir, 'keys')
    lines = [os.urandom(300).hex().encode() for _ in range(6000)]  # ~3.6 MB, incompressible
    ident = identity('deadletter', 'customers')
    data = written(EncryptedJsonLines(keys), lines, ident)
    assert len(data) > 3 << 20
    segment = 1 << 20  # AES256_GCM_HKDF_1MB: ciphertext segments of 1 MiB
    assert read_deadletters(data, load_keyring_cached(keys), ident) == [x + b'\n' for x in lines]
    for k in (1, 2):
        cut = data[:k * segment] + data[(k + 1) * segment:]
        assert outcome('deadletter', cut, keys, ident, None) == 'rejected', k
    assert outcome('deadletter', data[:3 * segment], keys, ident, None) == 'rejected'
    # Parquet: cut a range out of the middle of a delivered file
    parquet = next(f for f in result.manifest['tables']['customers']['files'])
    blob = open(os.path.join(result.run_dir, parquet['path']), 'rb').read()
    pident = file_identity(result.manifest['run_id'], parquet['path'])
    third = len(blob) // 3
    assert outcome('parquet', blob[:third] + blob[2 * third:], keys, pident, None) == 'rejected'


# ---------------------------------------------------------------------------------------------
# A delivered run tampered with as an attacker would: the data file's bytes flipped inside each
# column kind's chunks, with the manifest's size and crc32c rewritten to match and the manifest
# sealed again (as if the attacker held the manifest key), so what is tested is the encryption
# of every column; and the manifest itself edited without the key.

FLIPS_PER_PLACE = 120


def _copy_run(result, tmp_path, name='run'):
    import shutil
    copy = str(tmp_path / name / result.manifest['run_id'])
    shutil.copytree(result.run_dir, copy)
    return copy


def _reseal(run_dir, manifest, keys):
    from transforms.keys.seal import seal_of
    data = json.dumps(manifest, ensure_ascii=False, indent=2).encode('utf-8') + b'\n'
    with open(os.path.join(run_dir, 'manifest.json'), 'wb') as f:
        f.write(data)
    with open(os.path.join(run_dir, 'manifest.json.seal'), 'wb') as f:
        f.write(seal_of(load_keyring_cached(keys), f'{manifest["run_id"]}/manifest.json', data))


def _places(blob, keyring, ident, column_keys):
    """Byte ranges of each key role's column chunks in a Parquet file, and its footer."""
    role_of = {c: role for role, cols in column_keys.items() for c in cols}
    meta = pq.ParquetFile(pa.BufferReader(blob), decryption_properties=pme_decryption_properties(
        keyring, ident)).metadata
    places = {}
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            start = col.dictionary_page_offset or col.data_page_offset
            places.setdefault(role_of[col.path_in_schema], []).extend(
                range(start, start + col.total_compressed_size))
    footer_length = int.from_bytes(blob[-8:-4], 'little')
    places['footer'] = list(range(len(blob) - 8 - footer_length, len(blob) - 8))
    return places


def test_flips_in_every_column_kind_fail_even_with_the_manifest_rewritten(demo_run, tmp_path,
                                                                         capsys):
    import random
    import google_crc32c
    workdir, _, result = demo_run
    keys = os.path.join(workdir, 'keys')
    keyring = load_keyring_cached(keys)
    run_dir = _copy_run(result, tmp_path)
    pristine = json.load(open(os.path.join(run_dir, 'manifest.json'), encoding='utf-8'))
    rng = random.Random(19)
    figures = {}
    for table in ('customers', 'contracts'):
        entry = pristine['tables'][table]
        listed = entry['files'][0]
        path = os.path.join(run_dir, listed['path'])
        blob = open(path, 'rb').read()
        ident = file_identity(pristine['run_id'], listed['path'])
        expected = read_table(run_dir, keys=keys, table=table)[0]
        for role, where in _places(blob, keyring, ident, entry['column_keys']).items():
            if table == 'contracts' and role != 'data.footer':
                continue  # contracts add the public column kind; the rest is in customers
            counts = figures.setdefault(role, {'tried': 0, 'rejected': 0, 'identical': 0,
                                               'changed': 0})
            for i in rng.sample(where, min(FLIPS_PER_PLACE, len(where))):
                changed = bytearray(blob)
                changed[i] ^= 1 << rng.randrange(8)
                with open(path, 'wb') as f:
                    f.write(changed)
                manifest = json.loads(json.dumps(pristine))
                manifest['tables'][table]['files'][0].update(
                    bytes=len(changed), crc32c=f'{google_crc32c.value(bytes(changed)):08x}')
                _reseal(run_dir, manifest, keys)
                counts['tried'] += 1
                try:
                    got = read_table(run_dir, keys=keys, table=table)[0]
                except Exception:  # noqa: BLE001 - any refusal is the wanted outcome
                    counts['rejected'] += 1
                    continue
                counts['identical' if got.equals(expected) else 'changed'] += 1
        with open(path, 'wb') as f:
            f.write(blob)
    _reseal(run_dir, pristine, keys)
    with capsys.disabled():
        for role, c in sorted(figures.items()):
            print(f'\n  flips in {role:32s} {c["tried"]} tried, {c["rejected"]} rejected, '
                  f'{c["identical"]} identical, {c["changed"]} changed', end='')
        print()
    assert set(figures) == {'data.footer', 'footer', 'data.internal', 'data.personal',
                            'data.sensitive', 'column.customers.monthly_income'}
    assert all(c['changed'] == 0 and c['tried'] == FLIPS_PER_PLACE for c in figures.values())
    assert all(c['rejected'] >= 0.9 * c['tried'] for c in figures.values())


def _edits(manifest):
    """Edits an operator or attacker might make to a manifest (found by trying them)."""
    def twice(m):
        m['tables']['customers']['files'].append(m['tables']['customers']['files'][0])

    def dead_letter_left_out(m):
        m['tables']['customers']['deadletter_files'].pop()

    def emptied(m):
        m['tables']['customers']['files'] = []

    def field_removed(m):
        m['tables']['customers']['fields'] = [f for f in m['tables']['customers']['fields']
                                              if f['name'] != 'national_id']

    def outside(m):
        m['tables']['customers']['files'][0]['path'] = '/etc/passwd'

    def climbing(m):
        m['tables']['customers']['files'][0]['path'] = '../other/data.parquet'

    def no_crc(m):
        del m['tables']['customers']['files'][0]['crc32c']

    return {'listed twice': twice, 'dead letter left out': dead_letter_left_out,
            'files emptied': emptied, 'field removed': field_removed,
            'path outside': outside, 'path climbing': climbing, 'no crc32c': no_crc}


@pytest.mark.parametrize('edit', list(_edits(None)))
def test_an_edited_manifest_is_refused_by_every_reader(demo_run, tmp_path, edit):
    from pipelines.incident import assess_incident
    from pipelines.review import select
    from pipelines.verify import verify_run
    from transforms.common.errors import NovationError
    workdir, _, result = demo_run
    keys = os.path.join(workdir, 'keys')
    run_dir = _copy_run(result, tmp_path)
    manifest = json.load(open(os.path.join(run_dir, 'manifest.json'), encoding='utf-8'))
    first = manifest['tables']['customers']['files'][0]['path']
    _edits(manifest)[edit](manifest)
    with open(os.path.join(run_dir, 'manifest.json'), 'w', encoding='utf-8') as f:
        json.dump(manifest, f, ensure_ascii=False, indent=2)
    readers = {
        'decrypt': lambda: read_table(run_dir, keys=keys, table='customers'),
        'dead letters': lambda: read_deadletters_of(run_dir, keys),
        'verify': lambda: verify_run(run_dir, keys),
        'review': lambda: select(run_dir, keys, {}),
        'incident': lambda: assess_incident(run_dir, first, keys),
    }
    for name, reader in readers.items():
        with pytest.raises(NovationError, match='not the manifest the run sealed'):
            reader()
    # sealed again by the key holder itself, a path outside the run or a missing crc32c is
    # still refused: the manifest is not a way to open any file
    if edit in ('path outside', 'path climbing', 'no crc32c'):
        _reseal(run_dir, manifest, keys)
        why = 'files\\[0\\] lacks a required key' if edit == 'no crc32c' else \
            'is not a place inside the run directory'
        with pytest.raises(NovationError, match=why):
            read_table(run_dir, keys=keys, table='customers')


def read_deadletters_of(run_dir, keys):
    from pipelines.decrypt import read_deadletters
    return read_deadletters(run_dir, keys=keys, table='customers')


@pytest.mark.parametrize('text, why', [
    (b'{"tables": ', 'is not valid JSON'),
    (b'[1, 2]', 'names no run id'),
    (b'', 'is not valid JSON'),
])
def test_a_manifest_that_is_not_one_is_one_line(demo_run, tmp_path, text, why):
    from transforms.common.errors import NovationError
    workdir, _, result = demo_run
    run_dir = _copy_run(result, tmp_path)
    with open(os.path.join(run_dir, 'manifest.json'), 'wb') as f:
        f.write(text)
    with pytest.raises(NovationError, match=why):
        read_table(run_dir, keys=os.path.join(workdir, 'keys'), table='customers')


def test_a_manifest_without_its_seal_or_under_another_run_id_is_refused(demo_run, tmp_path):
    from transforms.common.errors import NovationError
    workdir, _, result = demo_run
    keys = os.path.join(workdir, 'keys')
    run_dir = _copy_run(result, tmp_path)
    manifest = json.load(open(os.path.join(run_dir, 'manifest.json'), encoding='utf-8'))
    renamed = _copy_run(result, tmp_path, 'renamed')  # a run copied elsewhere still reads
    assert read_table(renamed, keys=keys, table='customers')[0].num_rows
    manifest['run_id'] = 'another-run'  # what a seal names cannot be changed
    with open(os.path.join(run_dir, 'manifest.json'), 'w', encoding='utf-8') as f:
        json.dump(manifest, f)
    with pytest.raises(NovationError, match='not the manifest the run sealed'):
        read_table(run_dir, keys=keys, table='customers')
    os.remove(os.path.join(run_dir, 'manifest.json.seal'))
    with pytest.raises(NovationError, match='has no seal'):
        read_table(run_dir, keys=keys, table='customers')
