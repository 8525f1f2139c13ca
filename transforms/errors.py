"""User-facing errors.

A ``NovationError`` is a mistake in what the user gave us (config, schema, keys, input files),
not a bug: the CLI prints its message on one line, without a traceback. Messages name the file,
the key and the allowed values, and never contain a personal value or key material.
"""

__all__ = ['NovationError', 'ConfigError', 'SchemaError', 'KeyringError', 'InputError',
             'DeadLetterLimitExceeded', 'RiskLimitExceeded']


class NovationError(Exception):
    """A problem the user can fix; the message is safe to print."""


class ConfigError(NovationError):
    """The transfer config is invalid."""


class SchemaError(NovationError):
    """A table schema is invalid or does not classify every field."""


class KeyringError(NovationError):
    """A keyring is missing, incomplete or cannot be decrypted."""


class InputError(NovationError):
    """A seller export cannot be read as configured (missing file, wrong columns)."""


class DeadLetterLimitExceeded(NovationError):
    """Too many rows were refused as bad data; the run is aborted without a manifest."""


class RiskLimitExceeded(DeadLetterLimitExceeded):
    """The delivery's re-identification risk is above risk.min_k with risk.enforce; the run is
    aborted without a manifest."""
