"""Commit: check every written file, prove conservation, write ``manifest.json`` last.

Runs inside the pipeline after all writes are finalized (on Dataflow the launcher may detach).
Each output file is read back: its bytes are checksummed (crc32c) and its rows counted after
decryption under its own identity, so the manifest vouches for files that really open with the
keys, in their place. Each file is listed with the key roles and key ids it needs. A run
directory without ``manifest.json`` is incomplete; the manifest is sealed (signed under the
``manifest`` key, ``transforms.keys.seal``) and readers check the seal first.
"""

import datetime
import hashlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import google_crc32c

from transforms.common import interrupts

from transforms.common import progress
from transforms.keys.crypto import file_identity
from transforms.write.deadletter import ROW_SAMPLE
from transforms.write.delivered import count_rows, file_kind
from transforms.common.files import write_json, write_whole
from transforms.keys.keyring import cached_keyring
from transforms.common.errors import DeadLetterLimitExceeded, RiskLimitExceeded
from transforms.common.reasons import DATA_QUALITY_REASONS, REASONS
from transforms.common.run import Run
from transforms.commit.manifest_schema import MANIFEST_FORMAT, Manifest
from transforms.keys.seal import write_sealed_json

__all__ = ['MANIFEST_FILE', 'WriteManifest', 'build_manifest', 'file_facts', 'percent',
           'relative_path', 'write_report']

MANIFEST_FILE = 'manifest.json'
_CHUNK = 4 << 20
ENCRYPTION = {
    'parquet': 'Parquet Modular Encryption, AES_GCM_V1, fresh 256-bit data keys per file, '
               'encrypted footer; every column encrypted and authenticated, under the master '
               'key of its classification (data.*; public columns under data.footer) or its '
               'own key (column.*), as listed in column_keys',
    'avro': 'Avro object container (deflate) in Tink streaming AEAD AES256_GCM_HKDF_1MB '
            '(data.avro)',
}


class Tally(beam.CombineFn):
    """Counts add up; samples of row numbers (tuples) keep their ``ROW_SAMPLE`` smallest."""

    def create_accumulator(self):
        return None

    def add_input(self, total, value):
        if isinstance(value, tuple):
            return tuple(sorted(set(total or ()) | set(value))[:ROW_SAMPLE])
        return (total or 0) + value

    def merge_accumulators(self, totals):
        merged = None
        for total in totals:
            if total is not None:
                merged = self.add_input(merged, total)
        return merged

    def extract_output(self, total):
        return total


class WriteManifest(beam.PTransform):
    """Takes ``counts`` (((kind, table, source, reason), n)), ``files`` ((table, kind, path))
    and, if the config marks quasi-identifiers, ``risk`` (one dict of figures, from
    ``transforms.commit.risk``); outputs the manifest dict once it is written."""

    def __init__(self, run):
        super().__init__()
        self._run = run  # transforms.common.run.Run

    def expand(self, inputs):
        counts = (inputs['counts']
                  | 'SumCounts' >> beam.CombinePerKey(Tally())
                  | 'AllCounts' >> beam.combiners.ToList())
        files = (inputs['files']
                 | 'CheckFiles' >> beam.ParDo(_FileFactsFn(self._run))
                 | 'AllFiles' >> beam.combiners.ToList())
        risk, notice = inputs.get('risk'), inputs.get('notice')
        return (inputs['files'].pipeline
                | 'Start' >> beam.Create([None])
                | 'Write' >> beam.Map(_write_manifest, self._run,
                                      beam.pvalue.AsSingleton(counts),
                                      beam.pvalue.AsSingleton(files),
                                      beam.pvalue.AsSingleton(risk) if risk is not None
                                      else None,
                                      beam.pvalue.AsSingleton(notice) if notice is not None
                                      else None))


def relative_path(run_dir: str, path: str) -> str:
    prefix = run_dir.rstrip('/') + '/'
    return path[len(prefix):] if path.startswith(prefix) else path


def file_facts(path: str, relative: str, *, run_id: str, keys_path: str, roles,
               key_ids: dict) -> dict:
    """A written file as a manifest lists it: its place, rows (counted by decrypting it under
    its identity), bytes, crc32c and the key ids of ``roles`` it needs."""
    checksum = google_crc32c.Checksum()
    size = 0
    with FileSystems.open(path) as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            checksum.update(chunk)
            size += len(chunk)
    keyring = cached_keyring(keys_path, roles)
    with FileSystems.open(path) as f:
        rows = count_rows(file_kind(path), f, keyring, file_identity(run_id, relative))
    return {'path': relative, 'rows': rows, 'bytes': size, 'crc32c': checksum.digest().hex(),
            'keys': {role: key_ids[role]['primary'] for role in roles}}


class _FileFactsFn(beam.DoFn):
    def __init__(self, run):
        self._run = run

    def process(self, item):
        table, kind, path = item
        roles = self._run.file_roles[table] if kind == 'data' else ['deadletter']
        facts = file_facts(path, relative_path(self._run.run_dir, path),
                           run_id=self._run.run_id, keys_path=self._run.keys_path,
                           roles=roles, key_ids=self._run.key_ids)
        progress.count('files', table)
        progress.flush()
        yield {'table': table, 'kind': kind, **facts}


def _write_manifest(_, run, counts, files, risk, notice):
    from transforms.commit.audit import append_event
    try:
        manifest = build_manifest(run, dict(counts), files, risk)
        manifest['notice'] = notice  # counts only: the list itself stays with the seller
    except DeadLetterLimitExceeded as e:  # the run is aborted: the log says so, and why
        if run.output_root:
            append_event(run.output_root, 'run_aborted', keys=run.keys_path,
                         run_id=run.run_id, why=str(e))
        raise
    with interrupts.deferred():  # the commit is whole or not at all
        data = write_sealed_json(run.run_dir, MANIFEST_FILE, manifest, run.keys_path,
                                 file_identity(run.run_id, MANIFEST_FILE))
        write_report(run.run_dir, manifest, run.report_lang)
        if run.output_root:
            append_event(run.output_root, 'run_committed', keys=run.keys_path,
                         run_id=run.run_id,
                         manifest_sha256=hashlib.sha256(data).hexdigest(),
                         rows_read=manifest['totals']['rows_read'],
                         rows_written=manifest['totals']['rows_written'])
    return manifest


def write_report(run_dir: str, manifest: dict, lang: str) -> dict:
    """``report.json`` and ``report.html`` of a run, from its manifest; returns the report."""
    from transforms.commit.report import REPORT_HTML, REPORT_JSON, build_report, render_html
    report = build_report(manifest, lang)
    write_json(run_dir, REPORT_JSON, report)
    write_whole(run_dir, REPORT_HTML, render_html(report).encode('utf-8'))
    return report


def _new_source(table, path):
    return {'path': path, 'table': table, 'rows_read': 0, 'rows_written': 0, 'dead_letters': {},
            'ignored_columns': [], 'missing_columns': []}


def percent(share: float) -> str:
    """A share as a percentage with three significant digits, so small limits stay visible:
    0.0001 is 0.01%, not 0.0%."""
    return f'{share * 100:.3g}%'


def build_manifest(run: Run, counts: dict, files: list, risk: dict = None) -> Manifest:
    """Assemble and check the manifest (pure).

    ``counts`` maps (kind, table, source, reason) to a count, kind in read|lines|written|dead|
    suppressed|ignored|missing (for ignored, ``reason`` is the column left out; for missing,
    the field no column of the file holds, delivered as nulls). Raises
    DeadLetterLimitExceeded above ``run.max_ratio`` of bad data in a table, and
    AssertionError if any count does not add up (a bug: nothing may be lost).
    """
    tables = {name: {'rows_read': 0, 'rows_written': 0, 'dead_letters': {},
                     'sensitive_suppressed_rows': 0, 'ignored_columns': [],
                     'missing_columns': [],
                     'format': run.output_format,
                     'subject_key': run.subject_keys.get(name),
                     'fields': run.fields[name],
                     'column_keys': run.column_keys[name],
                     'files': [], 'deadletter_files': []}
              for name in run.tables}
    sources = {}
    problems = {}  # (table, source, kind) -> {count, rows}
    for (kind, table, source, reason), n in sorted(counts.items()):
        t = tables[table]
        if kind in ('problem', 'rows'):
            entry = problems.setdefault((table, source, reason), {'count': 0, 'rows': []})
            entry.update({'count': n} if kind == 'problem' else {'rows': list(n)})
            continue
        if kind == 'suppressed':
            t['sensitive_suppressed_rows'] += n
            continue
        if kind in ('ignored', 'missing'):
            key = f'{kind}_columns'
            t[key] = sorted(set(t[key]) | {reason})
            sources.setdefault((table, source), _new_source(table, source))[key].append(reason)
            continue
        s = sources.setdefault((table, source), _new_source(table, source))
        if kind == 'lines':
            # beside rows_read: a line break inside a quoted value shows as the difference
            s['lines'] = s.get('lines', 0) + n
        elif kind == 'read':
            s['rows_read'] += n
            t['rows_read'] += n
        elif kind == 'written':
            s['rows_written'] += n
            t['rows_written'] += n
        elif kind == 'dead':
            s['dead_letters'][reason] = s['dead_letters'].get(reason, 0) + n
            t['dead_letters'][reason] = t['dead_letters'].get(reason, 0) + n
    for name, t in tables.items():
        # what the report shows a compliance operator to look up at the seller: each kind of
        # problem (never a value), its source file, count and first rows
        t['dead_letter_detail'] = [
            {'reason': reason, 'field': field, 'problem': problem, 'got': got,
             'source_file': source, 'count': p['count'], 'first_rows': p['rows']}
            for (table, source, (reason, field, problem, got)), p in sorted(
                problems.items(), key=lambda kv: (kv[0][2], kv[0][1])) if table == name]
    for f in sorted(files, key=lambda f: f['path']):
        entry = {k: f[k] for k in ('path', 'rows', 'bytes', 'crc32c', 'keys')}
        tables[f['table']]['files' if f['kind'] == 'data' else 'deadletter_files'].append(entry)
    for s in sources.values():
        dead = sum(s['dead_letters'].values())
        assert s['rows_read'] == s['rows_written'] + dead, \
            f'conservation violated for {s["path"]}: {s}'
    for name, t in tables.items():
        dead = sum(t['dead_letters'].values())
        assert t['rows_read'] == t['rows_written'] + dead, f'conservation violated for {name}'
        assert t['rows_written'] == sum(f['rows'] for f in t['files']), \
            f'{name}: rows in the data files differ from the rows written'
        assert dead == sum(f['rows'] for f in t['deadletter_files']), \
            f'{name}: rows in the dead-letter files differ from the dead letters counted'
        t['dead_letters'] = dict(sorted(t['dead_letters'].items()))
        bad = sum(n for r, n in t['dead_letters'].items() if r in DATA_QUALITY_REASONS)
        if t['rows_read'] and bad / t['rows_read'] > run.max_ratio:
            raise DeadLetterLimitExceeded(
                f'table {name}: {bad} of {t["rows_read"]} rows ({percent(bad / t["rows_read"])}) '
                f'are malformed, missing required values or duplicates, above '
                f'deadletter.max_ratio {percent(run.max_ratio)} in {run.config}; the run is '
                f'aborted and has no manifest')
    if risk is not None:
        risk = {**risk, **run.risk}
        if run.risk['enforce'] and risk['customers'] and risk['k'] < risk['min_k']:
            raise RiskLimitExceeded(
                f'{risk["customers_below_min_k"]:,} of {risk["customers"]:,} customers '
                f'({percent(risk["share_below_min_k"])}) are in classes of quasi-identifiers '
                f'smaller than risk.min_k {risk["min_k"]} (the smallest holds {risk["k"]}) in '
                f'{run.config}, and risk.enforce is on; the run is aborted and has no '
                f'manifest: generalize the quasi-identifiers further')
    totals = {'rows_read': sum(t['rows_read'] for t in tables.values()),
              'rows_written': sum(t['rows_written'] for t in tables.values()),
              'dead_letters': {r: sum(t['dead_letters'].get(r, 0) for t in tables.values())
                               for r in REASONS}}
    return {
        'format': MANIFEST_FORMAT,
        'run_id': run.run_id,
        'completed_at': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'config_sha256': run.config_sha256,
        'plan_sha256': run.plan_sha256,
        'plan_checked': run.plan_checked,  # against --plan-hash, before the run
        'audit_started_sha256': run.audit_started_sha256,
        'transfer': run.transfer,
        'keys': run.key_ids,
        'encryption': {
            'data': ENCRYPTION[run.output_format],
            'deadletter': 'JSON Lines in Tink streaming AEAD AES256_GCM_HKDF_1MB (deadletter)',
            'binding': 'each file is bound to its identity "<run_id>/<path>": Parquet data keys '
                       'are wrapped with "<identity>|<role>" as associated data, streams use '
                       '"<identity>" as associated data',
        },
        'replay_of': run.replay_of,
        'risk': risk,
        'conservation': 'rows_read = rows_written + sum(dead_letters), per table and per '
                        'source file: verified',
        'totals': totals,
        'tables': tables,
        'sources': sorted(sources.values(), key=lambda s: (s['table'], s['path'])),
    }
