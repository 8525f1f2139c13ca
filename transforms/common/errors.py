"""User-facing errors.

A ``NovationError`` is a mistake in what the user gave us (config, schema, keys, input files),
not a bug: the CLI prints its message on one line, without a traceback. Messages name the file,
the key and the allowed values, and never contain a personal value or key material.
"""

import errno

__all__ = ['NovationError', 'ConfigError', 'SchemaError', 'KeyringError', 'InputError',
           'DeadLetterLimitExceeded', 'RiskLimitExceeded', 'EnvironmentProblem', 'os_problem']


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


class EnvironmentProblem(NovationError):
    """The machine failed the command: a full disk, a folder it may not write, a file it may
    not read. Not the user's input, and not a bug."""


_HINTS = {errno.ENOSPC: 'the disk is full: free space there, or point the run elsewhere',
          errno.EDQUOT: 'the disk quota is used up',
          errno.EROFS: 'the file system is read-only',
          errno.EACCES: 'permission denied',
          errno.EPERM: 'not permitted'}


def os_problem(exc: OSError) -> EnvironmentProblem:
    """An operating-system error as one line: the file and what went wrong (a path names no
    customer; the OS's own text is short)."""
    what = _HINTS.get(exc.errno) or exc.strerror or type(exc).__name__
    where = exc.filename if isinstance(exc.filename, str) else None
    return EnvironmentProblem(f'{where}: {what}' if where else what)
