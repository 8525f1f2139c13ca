"""``novation backfill``: the current rows of customers who consented again, from a targeted
export, delivered by the running stream as epochs of its own.

A customer whose rows the acquirer lacks (refused at the snapshot, retracted after a withdrawal,
or delivered without their sensitive fields) and who consents again is listed by the stream in
the epoch that saw the consent (``backfill`` in its manifest; their ids in an encrypted file
under the dead-letter key, which the acquirer does not hold). Changes after the consent reach
the acquirer anyway; the rows that did not change do not. So:

1. ``novation backfill OUT/<stream id> --keys DIR --list FILE`` writes the customers listed by
   every epoch (id, what they regained, when, the epoch), for the seller to export their rows.
2. ``novation backfill OUT/<stream id> --config FILE --export TABLE=PATH ... [--exported-at
   TIME]`` reads that targeted export with the batch's own readers (every format and encoding
   a table's export may have), keeps the rows of listed customers, and lands them as one file
   of snapshot reads (``op: r``, committed at the export's time, in a log of their own) in
   ``stream.backfill``, a directory the stream watches as one more change feed. The stream
   decides, masks, encrypts and commits them as it does every change; its key order keeps the
   newest change of each row (a change committed before the export that lands after it is
   superseded, one committed after it applies), and its conservation counts the file's lines.

Rows of customers not listed are left out and counted, as are rows a customer does not lack (one
who regained only the separate consent for sensitive data, in a table without sensitive fields)
or that cannot be replaced in place (a table without a primary key); an export with rows that
cannot be read is refused whole (nothing lands), so no row of it can vanish uncounted.
"""

import collections
import csv
import dataclasses
import datetime
import decimal
import io
import json
import os
import secrets
import tempfile
from typing import Dict, Optional

import apache_beam as beam
import pyarrow as pa

from pipelines.decrypt import stream_epochs
from pipelines.review import output_root
from transforms.commit.audit import append_event
from transforms.common.batches import ROW, SOURCE
from transforms.keys.crypto import file_identity
from transforms.write.delivered import deadletter_lines
from transforms.common.errors import ConfigError, NovationError
from transforms.stream.feeds import BACKFILL_FILES
from transforms.common.files import has_scheme, join, read_bytes
from transforms.keys.keyring import READ_HINT, load_keyring
from transforms.read.tables import ReadTable, check_file

__all__ = ['backfill_list', 'land_backfill', 'land_rows', 'listed_rows', 'needs', 'write_list']

LEFT_OUT = 'left out'  # a row of the export that is not landed (counted, with why)


def backfill_list(stream_dir: str, keys) -> list:
    """The customers every epoch of the stream listed for a backfill, latest first per
    customer: ``{'subject_id', 'kind', 'at', 'epoch'}`` (ids in clear: decrypted with the
    dead-letter key)."""
    keyring = load_keyring(keys, ('deadletter',), warn=False, hint=READ_HINT)
    run_id = stream_dir.rstrip('/').split('/')[-1]
    latest = {}
    for manifest in stream_epochs(stream_dir, keys):  # every seal and the chain checked
        for f in manifest.get('files', []):
            if f.get('kind') != 'backfill':
                continue
            data = read_bytes(join(stream_dir, f['path']), what='backfill list')
            for line in deadletter_lines(io.BytesIO(data), keyring,
                                         file_identity(run_id, f['path'])):
                record = {**json.loads(line), 'epoch': manifest['epoch']}
                latest[record['subject_id']] = record
    return sorted(latest.values(), key=lambda r: (r['epoch'], r['subject_id']))


def write_list(records, out: str) -> None:
    """The backfill list to ``out``: .csv or .jsonl."""
    names = ('subject_id', 'kind', 'at', 'epoch')
    if out.endswith('.jsonl'):
        text = ''.join(json.dumps({k: r[k] for k in names}, ensure_ascii=False) + '\n'
                       for r in records)
    elif out.endswith('.csv'):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=names, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(records)
        text = buffer.getvalue()
    else:
        raise NovationError(f'--list {out}: the extension must be .csv or .jsonl')
    with open(out, 'w', encoding='utf-8', newline='') as f:
        f.write(text)


def _json_value(value):
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat(sep=' ') if isinstance(value, datetime.datetime) else \
            value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def export_format(path: str, table) -> str:
    """A targeted export's format: its extension's (.csv, .jsonl, .parquet, .avro), else its
    table's (a seller may export a few customers in another form than the whole book)."""
    for extension, name in (('.csv', 'csv'), ('.jsonl', 'jsonl'), ('.json', 'jsonl'),
                            ('.parquet', 'parquet'), ('.avro', 'avro')):
        if path.lower().endswith(extension):
            return name
    return table.format


def needs(table, kind: str) -> Optional[str]:
    """Why a listed customer's rows of ``table`` are left out of a backfill, or None when
    they are needed (pure): a customer who regained only the separate consent for sensitive
    data lacks nothing in a table without sensitive fields, and a table without a primary key
    cannot have a row replaced in place (its rows would be delivered twice)."""
    if kind != 'sensitive':
        return None
    if not any(f.classification == 'sensitive' for f in table.schema.fields):
        return 'complete already (no sensitive field)'
    if not table.schema.primary_key:
        return 'no primary key to replace its rows by'
    return None


def listed_rows(batch: pa.RecordBatch, table, listed: dict):
    """(table, row) of each row of a read batch whose customer is ``listed`` ({subject:
    what they regained}) and needs it, and ``('left out', 'TABLE: why')`` for each other row
    (pure)."""
    names = [n for n in batch.schema.names if n not in (SOURCE, ROW)]
    for row in batch.select(names).to_pylist():
        subject = next((str(row[f]) for f in table.subject_columns
                        if row.get(f) not in (None, '')), None)
        why = 'not listed' if subject not in listed else needs(table, listed[subject])
        if why is None:
            yield table.name, {k: v for k, v in row.items() if v is not None}
        else:
            yield LEFT_OUT, f'{table.name}: {why}'


def land_backfill(stream_dir: str, config, exports: Dict[str, str],
                  exported_at: Optional[datetime.datetime] = None, options=None) -> dict:
    """Read the targeted ``exports`` ({table: path}) and land the rows of the customers the
    stream listed in ``stream.backfill``; returns what landed."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.launch import local_runner
    s = config.stream
    if s is None or not s.backfill:
        raise ConfigError(f'{config.source}: stream.backfill: missing; give the directory the '
                          f'stream watches for backfills (e.g. feeds/backfill), then start the '
                          f'stream again')
    tables = {t.name: t for t in config.tables}
    for name in exports:
        if name not in tables:
            raise ConfigError(f'--export {name}=...: no table {name!r} in {config.source}; '
                              f'tables: {", ".join(sorted(tables))}')
    listed = {}
    for r in backfill_list(stream_dir, config.output.keys):  # 'rows' covers 'sensitive'
        listed[r['subject_id']] = 'rows' if 'rows' in (r['kind'], listed.get(
            r['subject_id'])) else r['kind']
    if not listed:
        raise NovationError(f'{stream_dir}: no epoch lists a customer to backfill')
    at = exported_at or datetime.datetime.now(datetime.timezone.utc)
    if at.tzinfo is None:
        raise NovationError('--exported-at: give the export\'s time with its zone')
    from apache_beam.io.filesystems import FileSystems
    for name, path in exports.items():  # before any row is read: one line for a wrong file
        table = dataclasses.replace(tables[name], path=path, format=export_format(path,
                                                                                  tables[name]))
        matched = FileSystems.match([path])[0].metadata_list
        if not matched:
            raise NovationError(f'--export {name}={path}: no such file')
        for m in matched:
            check_file(table, m.path)
    options = options or PipelineOptions([])
    stamp = at.astimezone(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    log = f'novation-backfill:{stamp}-{secrets.token_hex(3)}'
    name = BACKFILL_FILES.replace('*', log.split(':', 1)[1])
    with tempfile.TemporaryDirectory(prefix='novation-backfill-') as scratch:
        outcome = os.path.join(scratch, 'outcome.json')
        with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
            rows, bad = [], []
            for table_name, path in sorted(exports.items()):
                table = dataclasses.replace(tables[table_name], path=path,
                                            format=export_format(path, tables[table_name]))
                read = pipeline | f'Read{table_name}' >> ReadTable(table)
                rows.append(read[ReadTable.ROWS]
                            | f'Listed{table_name}' >> beam.FlatMap(listed_rows, table, listed))
                bad.append(read[ReadTable.DEAD]
                           | f'Bad{table_name}' >> beam.Map(lambda _, t=table_name: t))
            bad_rows = bad | 'AllBad' >> beam.Flatten() | 'Bad' >> beam.combiners.ToList()
            _ = (rows
                 | 'AllRows' >> beam.Flatten()
                 | 'Rows' >> beam.combiners.ToList()
                 | 'Land' >> beam.Map(land_rows, beam.pvalue.AsSingleton(bad_rows),
                                      directory=s.backfill, name=name, log=log,
                                      committed=int(at.timestamp() * 1000),
                                      tables=tables, outcome=outcome))
        with open(outcome, encoding='utf-8') as f:
            result = json.load(f)
    if result['unreadable']:
        raise NovationError(f'the targeted export has rows that cannot be read ('
                            f'{", ".join(f"{t} {n:,}" for t, n in result["unreadable"].items())}'
                            f'): fix the export; nothing was landed')
    if not result['rows']:
        raise NovationError(f'the targeted export holds no row of the {len(listed):,} '
                            f'customer(s) listed: nothing was landed')
    append_event(output_root(stream_dir.rstrip('/')), 'backfill_landed',
                 keys=config.output.keys, stream_id=stream_dir.rstrip('/').split('/')[-1],
                 file=name, rows=result['rows'], customers=result['customers'],
                 rows_left_out=sum(result['left_out'].values()))
    return {**result, 'listed': len(listed)}


def land_rows(rows, unreadable, *, directory, name, log, committed, tables, outcome) -> None:
    """Land the listed customers' ``rows`` ((table, row), or ('skipped', table)) as one file of
    snapshot reads in ``directory``, unless the export had ``unreadable`` rows; write what was
    done to ``outcome`` (JSON)."""
    kept = [(t, r) for t, r in rows if t != LEFT_OUT]
    result = {'unreadable': dict(sorted(collections.Counter(unreadable).items())),
              'left_out': dict(sorted(collections.Counter(
                  r for t, r in rows if t == LEFT_OUT).items())),
              'rows': 0, 'customers': 0, 'tables': {}, 'path': None}
    if kept and not unreadable:
        lines = [json.dumps({'table': t, 'op': 'r', 'row': r, 'committed_at': committed,
                             'position': n, 'source': log}, ensure_ascii=False,
                            default=_json_value) for n, (t, r) in enumerate(kept, 1)]
        result.update(
            path=_land(directory, name, lines), rows=len(kept),
            tables=dict(sorted(collections.Counter(t for t, _ in kept).items())),
            customers=len({next((str(r[f]) for f in tables[t].subject_columns
                                 if r.get(f) not in (None, '')), None) for t, r in kept}))
    with open(outcome, 'w', encoding='utf-8') as f:
        json.dump(result, f)


def _land(directory: str, name: str, lines) -> str:
    """The file written whole under a hidden name, then renamed into place (the stream reads
    only whole files)."""
    if has_scheme(directory):
        from apache_beam.io.filesystems import FileSystems
        temp = join(directory, f'.{name}.tmp')
        with FileSystems.create(temp) as f:
            f.write(''.join(line + '\n' for line in lines).encode('utf-8'))
        FileSystems.rename([temp], [join(directory, name)])
        return join(directory, name)
    os.makedirs(directory, exist_ok=True)
    temp = os.path.join(directory, f'.{name}.tmp')
    with open(temp, 'w', encoding='utf-8') as f:
        f.write(''.join(line + '\n' for line in lines))
    os.rename(temp, os.path.join(directory, name))
    return os.path.join(directory, name)
