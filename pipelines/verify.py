"""``novation verify``: recheck a finished run against its manifest, and scan what it delivered.

Every file is checked against the manifest (size and crc32c), its rows counted (data files
decrypted, dead-letter files read whole, which authenticates them), every table's and source
file's counts added up again, and files in the run that the manifest does not list named. Then
the delivered data, decrypted in memory only, is scanned with the identifier detectors: an
identifier found in a column the plan does not deliver in clear as that kind (a mobile number
inside a kept note, an ID number in an ``internal`` field) is counted, per table, column and
kind. Nothing is written and no value is ever printed.
"""

import io

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from config.plan import CLEAR_METHODS
from pipelines.decrypt import (_readable_part, _verified_bytes, arrow_schema,
                               load_manifest, readable_columns, stream_epochs, stream_snapshot)
from transforms.keys.crypto import file_identity
from transforms.write.delivered import avro_records, deadletter_lines, parquet_file
from transforms.detect.detectors import scan
from transforms.common.errors import NovationError
from transforms.common.files import join
from transforms.keys.keyring import READ_HINT, load_keyring

__all__ = ['format_verification', 'verify_run', 'verify_stream']

# Their values are keyed outputs (pseudonyms, tokens), never the seller's value.
_KEYED_METHODS = ('hash', 'tokenize')


def _allowed_kind(field: dict):
    """The identifier kind a column may hold in clear: its own category, when it is kept."""
    return field.get('category') if field['masking'] in CLEAR_METHODS else None


def _scannable(column: pa.Array):
    t = column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return column
    if pa.types.is_integer(t):  # a phone number kept as a number is still a phone number
        return pc.cast(column, pa.string())
    return None


def _listed_files(manifest) -> set:
    return {f['path'] for t in manifest['tables'].values()
            for f in t['files'] + t['deadletter_files']}


def _files_on_disk(run_dir) -> set:
    found = set()
    for kind in ('data', 'deadletter'):
        for m in FileSystems.match([join(run_dir, kind, '*', '*')])[0].metadata_list:
            found.add(kind + m.path.replace('\\', '/').split('/' + kind, 1)[1])
    return found


def verify_run(run_dir: str, keys: str) -> dict:
    """What ``novation verify`` finds: {'problems': [...], 'identifiers': {...}, ...}."""
    keyring = load_keyring(keys, hint=READ_HINT)
    manifest = load_manifest(run_dir, keyring)
    problems, not_read = [], []
    identifiers = {}  # (table, column, kind) -> [findings, rows]
    files_ok = files = 0
    for name, entry in manifest['tables'].items():
        dead = sum(entry['dead_letters'].values())
        if entry['rows_read'] != entry['rows_written'] + dead:
            problems.append(f'{name}: rows read {entry["rows_read"]:,} != written '
                            f'{entry["rows_written"]:,} + dead letters {dead:,}')
        for kind, listed in (('data', entry['files']), ('deadletter', entry['deadletter_files'])):
            total = sum(f['rows'] for f in listed)
            expected = entry['rows_written'] if kind == 'data' else dead
            if total != expected:
                problems.append(f'{name}: the {kind} files list {total:,} rows, the table '
                                f'{expected:,}')
        fields = {f['name']: f for f in entry['fields']}
        readable, withheld = readable_columns(entry, keyring)
        not_read += [f'{name}.{c} (under {role})' for c, role in withheld.items()]
        columns = [c for c in readable if fields[c]['masking'] not in _KEYED_METHODS]
        for f, is_data in [(f, True) for f in entry['files']] + \
                [(f, False) for f in entry['deadletter_files']]:
            files += 1
            try:
                data = _verified_bytes(run_dir, f)
            except NovationError as e:
                problems.append(str(e))
                continue
            identity = file_identity(manifest['run_id'], f['path'])
            try:
                if not is_data:
                    if not keyring.has('deadletter'):
                        not_read.append(f'{f["path"]} (under deadletter)')
                        files_ok += 1
                        continue
                    rows = sum(1 for _ in deadletter_lines(io.BytesIO(data), keyring,
                                                           identity))
                else:
                    rows = _scan_file(entry['format'], data, keyring, identity, readable,
                                      columns, fields, name, identifiers)
            except Exception:  # any failure to decrypt is a finding about the file
                problems.append(f'{f["path"]} cannot be decrypted with the keys in {keys}')
                continue
            if rows != f['rows']:
                problems.append(f'{f["path"]}: {rows:,} rows, the manifest says {f["rows"]:,}')
                continue
            files_ok += 1
    for source in manifest['sources']:
        dead = sum(source['dead_letters'].values())
        if source['rows_read'] != source['rows_written'] + dead:
            problems.append(f'{source["table"]} from {source["path"]}: rows do not add up')
    for path in sorted(_files_on_disk(run_dir) - _listed_files(manifest)):
        problems.append(f'{path} is in the run but not in its manifest')
    return {'run_id': manifest['run_id'], 'files': files, 'files_ok': files_ok,
            'tables': len(manifest['tables']), 'problems': problems, 'not_read': not_read,
            'identifiers': {f'{t}.{c}': {**identifiers_of(identifiers, t, c)}
                            for t, c in sorted({(t, c) for t, c, _ in identifiers})}}


def verify_stream(stream_dir: str, keys: str) -> dict:
    """What ``novation verify`` finds in a stream: every epoch's seal and the chain (and, once
    cut over, that the epochs are the ones cutover.json lists), every file against its epoch's
    size, crc32c and rows (decrypted, which authenticates it), the stream's conservation (every
    feed event accounted for), files no epoch lists, and the leak scan, with the fields'
    treatment from the snapshot run's manifest (without one, nothing is scanned)."""
    from transforms.stream.chain import CUTOVER_FILE, EPOCHS_DIR, conservation
    keyring = load_keyring(keys, hint=READ_HINT)
    run_id = stream_dir.rstrip('/').split('/')[-1]
    result = {'run_id': run_id, 'files': 0, 'files_ok': 0, 'tables': 0, 'problems': [],
              'not_read': [], 'identifiers': {}}
    try:
        manifests = stream_epochs(stream_dir, keyring)
    except NovationError as e:
        result['problems'].append(str(e))
        return result
    fields = _snapshot_fields(stream_dir, keyring)
    if fields is None:
        result['not_read'].append('every column (no snapshot run names the fields\' treatment)')
    identifiers, tables, listed = {}, set(), set()
    for manifest in manifests:
        for f in manifest.get('files', []):
            result['files'] += 1
            listed.add(f['path'])
            tables.add(f.get('table'))
            try:
                data = _verified_bytes(stream_dir, f)
                identity = file_identity(run_id, f['path'])
                if f.get('kind') in ('deadletter', 'backfill'):  # JSON Lines, encrypted
                    rows = sum(1 for _ in deadletter_lines(io.BytesIO(data), keyring, identity))
                else:
                    part, lacking = _readable_part(pa.BufferReader(data), keyring, identity, f)
                    rows = part.num_rows
                    table_fields = (fields or {}).get(f['table'], {})
                    columns = [c for c in part.column_names if c in table_fields
                               and table_fields[c]['masking'] not in _KEYED_METHODS]
                    if columns:
                        _scan_batch(part.select(columns), columns, table_fields, f['table'],
                                    identifiers)
                    result['not_read'] += [f'{f["table"]}.{c}' for c in lacking
                                           if f'{f["table"]}.{c}' not in result['not_read']]
            except NovationError as e:
                result['problems'].append(str(e))
                continue
            except Exception:  # noqa: BLE001 - any failure to decrypt is a finding
                result['problems'].append(f'{f["path"]} cannot be decrypted with the keys in '
                                          f'{keys}')
                continue
            if rows != f['rows']:
                result['problems'].append(f'{f["path"]}: {rows:,} rows, its epoch says '
                                          f'{f["rows"]:,}')
                continue
            result['files_ok'] += 1
    balance = conservation(manifests)
    if FileSystems.exists(join(stream_dir, CUTOVER_FILE)) and not balance['holds']:
        result['problems'] += [f'{f["path"]}: {f["events"]} events read, {f["accounted"]} '
                               f'accounted for' for f in balance['files'] if not f['holds']]
    on_disk = {EPOCHS_DIR + m.path.replace('\\', '/').split('/' + EPOCHS_DIR, 1)[1]
               for m in FileSystems.match([join(stream_dir, EPOCHS_DIR, '*', '*', '*', '*')]
                                          )[0].metadata_list}
    result['problems'] += [f'{path} is in the stream but in no epoch\'s manifest'
                           for path in sorted(on_disk - listed)]
    result['tables'] = len(tables)
    result['identifiers'] = {f'{t}.{c}': identifiers_of(identifiers, t, c)
                             for t, c in sorted({(t, c) for t, c, _ in identifiers})}
    return result


def _snapshot_fields(stream_dir, keyring):
    """{table: {field: its manifest entry}} of the snapshot run the stream continues, or
    None."""
    manifest = stream_snapshot(stream_dir, keyring)
    if manifest is None:
        return None
    return {name: {f['name']: f for f in entry['fields']}
            for name, entry in manifest['tables'].items()}


def _scan_batch(batch, columns, fields, table, identifiers) -> None:
    """Count identifiers in clear in ``columns`` of ``batch`` into ``identifiers``."""
    for column in columns:
        values = _scannable(batch.column(column).combine_chunks()
                            if isinstance(batch.column(column), pa.ChunkedArray)
                            else batch.column(column))
        if values is None:
            continue
        allowed = _allowed_kind(fields[column])
        counted = {}
        for finding in scan(values):
            if finding.kind != allowed:
                counted.setdefault(finding.kind, set()).add(finding.row)
                n, r = identifiers.get((table, column, finding.kind), (0, 0))
                identifiers[(table, column, finding.kind)] = (n + 1, r)
        for kind, hit_rows in counted.items():
            n, r = identifiers[(table, column, kind)]
            identifiers[(table, column, kind)] = (n, r + len(hit_rows))


def identifiers_of(identifiers, table, column) -> dict:
    return {kind: {'found': n, 'rows': rows} for (t, c, kind), (n, rows) in
            sorted(identifiers.items()) if (t, c) == (table, column)}


def _scan_file(fmt, data, keyring, identity, readable, columns, fields, table,
               identifiers) -> int:
    """Rows of one delivered file; its identifiers in clear counted into ``identifiers``.
    Every ``readable`` column is decrypted, which authenticates it (AES-GCM: a changed column
    chunk fails, where a crc32c can be forged); ``columns`` are scanned (pseudonyms and
    tokens are not identifiers in clear)."""
    rows = 0
    if fmt == 'avro':
        schema, records = avro_records(pa.BufferReader(data), keyring, identity)
        batches = [pa.RecordBatch.from_pylist(list(records), schema=arrow_schema(schema))]
    else:
        pf = parquet_file(pa.BufferReader(data), keyring, identity)
        batches = pf.iter_batches(columns=list(readable)) if readable else \
            [pa.RecordBatch.from_pydict({'n': [None] * pf.metadata.num_rows})]
    for batch in batches:
        rows += batch.num_rows
        _scan_batch(batch, columns, fields, table, identifiers)
    return rows


def format_verification(result: dict) -> str:
    bad = result['problems'] or result['identifiers']
    lines = [f'verify {result["run_id"]}: {"FAILED" if bad else "clean"}',
             f'  files: {result["files_ok"]} of {result["files"]} match the manifest (size, '
             f'crc32c, rows); {result["tables"]} tables checked for conservation']
    if result['problems']:
        lines.append(f'  problems ({len(result["problems"])}):')
        lines += [f'    {p}' for p in result['problems']]
    if result['identifiers']:
        lines.append('  identifiers in clear where the plan allows none (counts, never values):')
        for column, kinds in result['identifiers'].items():
            for kind, n in kinds.items():
                lines.append(f'    {column:32s} {kind:18s} {n["found"]:,} in {n["rows"]:,} rows')
    else:
        lines.append('  no identifier in clear where the plan allows none')
    if result['not_read']:
        lines.append(f'  not scanned (this keyring lacks their keys): '
                     f'{", ".join(result["not_read"])}')
    return '\n'.join(lines)

