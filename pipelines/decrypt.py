"""Read a finished run back: verify files against the manifest, decrypt, export.

Used by ``novation decrypt`` (the acquirer's and the compliance operator's way in) and by tests.
"""

import io
import json

from apache_beam.io.filesystems import FileSystems
import google_crc32c
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from transforms.crypto import DATA_ROLES, load_keyring, pme_decryption_properties
from transforms.deadletter import deadletter_associated_data
from transforms.errors import NovationError
from transforms.files import join, read_bytes
from transforms.manifest import MANIFEST_FILE

__all__ = ['decrypt_table', 'load_manifest', 'read_deadletters', 'read_table']


def load_manifest(run_dir: str) -> dict:
    path = join(run_dir, MANIFEST_FILE)
    if not FileSystems.exists(path):
        raise NovationError(f'{run_dir} has no {MANIFEST_FILE}: the run is incomplete or this '
                            f'is not a run directory')
    return json.loads(read_bytes(path, what='manifest').decode('utf-8'))


def _verified_bytes(run_dir, entry) -> bytes:
    data = read_bytes(join(run_dir, entry['path']), what='output file')
    if len(data) != entry['bytes'] or google_crc32c.value(data) != int(entry['crc32c'], 16):
        raise NovationError(f'{entry["path"]} does not match the manifest (size or crc32c): '
                            f'the file was changed after the run')
    return data


def _table_entry(manifest, table):
    if table not in manifest['tables']:
        raise NovationError(f'no table {table!r} in run {manifest["run_id"]}; tables: '
                            f'{", ".join(manifest["tables"])}')
    return manifest['tables'][table]


def read_table(run_dir: str, *, keys: str, table: str) -> pa.Table:
    """All delivered rows of ``table``, decrypted with the keyring's data keys."""
    manifest = load_manifest(run_dir)
    entry = _table_entry(manifest, table)
    props = pme_decryption_properties(load_keyring(keys, DATA_ROLES))
    parts = []
    for f in entry['files']:
        data = _verified_bytes(run_dir, f)
        try:
            parts.append(pq.read_table(pa.BufferReader(data), decryption_properties=props))
        except (OSError, pa.ArrowException, NovationError):
            raise NovationError(f'{f["path"]} cannot be decrypted with the data keys in {keys}'
                                ) from None
    return pa.concat_tables(parts) if parts else pa.table({})


def read_deadletters(run_dir: str, *, keys: str, table: str) -> list:
    """All dead letters of ``table``, decrypted with the keyring's deadletter key."""
    manifest = load_manifest(run_dir)
    entry = _table_entry(manifest, table)
    keyring = load_keyring(keys, ('deadletter',))
    records = []
    for f in entry['deadletter_files']:
        data = _verified_bytes(run_dir, f)
        try:
            with keyring.streaming().new_decrypting_stream(
                    io.BytesIO(data),
                    deadletter_associated_data(manifest['run_id'], table)) as stream:
                text = stream.read()
        except Exception:
            raise NovationError(f'{f["path"]} cannot be decrypted with the deadletter key in '
                                f'{keys}') from None
        records += [json.loads(line) for line in text.splitlines() if line]
    return records


def decrypt_table(run_dir: str, *, keys: str, table: str, deadletter: bool, out: str) -> int:
    """Write a table (or its dead letters) decrypted to ``out``; returns the row count."""
    if deadletter:
        records = read_deadletters(run_dir, keys=keys, table=table)
        data = pa.Table.from_pylist([{**r, 'raw': None if r['raw'] is None else
                                      json.dumps(r['raw'], ensure_ascii=False)}
                                     for r in records])
    else:
        data = read_table(run_dir, keys=keys, table=table)
    if out.endswith('.parquet'):
        pq.write_table(data, out)
    elif out.endswith('.csv'):
        pa_csv.write_csv(data, out)
    elif out.endswith('.jsonl'):
        with open(out, 'w', encoding='utf-8') as f:
            for row in data.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False, default=str) + '\n')
    else:
        raise NovationError(f'--out {out}: the extension must be .csv, .jsonl or .parquet')
    return data.num_rows
