"""The manifests' shapes: one definition for each writer (``transforms.commit.manifest`` for a
batch run, ``transforms.stream.chain`` for a stream's epochs) and every reader (``decrypt``,
``verify``, ``report``, ``review``, ``replay``, ``incident``, a restarted stream).

``Manifest`` and its parts are typed dictionaries, so the code that builds and reads them says
what it expects; ``SCHEMA`` is the same shape as a JSON Schema (draft 2020-12), published as
docs/manifest.schema.json for readers without Novation (a test keeps the two equal). The
format is versioned by ``format`` (``MANIFEST_FORMAT``, ``EPOCH_FORMAT``): a change that a
reader of the version before could misread gets a new number. ``check`` and ``check_epoch`` are
what a reader runs after the seal checks: a manifest that does not have its shape is refused in
one line naming where. ``EPOCH_SCHEMA`` is published as docs/epoch-manifest.schema.json.
Pure: neither Beam nor Tink.
"""

from typing import Dict, List, Optional, TypedDict

import jsonschema

from transforms.common.errors import NovationError
from transforms.common.reasons import REASONS
from transforms.common.run import RUN_ID_PATTERN

__all__ = ['EPOCH_FORMAT', 'EPOCH_SCHEMA', 'MANIFEST_FORMAT', 'SCHEMA', 'FileEntry', 'Manifest',
           'SourceEntry', 'TableEntry', 'check', 'check_epoch']

MANIFEST_FORMAT = 'novation-manifest/1'
EPOCH_FORMAT = 'novation-epoch/1'


class FileEntry(TypedDict):
    path: str               # inside the run directory, e.g. data/customers/part-<16 hex>.parquet
    rows: int
    bytes: int
    crc32c: str             # 8 hex digits, of the file's bytes as written
    keys: Dict[str, int]    # key role -> the id of the key it was encrypted under


class FieldEntry(TypedDict, total=False):
    name: str
    classification: str
    category: Optional[str]
    masking: str
    domain: str             # of hash and tokenize


class TableEntry(TypedDict):
    rows_read: int
    rows_written: int
    dead_letters: Dict[str, int]            # reason -> rows
    sensitive_suppressed_rows: int
    ignored_columns: List[str]
    missing_columns: List[str]
    format: str                             # parquet or avro
    subject_key: Optional[str]
    fields: List[FieldEntry]
    column_keys: Dict[str, List[str]]       # key role -> delivered columns under it
    files: List[FileEntry]
    deadletter_files: List[FileEntry]
    dead_letter_detail: List[dict]


class SourceEntry(TypedDict, total=False):
    path: str
    table: str
    rows_read: int
    rows_written: int
    dead_letters: Dict[str, int]
    ignored_columns: List[str]
    missing_columns: List[str]
    lines: int                              # physical lines of a text file


class Manifest(TypedDict, total=False):
    format: str
    run_id: str
    completed_at: str
    config_sha256: str
    plan_sha256: Optional[str]
    plan_checked: bool
    audit_started_sha256: Optional[str]
    transfer: dict
    keys: Dict[str, dict]
    encryption: Dict[str, str]
    replay_of: Optional[str]
    risk: Optional[dict]
    conservation: str
    totals: dict
    tables: Dict[str, TableEntry]
    sources: List[SourceEntry]
    notice: dict


_COUNT = {'type': 'integer', 'minimum': 0}
_SHA256 = {'type': 'string', 'pattern': '^[0-9a-f]{64}$'}
_NAMES = {'type': 'array', 'items': {'type': 'string'}}
_BY_REASON = {'type': 'object', 'propertyNames': {'enum': list(REASONS)},
              'additionalProperties': _COUNT}
_FILE = {
    'type': 'object', 'additionalProperties': False,
    'required': ['path', 'rows', 'bytes', 'crc32c', 'keys'],
    'properties': {
        'path': {'type': 'string', 'minLength': 1},
        'rows': _COUNT, 'bytes': _COUNT,
        'crc32c': {'type': 'string', 'pattern': '^[0-9a-f]{8}$'},
        'keys': {'type': 'object', 'additionalProperties': {'type': 'integer'}},
    },
}
_FIELD = {
    'type': 'object', 'required': ['name', 'classification', 'masking'],
    'properties': {
        'name': {'type': 'string'},
        'classification': {'enum': ['public', 'internal', 'personal', 'sensitive',
                                    'restricted']},
        'category': {'type': ['string', 'null']},
        'masking': {'type': 'string'},
        'domain': {'type': 'string'},
    },
}
_TABLE = {
    'type': 'object',
    'required': ['rows_read', 'rows_written', 'dead_letters', 'sensitive_suppressed_rows',
                 'ignored_columns', 'missing_columns', 'format', 'subject_key', 'fields',
                 'column_keys', 'files', 'deadletter_files', 'dead_letter_detail'],
    'properties': {
        'rows_read': _COUNT, 'rows_written': _COUNT, 'dead_letters': _BY_REASON,
        'sensitive_suppressed_rows': _COUNT,
        'ignored_columns': _NAMES, 'missing_columns': _NAMES,
        'format': {'enum': ['parquet', 'avro']},
        'subject_key': {'type': ['string', 'null']},
        'fields': {'type': 'array', 'items': _FIELD},
        'column_keys': {'type': 'object', 'additionalProperties': _NAMES},
        'files': {'type': 'array', 'items': _FILE},
        'deadletter_files': {'type': 'array', 'items': _FILE},
        'dead_letter_detail': {'type': 'array', 'items': {
            'type': 'object', 'required': ['reason', 'source_file', 'count', 'first_rows'],
            'properties': {'reason': {'enum': list(REASONS)}, 'count': _COUNT,
                           'first_rows': {'type': 'array', 'items': _COUNT}}}},
    },
}
_SOURCE = {
    'type': 'object', 'required': ['path', 'table', 'rows_read', 'rows_written', 'dead_letters'],
    'properties': {'path': {'type': 'string'}, 'table': {'type': 'string'},
                   'rows_read': _COUNT, 'rows_written': _COUNT, 'dead_letters': _BY_REASON,
                   'ignored_columns': _NAMES, 'missing_columns': _NAMES, 'lines': _COUNT},
}
SCHEMA = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    '$id': 'https://novation.invalid/schemas/' + MANIFEST_FORMAT.replace('/', '-') + '.json',
    'title': 'Novation run manifest (' + MANIFEST_FORMAT + ')',
    'description': 'manifest.json of a batch run: what was delivered, refused and why, with '
                   'every file\'s size and crc32c. Believe it only once manifest.json.seal '
                   'checks (ED25519, the keyring\'s manifest key).',
    'type': 'object',
    'required': ['format', 'run_id', 'completed_at', 'config_sha256', 'plan_sha256',
                 'transfer', 'keys', 'encryption', 'conservation', 'totals', 'tables',
                 'sources'],
    'properties': {
        'format': {'const': MANIFEST_FORMAT},
        'run_id': {'type': 'string', 'pattern': f'^{RUN_ID_PATTERN}$'},
        'completed_at': {'type': 'string'},
        'config_sha256': _SHA256,
        'plan_sha256': {'anyOf': [_SHA256, {'type': 'null'}]},
        'plan_checked': {'type': 'boolean'},
        'audit_started_sha256': {'anyOf': [_SHA256, {'type': 'null'}]},
        'transfer': {'type': 'object'},
        'keys': {'type': 'object', 'additionalProperties': {
            'type': 'object', 'required': ['primary', 'keys'],
            'properties': {'primary': {'type': 'integer'},
                           'keys': {'type': 'array', 'items': {'type': 'integer'}}}}},
        'encryption': {'type': 'object', 'additionalProperties': {'type': 'string'}},
        'replay_of': {'type': ['string', 'null']},
        'risk': {'type': ['object', 'null']},
        'conservation': {'type': 'string'},
        'totals': {'type': 'object', 'required': ['rows_read', 'rows_written', 'dead_letters'],
                   'properties': {'rows_read': _COUNT, 'rows_written': _COUNT,
                                  'dead_letters': _BY_REASON}},
        'tables': {'type': 'object', 'additionalProperties': _TABLE},
        'sources': {'type': 'array', 'items': _SOURCE},
        'notice': {'type': 'object'},
    },
}
_EPOCH_FILE = {**_FILE, 'required': ['table', 'kind', *_FILE['required']],
               'properties': {**_FILE['properties'], 'table': {'type': 'string'},
                              'kind': {'enum': ['data', 'deadletter', 'retractions',
                                                'backfill']}}}
_LINES = {'type': 'array', 'items': {'type': 'array', 'prefixItems': [_COUNT, _COUNT],
                                     'minItems': 2, 'maxItems': 2}}
EPOCH_SCHEMA = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    '$id': 'https://novation.invalid/schemas/' + EPOCH_FORMAT.replace('/', '-') + '.json',
    'title': 'Novation stream epoch manifest (' + EPOCH_FORMAT + ')',
    'description': 'epochs/NNNNNN/manifest.json of a stream: the changes one epoch delivered, '
                   'refused and retracted, every file with its size and crc32c, every feed line '
                   'it accounts for, and the sha256 of the epoch before. Believe it only once '
                   'its seal checks and the chain holds.',
    'type': 'object',
    'required': ['format', 'run_id', 'epoch', 'committed_at', 'previous_manifest_sha256',
                 'plan_sha256', 'config_sha256', 'tables', 'retractions', 'files', 'sources',
                 'consumed', 'outcomes'],
    'properties': {
        'format': {'const': EPOCH_FORMAT},
        'run_id': {'type': 'string', 'pattern': f'^{RUN_ID_PATTERN}$'},
        'epoch': {'type': 'integer', 'minimum': 1},
        'committed_at': {'type': 'string'},
        'previous_manifest_sha256': {'anyOf': [_SHA256, {'type': 'null'}]},
        'latest_change_at': {'type': ['string', 'null']},
        'plan_sha256': {'anyOf': [_SHA256, {'type': 'null'}]},
        'config_sha256': {'anyOf': [_SHA256, {'type': 'null'}]},
        'audit_started_sha256': {'anyOf': [_SHA256, {'type': 'null'}]},
        'tables': {'type': 'object', 'additionalProperties': {
            'type': 'object', 'required': ['rows_written', 'ops', 'dead_letters'],
            'properties': {'rows_written': _COUNT, 'dead_letters': _BY_REASON,
                           'ops': {'type': 'object', 'propertyNames': {'enum': ['c', 'u', 'd',
                                                                                'r']},
                                   'additionalProperties': _COUNT}}}},
        'retractions': _COUNT,
        'retraction_ids': _NAMES,
        'backfill': {'type': 'object'},
        'files': {'type': 'array', 'items': _EPOCH_FILE},
        'files_read': {'type': 'array'},
        'held_columns': {'type': 'object'},
        'sources': {'type': 'array', 'items': {
            'type': 'object', 'required': ['path', 'changes'],
            'properties': {'path': {'type': 'string'}, 'changes': _COUNT}}},
        'consumed': {'type': 'array', 'items': {
            'type': 'object', 'required': ['path', 'lines'],
            'properties': {'path': {'type': 'string'}, 'lines': _LINES}}},
        'outcomes': {'type': 'object', 'additionalProperties': {'type': 'object'}},
    },
}
_VALIDATORS = {MANIFEST_FORMAT: jsonschema.Draft202012Validator(SCHEMA),
               EPOCH_FORMAT: jsonschema.Draft202012Validator(EPOCH_SCHEMA)}


def check(manifest, where: str) -> Manifest:
    """``manifest`` if it has the shape of ``MANIFEST_FORMAT``; else NovationError naming the
    first place that does not (never a value: a manifest holds no personal data, but a
    changed one may hold anything)."""
    return _checked(manifest, where, MANIFEST_FORMAT)


def check_epoch(manifest, where: str) -> dict:
    """``manifest`` if it has the shape of ``EPOCH_FORMAT``; else NovationError, as ``check``."""
    return _checked(manifest, where, EPOCH_FORMAT)


def _checked(manifest, where: str, form: str):
    error = next(iter(sorted(_VALIDATORS[form].iter_errors(manifest),
                             key=lambda e: list(e.path))), None)
    if error is None:
        return manifest
    place = ''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in error.path)
    validator = 'propertyNames' if 'propertyNames' in error.schema_path else error.validator
    what = {'required': 'lacks a required key', 'additionalProperties': 'has an unknown key',
            'const': 'is not ' + form, 'pattern': 'is not in its form',
            'enum': 'is not one of the allowed values', 'propertyNames': 'names an unknown key',
            }.get(validator, f'is not what {form} holds ({validator})')
    raise NovationError(f'{where}: {place.lstrip(".") or "the manifest"} {what}; the manifest '
                        f'is refused')
