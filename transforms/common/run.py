"""What a batch run is: the facts fixed before any data is read, given to every step that
writes or counts (the writers, the dead letters, the notification list, the manifest).

``pipelines.migrate.plan_run`` makes it after every check that can be made without data; a
replay adds ``replay_of`` and the launch ``audit_started_sha256`` (``dataclasses.replace``).
Frozen: Beam pickles it into each step, and no step may change what another one reads.
"""

import dataclasses
import datetime
import re
import secrets
from typing import Mapping, Optional, Tuple

from transforms.common.errors import ConfigError

__all__ = ['RUN_ID_PATTERN', 'Run', 'check_run_id', 'new_run_id']

# A run's or a stream's id names its directory: one rule for both, and for the manifests that
# carry it (transforms.commit.manifest_schema).
RUN_ID_PATTERN = '[A-Za-z0-9][-_.A-Za-z0-9]{0,99}'


def new_run_id(prefix: str = '') -> str:
    """``<prefix>YYYYMMDDTHHMMSSZ-<6 hex>``: sorted by time, unique without coordination."""
    return (prefix + datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
            + '-' + secrets.token_hex(3))


def check_run_id(run_id: str, what: str = 'run id') -> str:
    """``run_id`` if it may name a directory; else a ConfigError saying the rule."""
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise ConfigError(f'{what} {run_id!r}: 1 to 100 letters, digits, "_", "." and "-", '
                          f'starting with a letter or digit')
    return run_id


@dataclasses.dataclass(frozen=True)
class Run:
    run_id: str
    run_dir: str                      # OUT/<run_id>
    keys_path: str                    # the keyring
    output_root: str = ''             # OUT: where the audit log is ('' for none)
    config: str = ''                  # the config file, for errors and the manifest
    config_sha256: str = ''
    plan_sha256: Optional[str] = None
    plan_checked: bool = False        # against --plan-hash, before the run
    output_format: str = 'parquet'
    report_lang: str = 'en'
    tables: Tuple[str, ...] = ()
    max_ratio: float = 1.0            # deadletter.max_ratio of bad data in a table
    input_bytes: int = 0
    split_bytes: int = 0              # of CSV files that several workers can share
    scratch_dir: str = ''
    partitions: Mapping[str, int] = dataclasses.field(default_factory=dict)
    key_ids: Mapping[str, dict] = dataclasses.field(default_factory=dict)
    file_roles: Mapping[str, list] = dataclasses.field(default_factory=dict)
    column_keys: Mapping[str, dict] = dataclasses.field(default_factory=dict)
    fields: Mapping[str, list] = dataclasses.field(default_factory=dict)
    subject_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    risk: Mapping[str, object] = dataclasses.field(default_factory=dict)
    transfer: Mapping[str, object] = dataclasses.field(default_factory=dict)
    replay_of: Optional[str] = None   # the run a replay replays
    audit_started_sha256: Optional[str] = None
