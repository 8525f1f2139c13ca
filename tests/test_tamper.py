"""Tamper sweep: a changed, truncated, cut or swapped delivered file fails; it never decrypts to
other data.

Small files are written with the product's own writers (Parquet, Avro, dead letters), then every
byte is flipped in turn and the file read back. Each read must fail or give exactly the original
plaintext.
"""

import io
import multiprocessing
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config import load_config
from pipelines.decrypt import read_table
from transforms.crypto import file_identity, pme_decryption_properties
from transforms.deadletter import EncryptedJsonLines
from transforms.delivered import avro_records, deadletter_lines
from transforms.keyring import init_keyring, load_keyring
from transforms.write import ParquetFiles, _AvroFiles

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
