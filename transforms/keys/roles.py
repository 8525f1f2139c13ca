"""The key roles: one registry of what each role's key is and what it protects.

The keyring builds each role's Tink keyset from ``kind``; the config checks, the plan, the
manifest's ``column_keys`` and the table in docs/keys.md (a test compares it) read the rest from
here. Pure: neither Tink nor Beam.
"""

from typing import NamedTuple

__all__ = ['BASE_ROLES', 'COLUMN_PREFIX', 'DATA_ROLES', 'DETERMINISTIC_ROLES', 'ROLES', 'KeyRole',
           'column_keys', 'column_role', 'data_role', 'file_roles', 'key_role', 'roles_table']


class KeyRole(NamedTuple):
    name: str
    kind: str        # the Tink primitive: prf, daead, aead, streaming_aead or signature
    key: str         # the Tink key, in words
    used_for: str    # what the role's key protects, for the people who hold it


_GCM = 'AES-256-GCM'
_STREAMING = 'streaming AEAD AES256_GCM_HKDF_1MB'
ROLES = (
    KeyRole('pseudonym', 'prf', 'HMAC-SHA256 PRF',
            '`hash`, `date_shift`, the subject id of dead letters'),
    KeyRole('token', 'daead', 'AES-SIV (deterministic AEAD)',
            '`tokenize`, `novation detokenize`'),
    KeyRole('data.footer', 'aead', _GCM, 'Parquet: the footer and public columns'),
    KeyRole('data.internal', 'aead', _GCM, 'Parquet: internal columns'),
    KeyRole('data.personal', 'aead', _GCM, 'Parquet: personal columns'),
    KeyRole('data.sensitive', 'aead', _GCM, 'Parquet: sensitive columns'),
    KeyRole('data.avro', 'streaming_aead', _STREAMING, 'Avro output files'),
    KeyRole('deadletter', 'streaming_aead', _STREAMING,
            'dead letters, the stream\'s state and backfill lists (compliance operators only)'),
    KeyRole('notice', 'streaming_aead', _STREAMING,
            'the seller\'s notification list (never the acquirer)'),
    KeyRole('manifest', 'signature', 'ED25519 signature',
            'the seal of every manifest; readers need only its public half'),
)
COLUMN_PREFIX = 'column.'
COLUMN_ROLE = KeyRole(COLUMN_PREFIX + 'NAME', 'aead', _GCM,
                      'a Parquet column under its own key (method `encrypt`)')
BASE_ROLES = tuple(r.name for r in ROLES)
DATA_ROLES = tuple(r.name for r in ROLES if r.kind == 'aead')
# Rotating these changes every pseudonym or token: joins with earlier deliveries break.
DETERMINISTIC_ROLES = ('pseudonym', 'token')


def column_role(key_name: str) -> str:
    """The role of a column under its own key (masking method ``encrypt``)."""
    return COLUMN_PREFIX + key_name


def data_role(classification: str) -> str:
    """The PME master key role for a delivered column of this classification."""
    return 'data.footer' if classification == 'public' else f'data.{classification}'


def key_role(rule) -> str:
    """The master key role a delivered column is encrypted under (Parquet)."""
    if rule.operator.name == 'encrypt':
        return column_role(rule.operator.key)
    return data_role(rule.field.classification)


def column_keys(table, output_format: str = 'parquet') -> dict:
    """Key role -> delivered columns under it (an Avro file is under one key, whole)."""
    if output_format == 'avro':
        return {'data.avro': [r.field.name for r in table.rules if r.delivered]}
    keys = {}
    for rule in table.rules:
        if rule.delivered:
            keys.setdefault(key_role(rule), []).append(rule.field.name)
    return keys


def file_roles(table, output_format: str) -> list:
    """The key roles a delivered file of ``table`` needs."""
    if output_format == 'avro':
        return ['data.avro']
    return sorted({'data.footer', *column_keys(table, output_format)})


def roles_table() -> str:
    """The roles as the Markdown table of docs/keys.md."""
    lines = ['| role | Tink key | used for |', '|---|---|---|']
    for role in ROLES[:6] + (COLUMN_ROLE,) + ROLES[6:]:
        lines.append(f'| `{role.name}` | {role.key} | {role.used_for} |')
    return '\n'.join(lines)
