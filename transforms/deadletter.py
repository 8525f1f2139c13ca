"""Dead letters: seal each refusal (pseudonymize, encrypt the raw row) and write them encrypted.

Sealing applies the erasure list to every dead letter, whatever stage refused it: a customer who
asked for erasure never has a raw row kept, even one that was also malformed. Files are JSON
Lines inside Tink streaming AEAD (AES256_GCM_HKDF_1MB) under the ``deadletter`` keyset, which only
compliance operators hold; associated data binds run id and table.
"""

import dataclasses
import datetime
import decimal
import json

import apache_beam as beam
from apache_beam.io import filebasedsink, iobase
from apache_beam.io.filesystem import CompressionTypes

from transforms.consent import verdict
from transforms.crypto import cached_keyed_ops, cached_keyring, encrypting_stream
from transforms.files import join

__all__ = ['SealDeadLetters', 'WriteDeadLetters', 'deadletter_associated_data', 'seal']


def deadletter_associated_data(run_id: str, table: str) -> bytes:
    return f'novation/deadletter/{run_id}/{table}'.encode('utf-8')


def seal(letter, decisions, pseudonymize, restricted=()) -> dict:
    """The record written for ``letter``: subject pseudonymized, erasures without the raw row.

    ``restricted`` fields (C3 authentication data) never leave the seller, not even encrypted in
    a dead letter; a line that could not be split into columns is withheld whole if the table
    has any (its source file and row still say where to find it).
    """
    if letter.subject is not None and \
            verdict(decisions, letter.subject).reason == 'erasure_requested':
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
    }


def _json_default(value):
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


class SealDeadLetters(beam.PTransform):
    """DeadLetter -> (table, source, reason, JSON line bytes)."""

    def __init__(self, tables, decisions, keys_path):
        super().__init__()
        self._domains = {t.name: t.subject_domain for t in tables}
        self._restricted = {t.name: tuple(r.field.name for r in t.rules
                                          if r.field.classification == 'restricted')
                            for t in tables}
        self._decisions = decisions
        self._keys_path = keys_path

    def expand(self, letters):
        return letters | 'Seal' >> beam.ParDo(
            _SealFn(self._domains, self._restricted, self._keys_path),
            beam.pvalue.AsSingleton(self._decisions))


class _SealFn(beam.DoFn):
    def __init__(self, domains, restricted, keys_path):
        self._domains = domains
        self._restricted = restricted
        self._keys_path = keys_path
        self._ops = None

    def setup(self):
        self._ops = cached_keyed_ops(self._keys_path)

    def process(self, letter, decisions):
        domain = self._domains[letter.table]
        record = seal(letter, decisions,
                      lambda s: self._ops.pseudonyms(domain, [s.encode('utf-8')])[0],
                      self._restricted[letter.table])
        line = json.dumps(record, ensure_ascii=False, default=_json_default).encode('utf-8')
        yield record['table'], record['source_file'], record['reason'], line


class WriteDeadLetters(beam.PTransform):
    """Write one table's sealed dead letters; outputs the final file paths."""

    def __init__(self, table_name, run_dir, run_id, keys_path):
        super().__init__()
        self._sink = _EncryptedJsonLinesSink(
            join(run_dir, 'deadletter', table_name, 'part'),
            deadletter_associated_data(run_id, table_name), keys_path)

    def expand(self, sealed):
        return (sealed
                | 'Lines' >> beam.Map(lambda item: item[3])
                | 'Encrypted' >> iobase.Write(self._sink))


class _EncryptedJsonLinesSink(filebasedsink.FileBasedSink):
    def __init__(self, prefix, associated_data, keys_path):
        super().__init__(prefix, coder=None, file_name_suffix='.jsonl.enc', num_shards=0,
                         shard_name_template='-SSSSS-of-NNNNN',
                         mime_type='application/octet-stream',
                         compression_type=CompressionTypes.UNCOMPRESSED)
        self._associated_data = associated_data
        self._keys_path = keys_path

    def open(self, temp_path):
        keyring = cached_keyring(self._keys_path, ('deadletter',))
        return encrypting_stream(keyring, super().open(temp_path), self._associated_data)

    def write_record(self, file_handle, value):
        file_handle.write(value + b'\n')

    def close(self, file_handle):
        file_handle.close()  # closes the underlying file too
