"""Launching a pipeline, shared by the batch (``pipelines.migrate``), the stream
(``pipelines.stream``) and the replays: which runner and how many workers, Beam's options
checked before anything runs, the approved plan checked, the workers kept off the user's
working directory and from holding freed memory, and a runner's wrapped error turned back into
the one line it was.
"""

import argparse
import contextlib
import ctypes
import dataclasses
import difflib
import os
import re

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from config.plan import build_plan, plan_sha256
from transforms.common import interrupts
from transforms.common.errors import ConfigError, NovationError, os_problem
from transforms.common.files import has_scheme
from transforms.keys.keyring import display_uri

__all__ = ['DATAFLOW_READ_WORKERS', 'PARALLEL_MIN_BYTES', 'abort_reason', 'bound_malloc_retention',
           'launch_config',
           'check_beam_args', 'check_plan_hash', 'check_reachable_by_workers', 'local_runner',
           'read_workers', 'runner_kind', 'unwrap_error', 'with_overrides',
           'workers_off_the_working_directory']


def check_reachable_by_workers(config, keyring) -> None:
    """Dataflow workers see neither the launcher's disk nor a local master key file."""
    paths = [(f'tables.{t.name}.path', t.path) for t in config.tables] + [
        ('consent.registry', config.consent.registry),
        ('consent.erasures', config.consent.erasures),
        ('output.path', config.output.path), ('output.keys', config.output.keys)]
    for key, path in paths:
        if not has_scheme(path):
            raise ConfigError(f'{config.source}: {key}: {path} is on this machine, which '
                              f'Dataflow workers cannot read; use a gs:// path')
    if keyring.protection == 'kms' and not keyring.master_key_uri.startswith('gcp-kms://'):
        raise ConfigError(f'keyring {keyring.path}: its master key '
                          f'{display_uri(keyring.master_key_uri)} is not reachable by Dataflow '
                          f'workers; use a gcp-kms:// key')


def runner_kind(options: PipelineOptions) -> str:
    """local (no --runner, DirectRunner), dataflow, dataflow-dry-run, or other (e.g. Portable)."""
    name = options.view_as(StandardOptions).runner
    if name in (None, 'DirectRunner', 'direct'):
        return 'local'
    if name in ('DataflowRunner', 'dataflow'):
        return 'dataflow-dry-run' if options.view_as(TestOptions).dry_run else 'dataflow'
    return 'other'


def local_runner(options: PipelineOptions):
    """The runner to use: Beam's FnApiRunner for local runs, chosen explicitly.

    Beam's DirectRunner would first try to download and start the Prism runner, which fails
    offline and logs a fallback; we go straight to the FnApiRunner it falls back to.
    ``read_workers`` decides how many worker processes it runs.
    """
    if runner_kind(options) != 'local':
        return None  # Dataflow, Portable, ...: Beam resolves it from the options
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    interrupts.keep_workers_out()  # Ctrl-C is the command's to handle, not its workers'
    return FnApiRunner()


@contextlib.contextmanager
def workers_off_the_working_directory():
    """While a local pipeline runs: worker processes start in the user's working directory,
    which Python would put first on their path, so a folder of the user's named like one of
    Novation's packages (schemas/, config/) would shadow it. PYTHONSAFEPATH (Python 3.11)
    leaves it off; it is set for the workers only, and restored after."""
    before = os.environ.get('PYTHONSAFEPATH')
    os.environ['PYTHONSAFEPATH'] = '1'
    try:
        yield
    finally:
        if before is None:
            del os.environ['PYTHONSAFEPATH']
        else:
            os.environ['PYTHONSAFEPATH'] = before


# Below this much CSV that workers can share (``transforms.read.ranges.splittable``), a second
# worker process costs more than it saves: it starts, and every batch between two steps crosses from
# one process to another. Measured with benchmarks/workers.py (see docs/performance.md): even at 69
# MB of such CSV, 10% faster at 138 MB, 20% at 277 MB; a 4-table export of 128 MB with 56 MB of it
# in such CSV was 9% slower with two.
PARALLEL_MIN_BYTES = 128 << 20


DATAFLOW_READ_WORKERS = 4  # ranges per large file are a multiple of this on Dataflow


def read_workers(options: PipelineOptions, split_bytes: int, beam_args=()) -> int:
    """How many workers read in parallel; for a local run, also sets Beam's worker options.

    A local run with at least PARALLEL_MIN_BYTES of seller CSV files that workers can share
    (``split_bytes``) uses one worker process per core unless --direct_num_workers or
    --direct_running_mode was given; other runs stay in this process, where start-up is fastest
    and no batch crosses between processes. ``beam_args``: the Beam flags as given.
    """
    kind = runner_kind(options)
    if kind != 'local':
        return DATAFLOW_READ_WORKERS if kind.startswith('dataflow') else 1
    direct = options.view_as(DirectOptions)
    if any(arg.split('=')[0] in ('--direct_num_workers', '--direct_running_mode')
           for arg in beam_args):
        if direct.direct_running_mode == 'in_memory':
            return 1
        return direct.direct_num_workers or os.cpu_count() or 1
    cores = os.cpu_count() or 1
    if cores < 2 or split_bytes < PARALLEL_MIN_BYTES:
        return 1
    direct.direct_num_workers = cores
    direct.direct_running_mode = 'multi_processing'
    return cores


# glibc's malloc, left to itself, keeps memory numpy and Python free in one arena per thread and
# raises its mmap threshold as large arrays come and go, so freed batches stay part of every
# process. Measured at 1M customers (runner + 2 workers): peak 1.87 GB -> 1.33 GB, time within
# the machine's noise.
MALLOC_SETTINGS = (('MALLOC_ARENA_MAX', -8, 2), ('MALLOC_MMAP_THRESHOLD_', -3, 2 << 20))
# Arrow's own allocator (mimalloc) keeps freed pages per thread as well: Arrow allocates with
# glibc's malloc under the settings above instead. Measured at 10M customers (runner + 2
# workers): peak 1.74 GB -> 1.46 GB, CPU 316 -> 322 s.
ARROW_POOL = ('ARROW_DEFAULT_MEMORY_POOL', 'system')


def bound_malloc_retention() -> None:
    """Apply MALLOC_SETTINGS and ARROW_POOL to this process and to the worker processes it
    starts, unless the environment already sets them. Does nothing where the C library is not
    glibc."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    for name, option, value in MALLOC_SETTINGS:
        if name not in os.environ:
            os.environ[name] = str(value)  # read by each worker process as it starts
            mallopt(option, value)
    name, value = ARROW_POOL
    if name not in os.environ:
        import pyarrow as pa
        os.environ[name] = value  # read by each worker's pyarrow as it starts
        pa.set_memory_pool(pa.system_memory_pool())


def check_beam_args(beam_args, ours: argparse.ArgumentParser) -> None:
    """Refuse, before anything runs, arguments that are neither ``ours`` nor Beam options:
    Beam would only log that it discards them (a typo such as --ouput would go unnoticed)."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser
    beam = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(beam)  # pylint: disable=protected-access
    _, unknown = beam.parse_known_args(list(beam_args))
    if not unknown:
        return
    flags = [a.split('=', 1)[0] for a in unknown if a.startswith('-')]
    command = ours.prog
    if not flags:
        raise ConfigError(f'unexpected argument {unknown[0]!r}: every value follows the option '
                          f'it belongs to (see {command} --help)')
    known = [o for p in (ours, beam) for a in p._actions for o in a.option_strings
             if o.startswith('--')]
    close = difflib.get_close_matches(flags[0], known, n=1)
    raise ConfigError(f'unknown option {flags[0]}: neither {command} nor Beam has it'
                      + (f' (did you mean {close[0]}?)' if close else
                         f'; see {command} --help'))


def check_plan_hash(config, approved) -> None:
    """Refuse a config whose plan is not the ``approved`` one (its sha256), if one is given."""
    actual = plan_sha256(build_plan(config))
    given = None if approved is None else approved.strip().lower()
    if given is not None and not re.fullmatch(r'[0-9a-f]{64}', given):
        raise ConfigError(f'--plan-hash: a plan sha256 is 64 hexadecimal digits, got '
                          f'{len(given)} characters (novation plan prints it whole)')
    if given is not None and given != actual:
        raise ConfigError(f'--plan-hash {approved}: {config.source} no longer gives the '
                          f'approved plan (its plan is {actual}); compare them with novation '
                          f'plan --diff APPROVED_PLAN.json {config.source}')


def with_overrides(config, *, output=None, keys=None):
    """The config with output.path / output.keys replaced from the command line."""
    if not output and not keys:
        return config
    return dataclasses.replace(config, output=dataclasses.replace(
        config.output, path=output or config.output.path, keys=keys or config.output.keys))


def unwrap_error(exc: BaseException) -> BaseException:
    """Find the NovationError (or the OSError, as an EnvironmentProblem) behind a runner's
    wrapped exception, else return ``exc``."""
    seen = set()
    current = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, NovationError):
            return type(current)(str(current).split(' [while running')[0].strip())
        if isinstance(current, OSError) and current.errno is not None:
            return os_problem(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    text = str(exc)
    from transforms.common import errors
    for name in errors.__all__:
        marker = f'{name}: '
        if marker in text and isinstance(getattr(errors, name), type):
            message = text.split(marker, 1)[1].split(' [while running')[0].strip()
            return getattr(errors, name)(message.splitlines()[0])
    found = _OS_ERROR_TEXT.search(text)  # a worker process's OSError, as Beam passes it on
    if found:
        return os_problem(OSError(int(found['errno']), found['strerror'], found['filename']))
    return exc


_OS_ERROR_TEXT = re.compile(r"\b\w*Error: \[Errno (?P<errno>\d+)\] (?P<strerror>[^:\n\]]+)"
                            r"(?:: '(?P<filename>[^'\n]*)')?")


def launch_config(parser: argparse.ArgumentParser, argv):
    """The first steps of every launch (a batch run, a stream, a replay), before any data is
    read: the command's options, Beam's checked (a typo is refused, not dropped), the config
    with --output and --keys applied, and its plan checked against --plan-hash.
    Returns ``(options, beam_args, config)``."""
    from config import load_config
    known, beam_args = parser.parse_known_args(argv)
    check_beam_args(beam_args, parser)
    config = with_overrides(load_config(known.config), output=known.output, keys=known.keys)
    check_plan_hash(config, known.plan_hash)
    return known, beam_args, config


def abort_reason(error: BaseException) -> str:
    """Why a launch stopped, for the audit log's abort record: the user's one line, or the
    name of a bug's exception (its details stay in the log, never in the record)."""
    if isinstance(error, NovationError):
        return str(error).splitlines()[0][:300]
    return f'{type(error).__name__} (a bug: see the log)'
