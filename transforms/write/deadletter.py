"""Dead letters: seal each refusal (pseudonymize, encrypt the raw row) and write them encrypted.

Sealing applies the erasure list to every dead letter, whatever stage refused it: a customer who
asked for erasure never has a raw row kept, even one that was also malformed. Files are JSON
Lines inside Tink streaming AEAD (AES256_GCM_HKDF_1MB) under the ``deadletter`` keyset, which only
compliance operators hold, bound to the file's identity (run id and place in the run).
"""

import collections
import dataclasses
import datetime
import decimal
import json

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms.common import metrics, progress
from transforms.common.reasons import VALUE_REASONS
from transforms.keys.crypto import cached_keyed_ops, encrypting_stream
from transforms.keys.keyring import cached_keyring
from transforms.write.sink import WriteEncryptedFiles

__all__ = ['DEADLETTER_SUFFIX', 'EncryptedJsonLines', 'ROW_SAMPLE', 'WriteDeadLetters', 'encode',
           'problem_kind', 'seal']

DEADLETTER_SUFFIX = '.jsonl.enc'


def seal(letter, erased, pseudonymize, restricted=()) -> dict:
    """The record written for ``letter``: subject pseudonymized, erasures without the raw row.

    ``erased``: the subjects who asked for erasure (a set).

    ``restricted`` fields (C3 authentication data) never leave the seller, not even encrypted in
    a dead letter; a line that could not be split into columns is withheld whole if the table
    has any (its source file and row still say where to find it).
    """
    if letter.subject is not None and letter.subject in erased:
        letter = dataclasses.replace(letter, reason='erasure_requested', stage='consent',
                                     field=None, problem=None, raw=None)
    raw = letter.raw
    if raw is not None and restricted:
        raw = None if letter.stage == 'read' else \
            {k: v for k, v in raw.items() if k not in restricted}
    return {
        'reason': letter.reason,
        'stage': letter.stage,
        'table': letter.table,
        'source_file': letter.source_file,
        'row': letter.row,
        'field': letter.field,
        'problem': letter.problem,
        'subject_id': None if letter.subject is None else pseudonymize(letter.subject),
        'raw': raw,
        **({} if letter.change is None else {'change': letter.change}),
    }


def encode(record: dict) -> bytes:
    """A sealed record as its line in a dead-letter file: one encoding for the batch and the
    stream (dates and times in ISO 8601, decimals as their exact text, bytes in hex)."""
    return json.dumps(record, ensure_ascii=False, default=_json_default).encode('utf-8')


def _json_default(value):
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


class WriteDeadLetters(beam.PTransform):
    """Seal one table's refusals and write them encrypted.

    The input is a PCollection of DeadLetters or a tuple of them (the table's refusals at each
    step). Each is sealed and written by the step that refused it, in the same fused stage and
    worker: a local runner holds a Flatten's input in memory, which for dead letters would grow
    with the export. Outputs ``files`` (final paths) and ``counts``, one
    ``(('dead', table, source, reason), n)`` per bundle and reason, for the manifest, and for
    the report's detail ``(('problem', table, source, kind), n)`` and ``(('rows', table,
    source, kind), (row, ...))`` (the first ``ROW_SAMPLE`` rows), ``kind`` as
    ``problem_kind`` gives it.
    """
    FILES = 'files'
    COUNTS = 'counts'

    def __init__(self, table_name, tables, erased, run, keys_path):
        """``erased``: a single-element PCollection, the set of subjects who asked for erasure
        (``transforms.consent.gate.ErasedSubjects``)."""
        super().__init__()
        self._domains = {t.name: t.subject_domain for t in tables}
        self._restricted = {t.name: tuple(r.field.name for r in t.rules
                                          if r.field.classification == 'restricted')
                            for t in tables}
        self._erased = erased
        self._keys_path = keys_path
        self._write = WriteEncryptedFiles(run.run_dir, run.run_id, 'deadletter',
                                          table_name, EncryptedJsonLines(keys_path))

    def expand(self, letters):
        branches = letters if isinstance(letters, tuple) else (letters,)
        sealed = [branch | f'Seal{i}' >> beam.ParDo(
            _SealFn(self._domains, self._restricted, self._keys_path),
            beam.pvalue.AsSingleton(self._erased)).with_outputs(self.COUNTS, main='lines')
            for i, branch in enumerate(branches)]
        return {self.FILES: tuple(s.lines for s in sealed) | 'Encrypted' >> self._write,
                self.COUNTS: tuple(s[self.COUNTS] for s in sealed) | 'Counts' >> beam.Flatten()}


class _SealFn(beam.DoFn):
    """DeadLetter -> its JSON line; the letters of each (table, source, reason) counted per
    bundle."""

    def __init__(self, domains, restricted, keys_path):
        self._domains = domains
        self._restricted = restricted
        self._keys_path = keys_path
        self._ops = None
        self._counts = None

    def setup(self):
        self._ops = cached_keyed_ops(self._keys_path)

    def start_bundle(self):
        self._counts = collections.Counter()
        self._rows = collections.defaultdict(list)

    def process(self, letter, erased):
        domain = self._domains[letter.table]
        record = seal(letter, erased,
                      lambda s: self._ops.pseudonym(domain, s),
                      self._restricted[letter.table])
        place = (record['table'], record['source_file'])
        self._counts[('dead',) + place + (record['reason'],)] += 1
        detail = place + (problem_kind(record, letter.raw),)
        self._counts[('problem',) + detail] += 1
        if len(self._rows[detail]) < ROW_SAMPLE and record['row'] is not None:
            self._rows[detail].append(record['row'])
        progress.count('dead', letter.table)
        yield encode(record)

    def finish_bundle(self):
        progress.flush()
        for (kind, table, _, reason), n in self._counts.items():
            if kind == 'dead':  # the runner's console, once a bundle (transforms.common.metrics)
                metrics.count(table, f'dead_letters/{reason}', n)
        out = list(self._counts.items()) + [(('rows',) + detail, tuple(rows))
                                            for detail, rows in self._rows.items()]
        for key, value in out:
            yield beam.pvalue.TaggedOutput(WriteDeadLetters.COUNTS, GlobalWindows.windowed_value(
                (key, value)))


ROW_SAMPLE = 20  # source rows kept per kind of problem and source file, for the report


def problem_kind(record: dict, raw) -> tuple:
    """(reason, field, problem, got) of a sealed dead letter, for the report's detail: what
    was found where a value was expected is described by its kind and length, never shown."""
    field = record.get('field') or ''
    got = ''
    if record['reason'] in VALUE_REASONS and field and ',' not in field and isinstance(raw, dict):
        value = raw.get(field)
        got = ('nothing' if value is None or value == '' else
               f'text of {len(value)} characters' if isinstance(value, str) else
               'a boolean' if isinstance(value, bool) else
               'a number' if isinstance(value, (int, float, decimal.Decimal)) else
               f'a {type(value).__name__}')
    return record['reason'], field, record.get('problem') or '', got


class EncryptedJsonLines:
    """JSON lines in Tink streaming AEAD under one key role (``deadletter`` by default).
    A value written may hold several lines."""
    suffix = DEADLETTER_SUFFIX

    def __init__(self, keys_path, role='deadletter'):
        self._keys_path = keys_path
        self.role = role
        self.roles = (role,)

    def open(self, handle, identity):
        keyring = cached_keyring(self._keys_path, self.roles)
        return encrypting_stream(keyring, self.role, handle, identity)

    def write(self, stream, line):
        stream.write(line + b'\n')

    def close(self, stream):
        stream.close()  # closes the underlying file too
