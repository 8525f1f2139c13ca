"""``novation incident``: a delivered file was exposed; whom and what does it concern?

From the run's manifest alone: which table and kind of file it is, its rows, whether it is the
file the run wrote (size and crc32c), and each field in it with its classification, treatment
and the key that protects it, so what an outsider holding the file, and not the keys, can read.
With the notice key and the seller's notification list: the customers to notify, matched by
what the file delivered as their id (which needs the key of the file's subject column), or, for
a dead-letter file, by their pseudonym (which needs the deadletter and pseudonym keys). The
customers' ids are only ever written to ``--out``, never printed.

A stream's file (``epochs/<n>/data|deadletter|retractions/...``) is found in its epoch's
manifest; its fields' classification, treatment and keys are the stream's snapshot run's, as
the stream delivers under the snapshot's plan.
"""

import io
import json
import posixpath

import google_crc32c
import pyarrow as pa

from config.plan import CLEAR_METHODS
from pipelines.decrypt import (is_stream, load_manifest, read_notice, readable_columns,
                               stream_epochs, stream_snapshot)
from transforms.keys.crypto import file_identity, keyed_ops
from transforms.write.delivered import deadletter_lines, parquet_file
from transforms.common.errors import NovationError
from transforms.common.files import join, read_bytes
from transforms.keys.keyring import READ_HINT, load_keyring

__all__ = ['assess_incident', 'format_incident']


def _find_file(manifest, run_dir, path):
    """(table, kind, entry) of the manifest's file at ``path`` (relative to the run, or a path
    ending in it)."""
    wanted = path.replace('\\', '/')
    for table, t in manifest['tables'].items():
        for kind, listed in (('data', t['files']), ('deadletter', t['deadletter_files'])):
            for entry in listed:
                if wanted == entry['path'] or wanted.endswith('/' + entry['path']):
                    return table, kind, entry
    raise NovationError(f'{path} is not a file of run {manifest["run_id"]} (its manifest lists '
                        f'data/TABLE/part-*.parquet and deadletter/TABLE/part-*.jsonl.enc)')


def _find_epoch_file(stream_dir, path, keys):
    """(what stands for the manifest: the stream's id, and the snapshot's tables and
    encryption; table; kind; the epoch manifest's entry) of the stream's file at ``path``."""
    wanted = path.replace('\\', '/')
    manifests = stream_epochs(stream_dir, keys)  # every seal and the chain checked
    for m in manifests:
        for entry in m.get('files', []):
            if wanted == entry['path'] or wanted.endswith('/' + entry['path']):
                break
        else:
            continue
        break
    else:
        raise NovationError(f'{path} is not a file of stream {stream_dir.rstrip("/")} (its '
                            f'epochs list epochs/N/data|deadletter|retractions/.../part-*)')
    snapshot = stream_snapshot(stream_dir, keys)
    if snapshot is None:
        raise NovationError(f'{stream_dir}: the snapshot run whose plan the stream delivers '
                            f'under is not beside it, so what each field holds is unknown')
    from transforms.stream.chain import RETRACTION_FIELDS, RETRACTION_KEYS
    tables = dict(snapshot['tables'])
    if entry['kind'] == 'backfill':  # the customers to backfill: their ids, for the seller
        tables[entry['table']] = {'format': 'jsonl', 'subject_key': 'subject_id',
                                  'column_keys': {}, 'fields': [], 'backfill': True}
    if entry['kind'] == 'retractions':  # a file of the stream's own: pseudonyms and reasons
        tables[entry['table']] = {
            'format': 'parquet', 'subject_key': 'subject_id',
            'column_keys': RETRACTION_KEYS,
            'fields': [{'name': f.name, 'classification': 'personal' if f.name == 'subject_id'
                        else 'internal', 'category': None,
                        'masking': 'hash' if f.name == 'subject_id' else 'keep'}
                       for f in RETRACTION_FIELDS]}
    manifest = {'run_id': m['run_id'], 'tables': tables, 'encryption': snapshot['encryption']}
    kind = 'data' if entry['kind'] in ('data', 'retractions') else 'deadletter'
    return manifest, entry['table'], kind, entry


def assess_incident(run_dir: str, path: str, keys: str, notice_dir: str = None) -> dict:
    if is_stream(run_dir):
        manifest, table, kind, entry = _find_epoch_file(run_dir, path, keys)
    else:
        manifest = load_manifest(run_dir, keys)
        table, kind, entry = _find_file(manifest, run_dir, path)
    t = manifest['tables'][table]
    exposed = path if path.startswith(('/', 'gs://')) or posixpath.exists(path) \
        else join(run_dir, entry['path'])
    data = read_bytes(exposed, what='exposed file')
    same = len(data) == entry['bytes'] and google_crc32c.value(data) == int(entry['crc32c'], 16)
    role_of = {c: role for role, cols in t['column_keys'].items() for c in cols}
    if kind == 'data':
        fields = [{'field': f['name'], 'classification': f['classification'],
                   'category': f.get('category'), 'treatment': f['masking'],
                   'key_role': ('data.avro' if t['format'] == 'avro' else role_of.get(f['name'])),
                   'key_id': entry['keys'].get('data.avro' if t['format'] == 'avro'
                                               else role_of.get(f['name'])),
                   'value_in_clear_inside': f['masking'] in CLEAR_METHODS}
                  for f in t['fields'] if f['name'] in role_of or t['format'] == 'avro'
                  and f['masking'] != 'drop']
        encryption = manifest['encryption']['data']
    elif t.get('backfill'):
        fields = [{'field': 'customer id of each customer to backfill, the kind and time',
                   'classification': 'personal', 'category': 'customer_id',
                   'treatment': 'kept, encrypted', 'key_role': 'deadletter',
                   'key_id': entry['keys'].get('deadletter'), 'value_in_clear_inside': True}]
        encryption = manifest['encryption']['deadletter']
    else:
        fields = [{'field': 'raw row of each refused record (erased customers: none)',
                   'classification': 'as in the export (restricted fields removed)',
                   'category': None, 'treatment': 'kept whole, encrypted',
                   'key_role': 'deadletter', 'key_id': entry['keys'].get('deadletter'),
                   'value_in_clear_inside': True}]
        encryption = manifest['encryption']['deadletter']
    result = {'run_id': manifest['run_id'], 'file': entry['path'], 'table': table, 'kind': kind,
              'rows': entry['rows'], 'bytes': entry['bytes'], 'matches_manifest': same,
              'encryption': encryption, 'fields': fields,
              'readable_with': sorted({f['key_role'] for f in fields if f['key_role']}
                                      | ({'data.footer'} if kind == 'data' and
                                         t['format'] == 'parquet' else set())),
              'customers': None, 'customers_note': None}
    if notice_dir is None:
        result['customers_note'] = ('give --notice NOTICE_DIR (notice.path/<run_id>, with the '
                                    'notice key) to list the customers to notify')
        return result
    rows = read_notice(notice_dir, keys)
    keyring = load_keyring(keys, hint=READ_HINT)
    ids = _file_subjects(manifest, t, kind, entry, data, keyring, keys)
    if t.get('backfill'):  # the ids themselves
        concerned = {r['customer_id'] for r in rows} & ids
    elif kind == 'data':
        concerned = {r['customer_id'] for r in rows if r['table'] == table and
                     r['categories'] is not None and r['delivered_as'] in ids}
    else:
        ops = keyed_ops(load_keyring(keys, ('pseudonym',), hint=READ_HINT))
        domain = _subject_domain(t)
        concerned = {c for c in {r['customer_id'] for r in rows}
                     if ops.pseudonym(domain, c) in ids}
    matched = [r for r in rows if r['customer_id'] in concerned]  # all their rows
    result['customers'] = matched
    result['customers_note'] = (f'{len(concerned):,} customer(s) to notify, of {len(ids):,} '
                                f'distinct ids in the file')
    return result


def _subject_domain(t):
    """The pseudonym domain of a table's subject key, as its dead letters use it."""
    subject = t.get('subject_key')
    for f in t['fields']:
        if f['name'] == subject:
            return f.get('domain') or f.get('category') or f['name']
    raise NovationError('the manifest does not say which field is the subject key')


def _file_subjects(manifest, t, kind, entry, data, keyring, keys) -> set:
    identity = file_identity(manifest['run_id'], entry['path'])
    if kind == 'deadletter':
        if not keyring.has('deadletter'):
            raise NovationError(f'listing the customers of a dead-letter file needs the '
                                f'deadletter key, which {keys} does not hold')
        return {json.loads(line).get('subject_id') for line in
                deadletter_lines(io.BytesIO(data), keyring, identity)} - {None}
    subject = t.get('subject_key')
    readable, withheld = readable_columns(t, keyring)
    if subject not in readable:
        raise NovationError(f'listing the customers needs the key of {subject} '
                            f'({withheld.get(subject, "not delivered")}), which {keys} does not '
                            f'hold')
    pf = parquet_file(pa.BufferReader(data), keyring, identity)
    return set(pf.read(columns=[subject]).column(subject).to_pylist()) - {None}


def format_incident(result: dict) -> str:
    lines = [f'incident: {result["file"]} of run {result["run_id"]}',
             f'  {result["kind"]} file of table {result["table"]}: {result["rows"]:,} rows, '
             f'{result["bytes"]:,} bytes; '
             + ('the file the run wrote (size and crc32c match)' if result['matches_manifest']
                else 'NOT the file the run wrote (size or crc32c differ)'),
             f'  encryption: {result["encryption"]}',
             f'  readable only with the keys: {", ".join(result["readable_with"])}; without '
             f'them the file shows nothing but its size',
             '  fields in it:']
    width = max(len(f['field']) for f in result['fields'])
    for f in result['fields']:
        inside = 'the seller\'s value' if f['value_in_clear_inside'] else 'masked'
        lines.append(f'    {f["field"]:{width}s}  {f["classification"]:10s} '
                     f'{f["category"] or "":16s} {f["treatment"]:10s} {inside:20s} '
                     f'key {f["key_role"]} ({f["key_id"]})')
    lines.append(f'  customers: {result["customers_note"]}')
    return '\n'.join(lines)
