"""Read a finished run back: verify files against the manifest, decrypt, export.

Used by ``novation decrypt`` (the acquirer's and the compliance operator's way in) and by tests.
"""

import contextlib
import hashlib
import io
import json
import os

from apache_beam.io.filesystems import FileSystems
import google_crc32c
import tink
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from transforms.commit.manifest_schema import check as check_manifest
from transforms.keys.crypto import file_identity, keyed_ops
from transforms.write.delivered import avro_records, deadletter_lines, parquet_file
from transforms.common.errors import KeyringError, NovationError, os_problem
from transforms.common.files import join, read_bytes, why_not_writable
from transforms.keys.keyring import READ_HINT, Keyring, load_keyring
from transforms.commit.manifest import MANIFEST_FILE
from transforms.keys.seal import SEAL_ROLE, check_contained, contained_path, read_sealed_json

__all__ = ['decrypt_table', 'detokenize', 'hash_domain', 'load_manifest', 'pseudonyms',
           'read_deadletters', 'read_notice', 'read_stream_table', 'read_table', 'stream_epochs',
           'stream_snapshot']


def load_manifest(run_dir: str, keys) -> dict:
    """A run's manifest, believed only once its seal checks under the ``manifest`` key of
    ``keys`` (a keyring directory or a loaded Keyring) and its shape and paths are sound."""
    path = join(run_dir, MANIFEST_FILE)
    kind = directory_kind(run_dir)
    if kind:
        raise NovationError(f'{run_dir} is {kind}, not a batch run: this command reads a batch '
                            f'run\'s directory (OUT/<run id>)')
    if not FileSystems.exists(path):
        raise NovationError(f'{run_dir} has no {MANIFEST_FILE}: the run is incomplete or this '
                            f'is not a run directory')
    keyring = keys if isinstance(keys, Keyring) else load_keyring(
        keys, (SEAL_ROLE,), warn=False, hint=READ_HINT)
    manifest = read_sealed_json(run_dir, MANIFEST_FILE, keyring, what='manifest')
    _check_shape(manifest, path)
    return manifest


def is_stream(directory: str) -> bool:
    """Whether ``directory`` is a stream's (it holds epochs/)."""
    from transforms.stream.chain import EPOCHS_DIR
    return FileSystems.exists(join(directory, EPOCHS_DIR))


def directory_kind(directory: str):
    """What ``directory`` is if it is a stream's, not a batch run's (its words, for a one-line
    error instead of a seal that cannot check), else None."""
    from transforms.stream.chain import CUTOVER_FILE, EPOCH_FORMAT, EPOCHS_DIR
    if FileSystems.exists(join(directory, CUTOVER_FILE)) or \
            FileSystems.exists(join(directory, EPOCHS_DIR)):
        return 'a stream\'s directory (its deliveries are the epochs under epochs/)'
    path = join(directory, MANIFEST_FILE)
    if FileSystems.exists(path):
        try:
            doc = json.loads(read_bytes(path, what='manifest'))
        except (ValueError, UnicodeDecodeError):
            return None  # the seal check says what is wrong with it
        if isinstance(doc, dict) and doc.get('format') == EPOCH_FORMAT:
            return (f'epoch {str(doc.get("epoch"))[:12]} of stream {str(doc.get("run_id"))[:100]} '
                    f'(an epoch manifest)')
    return None


def _check_shape(manifest: dict, where: str) -> None:
    """What readers rely on: the manifest's format (``transforms.commit.manifest_schema``) and
    every file's place inside the run."""
    check_manifest(manifest, where)
    for entry in manifest['tables'].values():
        for f in entry['files'] + entry['deadletter_files']:
            check_contained(f['path'], where)


def _verified_bytes(run_dir, entry) -> bytes:
    data = read_bytes(contained_path(run_dir, entry['path'], MANIFEST_FILE), what='output file')
    if len(data) != entry['bytes'] or google_crc32c.value(data) != int(entry['crc32c'], 16):
        raise NovationError(f'{entry["path"]} does not match the manifest (size or crc32c): '
                            f'the file was changed after the run')
    return data


def _table_entry(manifest, table):
    if table not in manifest['tables']:
        raise NovationError(f'no table {table!r} in run {manifest["run_id"]}; tables: '
                            f'{", ".join(manifest["tables"])}')
    return manifest['tables'][table]


def readable_columns(entry: dict, keyring) -> tuple:
    """(columns this keyring can read, in schema order; {withheld column: its key role})."""
    role_of = {column: role for role, columns in entry['column_keys'].items()
               for column in columns}
    delivered = [f['name'] for f in entry['fields'] if f['name'] in role_of]
    readable = [c for c in delivered if keyring.has(role_of[c])]
    return readable, {c: role_of[c] for c in delivered if not keyring.has(role_of[c])}


def read_table(run_dir: str, *, keys: str, table: str) -> tuple:
    """(rows of ``table`` decrypted, {withheld column: key role}) for the columns whose keys
    the keyring holds; a column under a key it lacks is left out and named."""
    keyring = load_keyring(keys, hint=READ_HINT)
    manifest = load_manifest(run_dir, keyring)
    entry = _table_entry(manifest, table)
    readable, withheld = readable_columns(entry, keyring)
    footer = 'data.avro' if entry['format'] == 'avro' else 'data.footer'
    if not keyring.has(footer):
        raise KeyringError(f'keyring {keys} has no {footer!r} keyset; it cannot open the files '
                           f'of {table}')
    parts = []
    for f in entry['files']:
        source = pa.BufferReader(_verified_bytes(run_dir, f))
        identity = file_identity(manifest['run_id'], f['path'])
        try:
            if entry['format'] == 'avro':
                schema, records = avro_records(source, keyring, identity)
                parts.append(pa.Table.from_pylist(list(records), schema=arrow_schema(schema)))
            else:
                # Batch by batch: PME then asks only for the keys of the columns read, where
                # ParquetFile.read would ask for every column's key.
                pf = parquet_file(source, keyring, identity)
                schema = pa.schema([pf.schema_arrow.field(c) for c in readable])
                parts.append(pa.Table.from_batches(list(pf.iter_batches(columns=readable)),
                                                   schema=schema))
        except (OSError, pa.ArrowException, NovationError, ValueError, EOFError,
                tink.TinkError):
            raise NovationError(f'{f["path"]} cannot be decrypted with the keys in {keys} (wrong '
                                f'keyring, a file moved from its place, or a changed file)'
                                ) from None
    return (pa.concat_tables(parts) if parts else pa.table({})), withheld


def arrow_schema(avro_schema: dict) -> pa.Schema:
    """The Arrow schema of a delivered Avro file (the inverse of ``write.avro_schema``)."""
    fields = []
    for field in avro_schema['fields']:
        avro_type = [t for t in field['type'] if t != 'null'][0]
        fields.append(pa.field(field['name'], _ARROW_OF_AVRO[_type_name(avro_type)](avro_type)))
    return pa.schema(fields)


def _type_name(avro_type):
    return avro_type if isinstance(avro_type, str) else avro_type.get('logicalType',
                                                                      avro_type['type'])


_ARROW_OF_AVRO = {
    'string': lambda t: pa.string(), 'boolean': lambda t: pa.bool_(), 'int': lambda t: pa.int32(),
    'long': lambda t: pa.int64(), 'float': lambda t: pa.float32(),
    'double': lambda t: pa.float64(),
    'decimal': lambda t: pa.decimal128(t['precision'], t['scale']),
    'date': lambda t: pa.date32(), 'timestamp-micros': lambda t: pa.timestamp('us', tz='UTC'),
}


def read_deadletters(run_dir: str, *, keys: str, table: str) -> list:
    """All dead letters of ``table``, decrypted with the keyring's deadletter key."""
    manifest = load_manifest(run_dir, keys)
    entry = _table_entry(manifest, table)
    keyring = load_keyring(keys, ('deadletter',), hint=READ_HINT)
    records = []
    for f in entry['deadletter_files']:
        source = io.BytesIO(_verified_bytes(run_dir, f))
        try:
            records += [json.loads(line) for line in deadletter_lines(
                source, keyring, file_identity(manifest['run_id'], f['path']))]
        except Exception:
            raise NovationError(f'{f["path"]} cannot be decrypted with the deadletter key in '
                                f'{keys}') from None
    return records


OUT_FORMATS = ('.csv', '.jsonl', '.parquet')


def stream_epochs(stream_dir: str, keys, epoch=None) -> list:
    """The epoch manifests of a stream, in the order to apply them: every seal and the chain
    checked and, once it has cut over, exactly the epochs its sealed cutover.json lists
    (``epoch``: that one only)."""
    from transforms.stream.chain import CUTOVER_FILE, checked_epochs
    from transforms.common.errors import InputError
    run_id = stream_dir.rstrip('/').split('/')[-1]
    keyring = keys if isinstance(keys, Keyring) else load_keyring(
        keys, (SEAL_ROLE,), warn=False, hint=READ_HINT)
    try:
        checked = checked_epochs(stream_dir, run_id, keyring.path)
    except InputError as e:
        raise NovationError(str(e)) from None
    if FileSystems.exists(join(stream_dir, CUTOVER_FILE)):
        from transforms.keys.crypto import file_identity as identity_of
        from transforms.keys.seal import read_sealed
        cutover = json.loads(read_sealed(stream_dir, CUTOVER_FILE, keyring,
                                         identity_of(run_id, CUTOVER_FILE),
                                         what='cut-over manifest'))
        listed = [e.get('sha256') for e in cutover.get('epochs', [])]
        held = [hashlib.sha256(data).hexdigest() for data, _ in checked]
        if listed != held:
            raise NovationError(f'{stream_dir}: its epochs are not the ones its cutover.json '
                                f'lists ({len(held)} found, {len(listed)} listed): an epoch was '
                                f'deleted, replaced or added after the cut-over')
    manifests = [m for _, m in checked]
    if epoch is not None:
        manifests = [m for m in manifests if m.get('epoch') == epoch]
        if not manifests:
            raise NovationError(f'{stream_dir} has no epoch {epoch} (it has '
                                f'{len(checked)})')
    return manifests


def stream_snapshot(stream_dir: str, keys):
    """The manifest of the snapshot run a stream continues (its seal checked), which names
    the fields' classification, treatment and keys that the epochs' own manifests leave
    out: from the stream's sealed cutover.json, or while it runs from its start's audit
    record; None for a stream without a snapshot (or whose snapshot run is gone)."""
    from transforms.commit.audit import read_log
    from transforms.keys.crypto import file_identity as identity_of
    from transforms.stream.chain import CUTOVER_FILE
    from transforms.keys.seal import read_sealed
    keyring = keys if isinstance(keys, Keyring) else load_keyring(
        keys, (SEAL_ROLE,), warn=False, hint=READ_HINT)
    run_id = stream_dir.rstrip('/').split('/')[-1]
    root = stream_dir.rstrip('/').rsplit('/', 1)[0] if '/' in stream_dir.rstrip('/') else '.'
    if FileSystems.exists(join(stream_dir, CUTOVER_FILE)):
        cutover = json.loads(read_sealed(stream_dir, CUTOVER_FILE, keyring,
                                         identity_of(run_id, CUTOVER_FILE),
                                         what='cut-over manifest'))
        snapshot = (cutover.get('snapshot') or {}).get('run_id')
    else:
        started = [r for r in read_log(root) if r.get('event') == 'stream_started'
                   and r.get('stream_id') == run_id]
        snapshot = started[0].get('snapshot_run_id') if started else None
    if not snapshot:
        return None
    try:
        return load_manifest(join(root, snapshot), keyring)
    except NovationError:
        return None


def read_stream_table(stream_dir: str, *, keys: str, table: str, deadletter: bool = False,
                      epoch=None) -> tuple:
    """(rows of ``table`` in every epoch, in cut-over order, with an ``__epoch`` column;
    {withheld column: its key role}), or its dead letters as records. Each file's size and
    crc32c are checked against its epoch's manifest and it is decrypted under its identity."""
    keyring = load_keyring(keys, hint=READ_HINT)
    run_id = stream_dir.rstrip('/').split('/')[-1]
    parts, records, withheld = [], [], {}
    for manifest in stream_epochs(stream_dir, keyring, epoch):
        for f in manifest.get('files', []):
            if f.get('table') != table or f.get('kind') != ('deadletter' if deadletter
                                                            else 'data'):
                continue
            check_contained(f.get('path'), f'epoch {manifest.get("epoch")}')
            data = _verified_bytes(stream_dir, f)
            identity = file_identity(run_id, f['path'])
            try:
                if deadletter:
                    records += [{'epoch': manifest['epoch'], **json.loads(line)} for line in
                                deadletter_lines(io.BytesIO(data), keyring, identity)]
                    continue
                part, lacking = _readable_part(pa.BufferReader(data), keyring, identity, f)
            except (OSError, pa.ArrowException, ValueError, EOFError, tink.TinkError):
                raise NovationError(f'{f["path"]} cannot be decrypted with the keys in {keys} '
                                    f'(wrong keyring, a file moved from its place, or a changed '
                                    f'file)') from None
            withheld.update(lacking)
            parts.append(part.append_column('__epoch', pa.array(
                [manifest['epoch']] * part.num_rows, pa.int32())))
    if deadletter:
        return records, {}
    if not parts:
        return pa.table({}), withheld
    return pa.concat_tables(parts, promote_options='default'), withheld


def _readable_part(source, keyring, identity, entry) -> tuple:
    """A delivered Parquet file's columns this keyring can decrypt, and the others (named
    with the key roles its manifest entry lists): an epoch manifest does not map columns to
    keys, so each column is tried."""
    pf = parquet_file(source, keyring, identity)
    columns, lacking = [], {}
    for name in pf.schema_arrow.names:
        try:
            columns.append((name, pf.read(columns=[name]).column(0)))
        except (OSError, pa.ArrowException):
            lacking[name] = 'a key role this keyring lacks: ' + ', '.join(
                r for r in entry.get('keys', {}) if not keyring.has(r))
    if not columns:
        raise ValueError('no column could be read')
    return pa.table(dict(columns)), lacking


def decrypt_table(run_dir: str, *, keys: str, table: str, deadletter: bool, out: str,
                  epoch=None) -> tuple:
    """Write a table (or its dead letters) of a batch run, or of a stream's epochs (all, in
    cut-over order, or ``epoch``), decrypted to ``out``.

    Returns (row count, {withheld column: key role}).
    """
    check_out(out)
    withheld = {}
    if is_stream(run_dir):
        data, withheld = read_stream_table(run_dir, keys=keys, table=table,
                                           deadletter=deadletter, epoch=epoch)
        if deadletter:
            data = pa.Table.from_pylist([{**r, 'raw': None if r.get('raw') is None else
                                          json.dumps(r['raw'], ensure_ascii=False)}
                                         for r in data])
        write_rows(data, out)
        return data.num_rows, withheld
    if epoch is not None:
        raise NovationError(f'--epoch: {run_dir} is a batch run; --epoch reads a stream\'s')
    if deadletter:
        records = read_deadletters(run_dir, keys=keys, table=table)
        data = pa.Table.from_pylist([{**r, 'raw': None if r['raw'] is None else
                                      json.dumps(r['raw'], ensure_ascii=False)}
                                     for r in records])
    else:
        data, withheld = read_table(run_dir, keys=keys, table=table)
    write_rows(data, out)
    return data.num_rows, withheld


def check_out(out: str) -> None:
    """Refuse an ``--out`` that cannot be written, before anything is decrypted."""
    if not out.endswith(OUT_FORMATS):
        raise NovationError(f'--out {out}: the extension must be one of {", ".join(OUT_FORMATS)}')
    if os.path.isdir(out):
        raise NovationError(f'--out {out}: is a directory; name a file in it')
    why = why_not_writable(os.path.dirname(os.path.abspath(out)))
    if why:
        raise NovationError(f'--out {out}: cannot be written: {why}')


def write_rows(data: pa.Table, out: str) -> None:
    """``data`` to ``out``, as its extension says: .parquet, .csv or .jsonl. A write that
    fails (a full disk) leaves no partial file."""
    check_out(out)
    try:
        if out.endswith('.parquet'):
            pq.write_table(data, out)
        elif out.endswith('.csv'):
            pa_csv.write_csv(data, out)
        else:
            with open(out, 'w', encoding='utf-8') as f:
                for row in data.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + '\n')
    except (OSError, pa.ArrowException) as e:
        with contextlib.suppress(OSError):
            os.remove(out)
        if isinstance(e, OSError):
            raise os_problem(e) from None
        raise NovationError(f'--out {out}: could not be written ({type(e).__name__}; a full '
                            f'disk?); nothing was left there') from None


def _field_entry(manifest: dict, ref: str) -> dict:
    """The manifest entry of the field TABLE.FIELD."""
    table, _, name = ref.partition('.')
    fields = {f['name']: f for f in _table_entry(manifest, table)['fields']}
    if name not in fields:
        raise NovationError(f'--field {ref}: no field {name!r} in {table}; fields: '
                            f'{", ".join(fields)}')
    return fields[name]


def token_field(manifest: dict, ref: str) -> dict:
    """The manifest entry of TABLE.FIELD, which must be tokenized."""
    field = _field_entry(manifest, ref)
    if field['masking'] == 'hash':
        raise NovationError(f'--field {ref}: hash is one-way; its values are keyed pseudonyms '
                            f'(HMAC-SHA256) that no key can reverse. Join on them instead, or '
                            f'tokenize the field in future runs if it must be re-identified')
    if field['masking'] != 'tokenize':
        raise NovationError(f'--field {ref}: is delivered with method {field["masking"]!r}; only '
                            f'tokenized fields can be detokenized')
    return field


def detokenize(run_dir: str, *, keys: str, field: str, tokens) -> list:
    """(token, value or None) for each token of TABLE.FIELD; None where a token is not valid."""
    spec = token_field(load_manifest(run_dir, keys), field)
    ops = keyed_ops(load_keyring(keys, ('token',), hint=READ_HINT))
    out = []
    for token in tokens:
        try:
            out.append((token, ops.detokenize(spec['domain'], token).decode('utf-8')))
        except (tink.TinkError, ValueError, UnicodeDecodeError):
            out.append((token, None))
    return out


def hash_domain(manifest: dict, ref: str) -> str:
    """The pseudonym domain of TABLE.FIELD, which must be delivered hashed."""
    field = _field_entry(manifest, ref)
    if field['masking'] != 'hash':
        raise NovationError(f'--field {ref}: is delivered with method {field["masking"]!r}, '
                            f'not hash')
    return field['domain']


def pseudonyms(keys: str, domain: str, values) -> list:
    """The pseudonym ``hash`` gives each value in ``domain``, with the keyring's pseudonym key:
    an acquirer computes the pseudonym of an id it already holds, to find its rows."""
    ops = keyed_ops(load_keyring(keys, ('pseudonym',), hint=READ_HINT))
    return [ops.pseudonym(domain, value) for value in values]


def read_notice(notice_dir: str, keys: str) -> list:
    """The rows of a run's notification list (``notice.path/<run_id>``), decrypted with the
    notice key, each file checked against its ``notice.json`` first."""
    from transforms.keys.crypto import decrypting_stream
    from transforms.commit.notice import NOTICE_FILE
    summary_path = join(notice_dir, NOTICE_FILE)
    if not FileSystems.exists(summary_path):
        raise NovationError(f'{notice_dir} has no {NOTICE_FILE}: not a notification list (it is '
                            f'notice.path/<run_id> of a run whose config has notice)')
    keyring = load_keyring(keys, ('notice', SEAL_ROLE), hint=READ_HINT)
    summary = read_sealed_json(notice_dir, NOTICE_FILE, keyring, what='notice summary')
    rows = []
    for entry in summary.get('files', ()):
        if not isinstance(entry, dict):
            raise NovationError(f'{summary_path}: files must list mappings')
        data = read_bytes(contained_path(notice_dir, entry.get('path'), summary_path),
                          what='notice file')
        if len(data) != entry['bytes'] or google_crc32c.value(data) != int(entry['crc32c'], 16):
            raise NovationError(f'{entry["path"]} does not match {NOTICE_FILE} (size or crc32c)')
        try:
            plain = decrypting_stream(keyring, 'notice', io.BytesIO(data), file_identity(
                summary['run_id'], entry['path'])).read()
            rows += pq.read_table(pa.BufferReader(plain)).to_pylist()
        except Exception:
            raise NovationError(f'{entry["path"]} cannot be decrypted with the notice key in '
                                f'{keys}') from None
    return rows
