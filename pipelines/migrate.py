"""Batch migration: read, conform, consent, mask, write encrypted, commit a manifest.

``run(argv)`` is the entry point (``novation run --config FILE [Beam options]``);
``build_pipeline(pipeline, config, run)`` adds the steps to a pipeline and returns its
PCollections so tests can assert on them.
"""

import collections
import dataclasses
import logging
import os
import re
import shutil
import tempfile
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (GoogleCloudOptions,
                                                  PipelineOptions, TestOptions,
                                                  TypeOptions)
from apache_beam.runners.runner import PipelineState

from config.plan import build_plan, plan_sha256
from pipelines.clean import RunLock
from pipelines.launch import (abort_reason, bound_malloc_retention, check_reachable_by_workers,
                              launch_config, local_runner, read_workers, runner_kind,
                              unwrap_error, workers_off_the_working_directory)
from pipelines.options import run_parser
from transforms.commit.audit import append_event
from transforms.consent.gate import (ConsentDecisions, ConsentGate, ErasedSubjects,
                                forget_decisions)
from transforms.conform.conform import Conform
from transforms.keys.keyring import load_keyring
from transforms.keys.seal import require_signing
from transforms.write.deadletter import WriteDeadLetters
from transforms.conform.dedup import DropDuplicates
from transforms.common.run import Run, check_run_id, new_run_id
from transforms.common.errors import ConfigError, DeadLetterLimitExceeded, NovationError
from transforms.common.files import (check_reachable, exists, has_scheme, join, why_not_readable,
                              why_not_writable)
from transforms.common import interrupts, metrics
from transforms.common import progress
from transforms.commit.manifest import WriteManifest
from transforms.mask.mask import Mask
from transforms.commit.notice import NotificationList
from transforms.read.tables import ReadTable, check_file
from transforms.read.ranges import splittable
from transforms.commit.risk import ReidentificationRisk
from transforms.common.scratch import Scratch, partitions_for
from transforms.keys.roles import column_keys, file_roles
from transforms.write.tables import WriteTable

__all__ = ['RunResult', 'build_pipeline', 'plan_run', 'run']

_LOG = logging.getLogger('novation')


def plan_run(config, *, run_id=None, runner='local', temp_location=None,
             output_key=None) -> Run:
    """Check everything that can be checked before any data is read; name the new run.

    Keys load and hold every role the run needs; every table path matches at least one file;
    the consent files exist; the run directory is new; the output and scratch locations can be
    written. On Dataflow every path must be one the workers can reach. The run's scratch files
    go under ``temp_location`` (Beam's --temp_location; this machine's temporary directory if
    not given). ``output_key``: where the output path was given, for errors (default: the
    config's output.path).
    """
    check_reachable(config.output.path, config.output.keys, *(t.path for t in config.tables))
    fmt = config.output.format
    roles = sorted({'pseudonym', 'token', 'deadletter', 'manifest',
                    *(r for t in config.tables for r in file_roles(t, fmt)),
                    *(['notice'] if config.notice else [])})
    keyring = load_keyring(config.output.keys)
    require_signing(keyring, config.source)  # first: a shared keyring is no run's keyring
    keyring.require(roles, f' (needed by {config.source})')
    if runner == 'dataflow':
        if not (temp_location or '').startswith('gs://'):
            raise ConfigError('a Dataflow run needs --temp_location=gs://... (the run\'s '
                              'scratch files and Beam\'s own temporary files go there)')
        check_reachable_by_workers(config, keyring)
    table_bytes, split_bytes = {}, 0
    for table in config.tables:
        matched = FileSystems.match([table.path])[0].metadata_list
        if not matched:
            raise ConfigError(f'{config.source}: tables.{table.name}.path: no file matches '
                              f'{table.path}')
        for i, m in enumerate(matched):
            why = why_not_readable(m.path)
            if why:
                raise ConfigError(f'{config.source}: tables.{table.name}.path: {m.path} {why}')
            if i < CHECKED_FILES:  # their headers and schemas, before any data is read
                check_file(table, m.path)
        table_bytes[table.name] = sum(m.size_in_bytes for m in matched)
        split_bytes += sum(m.size_in_bytes for m in matched
                           if splittable(m.path, m.size_in_bytes, table))
    for key, path in (('consent.registry', config.consent.registry),
                      ('consent.erasures', config.consent.erasures)):
        if not exists(path):
            raise ConfigError(f'{config.source}: {key}: no such file {path}')
        why = why_not_readable(path)
        if why:
            raise ConfigError(f'{config.source}: {key}: {path} {why}')
    check_consent_files(config)
    registry_bytes = FileSystems.match([config.consent.registry])[0].metadata_list[0].size_in_bytes
    run_id = check_run_id(run_id or new_run_id())
    run_dir = join(config.output.path, run_id)
    if exists(run_dir):
        raise ConfigError(f'{run_dir} already exists; every run writes a new directory')
    scratch_parent = temp_location or tempfile.gettempdir()
    audit = join(config.output.path, 'audit')
    writable = [(output_key or f'{config.source}: output.path', config.output.path),
                *([('the audit log', audit)] if exists(audit) else []),  # else made in the root
                ('scratch files (--temp_location)', scratch_parent)]
    if config.notice:
        writable.append((f'{config.source}: notice.path', config.notice.path))
    for key, path in writable:
        why = why_not_writable(path)
        if why:
            raise ConfigError(f'{key}: {path} cannot be written: {why}')
    t = config.transfer
    return Run(
        run_id=run_id,
        run_dir=run_dir,
        output_root=config.output.path,  # where the audit log is
        input_bytes=sum(table_bytes.values()),
        split_bytes=split_bytes,  # of CSV files that several workers can share
        scratch_dir=join(scratch_parent, f'novation-{run_id}'),
        partitions={'consent': partitions_for(registry_bytes),
                    **{name: partitions_for(n) for name, n in table_bytes.items()}},
        keys_path=config.output.keys,
        key_ids={role: ids for role, ids in keyring.key_ids().items() if role in roles},
        output_format=fmt,
        file_roles={t.name: file_roles(t, fmt) for t in config.tables},
        column_keys={t.name: column_keys(t, fmt) for t in config.tables},
        fields={t.name: [field_entry(r) for r in t.rules] for t in config.tables},
        subject_keys={t.name: t.subject_key for t in config.tables},
        config=config.source,
        config_sha256=config.digest,
        plan_sha256=plan_sha256(build_plan(config)),
        tables=tuple(table.name for table in config.tables),
        max_ratio=config.deadletter.max_ratio,
        report_lang=config.report_lang,
        risk={'min_k': config.risk.min_k, 'enforce': config.risk.enforce,
              'quasi_identifiers': [f'{t.name}.{n}' for t in config.tables
                                    for n in t.quasi_identifiers],
              'sensitive_attributes': [f'{t.name}.{n}' for t in config.tables
                                       for n in t.sensitive_attributes]},
        transfer={'seller': t.seller, 'acquirer': t.acquirer,
                  'purposes': [{'name': p.name, 'legal_basis': p.legal_basis}
                               for p in t.purposes],
                  'source_region': t.source_region,
                  'destination_region': t.destination_region,
                  'cross_border': t.cross_border},
    )


def field_entry(rule) -> dict:
    """A field as the manifest lists it: how it was classified and delivered."""
    entry = {'name': rule.field.name, 'classification': rule.field.classification,
             'category': rule.field.category, 'masking': rule.operator.name}
    if rule.operator.name in ('hash', 'tokenize'):
        entry['domain'] = rule.operator.domain
    return entry


def build_pipeline(pipeline, config, run, *, workers=1, replay=None) -> dict:
    """Add the migration to ``pipeline``; returns {'manifest', 'tables': {name: outputs}}.

    ``workers``: how many workers read in parallel; large CSV files are split for them.
    ``replay``: ``(run_dir, plan)``: read the dead letters the plan selected from that run in
    place of the exports.
    """
    keys = run.keys_path
    scratch = run_scratch(run)
    parts = run.partitions
    erased = pipeline | 'ErasedSubjects' >> ErasedSubjects(config.consent)
    decisions = pipeline | 'ConsentDecisions' >> ConsentDecisions(
        config.consent, config.transfer, erased, scratch, parts=parts['consent'],
        workers=workers)
    counts, files, outputs, admitted, refused = [], [], {}, {}, []
    for table in config.tables:
        step = _camel(table.name)
        if replay is None:
            read = pipeline | f'Read{step}' >> ReadTable(table, workers=workers)
        else:
            from pipelines.replay import ReplayDeadLetters
            read = pipeline | f'Replay{step}' >> ReplayDeadLetters(
                table, replay[0], replay[1]['manifest'], replay[1]['selected'].get(table.name),
                keys)
        conformed = read[ReadTable.ROWS] | f'Conform{step}' >> Conform(table)
        rows, dead = conformed[Conform.ROWS], [read[ReadTable.DEAD], conformed[Conform.DEAD]]
        if table.schema.primary_key:
            unique = rows | f'Dedup{step}' >> DropDuplicates(table, scratch,
                                                             parts=parts[table.name])
            rows = unique[DropDuplicates.ROWS]
            dead.append(unique[DropDuplicates.DEAD])
        gated = rows | f'Consent{step}' >> ConsentGate(table, decisions, scratch,
                                                                config.transfer)
        masked = gated[ConsentGate.ROWS] | f'Mask{step}' >> Mask(table, keys)
        written = masked | f'Write{step}' >> WriteTable(table, run.output_format, run, keys)
        dead_letters = (tuple(dead + [gated[ConsentGate.DEAD]])
                        | f'WriteDeadLetters{step}' >> WriteDeadLetters(
                            table.name, config.tables, erased, run, keys))
        counts += [
            read[ReadTable.SOURCES] | f'CountRead{step}' >> beam.FlatMap(_source_counts),
            written[WriteTable.WRITTEN] | f'CountWritten{step}' >> beam.Map(
                lambda kv: (('written', kv[0][0], kv[0][1], ''), kv[1])),
            dead_letters[WriteDeadLetters.COUNTS],
            gated[ConsentGate.SUPPRESSED] | f'CountSuppressed{step}' >> beam.Map(
                lambda t: (('suppressed', t[0], '', ''), t[1])),
        ]
        files += [
            written[WriteTable.FILES] | f'DataFiles{step}' >> beam.Map(
                lambda path, name: (name, 'data', path), table.name),
            dead_letters[WriteDeadLetters.FILES] | f'DeadLetterFiles{step}' >> beam.Map(
                lambda path, name: (name, 'deadletter', path), table.name),
        ]
        outputs[table.name] = {'rows': masked}
        admitted[table.name] = gated[ConsentGate.ROWS]
        refused += dead + [gated[ConsentGate.DEAD]]
    commit = {'counts': counts | 'AllCounts' >> beam.Flatten(),
              'files': files | 'AllFiles' >> beam.Flatten()}
    # The risk and the notice wait in scratch in shards of customers, two per partition of
    # the tables (32 MB of input): a shard is merged whole, in a few copies.
    if config.risk_tables:
        commit['risk'] = ({t.name: outputs[t.name]['rows'] for t in config.risk_tables}
                          | 'Risk' >> ReidentificationRisk(
                              config.risk_tables, config.risk.min_k, scratch,
                              shards=2 * sum(parts.get(t.name, 1) for t in config.risk_tables)))
    if config.notice is not None:
        inputs = {**{f'admitted {name}': rows for name, rows in admitted.items()},
                  **{f'refused {i}': letters for i, letters in enumerate(refused)}}
        commit['notice'] = inputs | 'NotificationList' >> NotificationList(
            config, run, erased, scratch,
            shards=2 * sum(parts.get(t.name, 1) for t in config.tables))
    manifest = commit | 'Commit' >> WriteManifest(run)
    _ = manifest | 'RemoveScratch' >> beam.Map(_remove_scratch, scratch)
    return {'manifest': manifest, 'tables': outputs}


def _remove_scratch(_, scratch):
    scratch.remove()
    forget_decisions()  # in this worker; the others end with the job


def run_scratch(run: Run) -> Scratch:
    """The run's scratch files (``transforms.common.scratch``): removed once the manifest is
    written."""
    return Scratch(run.scratch_dir, run.keys_path, run.run_id)


def _source_counts(source):
    """Rows read from a file, its physical lines (text formats), each column ignored in it
    and each field missing from it, as manifest counts."""
    metrics.count(source.table, 'rows_read', source.rows_read)  # as the manifest counts them
    yield ('read', source.table, source.path, ''), source.rows_read
    if source.lines is not None:
        yield ('lines', source.table, source.path, ''), source.lines
    for column in source.ignored:
        yield ('ignored', source.table, source.path, column), 1
    for field in source.missing:
        yield ('missing', source.table, source.path, field), 1


def _camel(name: str) -> str:
    return ''.join(part.capitalize() for part in re.split(r'[^A-Za-z0-9]+', name) if part)


# status: done (manifest written), dry-run (Dataflow job built, not submitted), detached.
RunResult = collections.namedtuple('RunResult',
                                   'manifest run_dir seconds pipeline_result status')


def run(argv=None, *, replay=None, only=None) -> RunResult:
    """Run a migration; returns its manifest (None for a dry run or a detached job).

    ``replay``: ``(run_dir, plan)`` to move the dead letters ``pipelines.replay.plan_replay``
    selected from that run instead of reading the exports (``novation replay``; ``only``:
    the numbers of the replay decisions to apply, all by default).
    Raises NovationError on user errors.
    """
    known, beam_args, config = launch_config(run_parser(), argv)
    options = PipelineOptions(beam_args)
    if not any(arg.split('=')[0] in ('--pipeline_type_check', '--no_pipeline_type_check')
               for arg in beam_args):
        # Novation declares no element type hints; Beam's inference of them from bytecode
        # took 2 of the demo's 13 s while the job was built, for nothing.
        options.view_as(TypeOptions).pipeline_type_check = False
    run_info = plan_run(config, run_id=known.run_id, runner=runner_kind(options),
                        temp_location=options.view_as(GoogleCloudOptions).temp_location,
                        output_key='--output' if known.output else None)
    run_info = dataclasses.replace(run_info, plan_checked=known.plan_hash is not None)
    if replay is not None:  # after the run's own checks (keys, paths): before any data
        from pipelines.replay import plan_replay
        replay = (replay, plan_replay(replay, config, only))
        run_info = dataclasses.replace(run_info, replay_of=replay[1]['manifest']['run_id'])
    _LOG.info('run %s: %s', run_info.run_id, run_info.run_dir)
    progress.reset()
    progress.note('starting the pipeline', input_bytes=run_info.input_bytes)
    started = time.monotonic()
    workers = read_workers(options, run_info.split_bytes, beam_args)
    if runner_kind(options) == 'local':
        bound_malloc_retention()
    if workers > 1:
        _LOG.info('reading with %d workers', workers)
    dry_run = options.view_as(TestOptions).dry_run
    # The run directory is created here, exclusively, with a lock that dies with this process:
    # a second run with the same id is refused, and novation clean tells a crashed run's
    # leftovers from a run still going (pipelines.clean).
    lock = RunLock(run_info.run_dir, run_info.scratch_dir) \
        if runner_kind(options) == 'local' and not dry_run and not known.detach else None
    finished, pipeline = False, None
    try:
        if lock is not None:
            lock.acquire()
            _mention_leftovers(config.output.path, run_info.scratch_dir)
        if not dry_run:
            started_sha256 = append_event(
                config.output.path, 'run_started', keys=config.output.keys,
                run_id=run_info.run_id,
                config_sha256=run_info.config_sha256, plan_sha256=run_info.plan_sha256,
                key_ids={role: ids['primary'] for role, ids in sorted(run_info.key_ids.items())},
                replay_of=run_info.replay_of)['sha256']
            run_info = dataclasses.replace(run_info, audit_started_sha256=started_sha256)
        pipeline = beam.Pipeline(runner=local_runner(options), options=options)
        build_pipeline(pipeline, config, run_info, workers=workers, replay=replay)
        try:
            with workers_off_the_working_directory():
                result = pipeline.run()
            if known.detach or dry_run:
                status = 'dry-run' if dry_run else 'detached'
                return RunResult(None, run_info.run_dir, time.monotonic() - started, result,
                                 status)
            state = result.wait_until_finish()
        except Exception as e:  # Beam re-raises worker errors wrapped; surface ours cleanly
            if interrupts.received():  # a worker stopped by the same Ctrl-C
                raise interrupts.Interrupted(interrupts.received()) from None
            if runner_kind(options) == 'local':
                _remove_scratch(None, run_scratch(run_info))
            error = unwrap_error(e)
            if not isinstance(error, DeadLetterLimitExceeded) and not dry_run:  # logged in-job
                append_event(config.output.path, 'run_aborted', keys=config.output.keys,
                             run_id=run_info.run_id, why=abort_reason(error))
            raise error from None
        progress.note('finished', finished=True)
        if state != PipelineState.DONE:
            _remove_scratch(None, run_scratch(run_info))
            append_event(config.output.path, 'run_aborted', keys=config.output.keys,
                         run_id=run_info.run_id, why=f'the pipeline ended in state {state}')
            raise NovationError(f'the pipeline ended in state {state}; {run_info.run_dir} '
                                f'has no manifest and is incomplete')
        from pipelines.decrypt import load_manifest
        manifest = load_manifest(run_info.run_dir, config.output.keys)
        done = RunResult(manifest, run_info.run_dir, time.monotonic() - started, result, 'done')
        if replay is not None:
            from pipelines.replay import record_replay
            record_replay(replay[0], replay[1], done, keys=config.output.keys)
        finished = True
        return done
    except interrupts.Interrupted as stop:
        if dry_run or known.detach:
            raise
        if committed(config.output.path, run_info.run_id):
            # the signal came after the commit: the run is whole, and says so (its scratch,
            # which the pipeline would have removed next, goes now)
            from pipelines.decrypt import load_manifest
            if runner_kind(options) == 'local':
                _remove_scratch(None, run_scratch(run_info))
            finished = True
            return RunResult(load_manifest(run_info.run_dir, config.output.keys),
                             run_info.run_dir, time.monotonic() - started, None, 'done')
        if runner_kind(options) == 'local':  # a remote job goes on without this command
            abandon(run_info, stop)
        raise
    finally:
        if pipeline is not None:  # Beam removes it in run(), which a signal may not reach
            shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
        if lock is not None:
            lock.release(finished=finished)


# How many files of a table the up-front check opens (a table of thousands of files on gs://
# would otherwise wait on as many round trips; the rest are checked as they are read).
CHECKED_FILES = 50


def check_consent_files(config) -> None:
    """The registry and erasure list have the columns the rules read, and the registry has
    rows: found before any data is read (and by ``novation plan``)."""
    from transforms.consent.gate import ERASURE_FIELDS, REGISTRY_FIELDS, consent_file_problem
    for key, path, fields, what in (
            ('consent.registry', config.consent.registry, REGISTRY_FIELDS, 'consent registry'),
            ('consent.erasures', config.consent.erasures, ERASURE_FIELDS, 'erasure list')):
        problem = consent_file_problem(path, fields, what, config.consent.columns,
                                       rows_needed=key == 'consent.registry')
        if problem:
            raise ConfigError(f'{config.source}: {key}: {problem}')


def committed(out_dir: str, run_id: str) -> bool:
    """Whether the audit log holds the run's commit."""
    from transforms.commit.audit import read_log
    try:
        return any(r.get('event') == 'run_committed' and r.get('run_id') == run_id
                   for r in read_log(out_dir))
    except (NovationError, OSError):
        return False


def abandon(run_info: Run, stop: 'interrupts.Interrupted') -> None:
    """A local run stopped by a signal before its commit: its scratch and its run directory's
    partial output are removed, and the audit log says why. A second signal meanwhile does
    not cut this short."""
    with interrupts.deferred():
        _remove_scratch(None, run_scratch(run_info))
        removed = ''
        if not has_scheme(run_info.run_dir):
            shutil.rmtree(run_info.run_dir, ignore_errors=True)
            removed = '; its partial output was removed'
        try:
            append_event(run_info.output_root, 'run_aborted', keys=run_info.keys_path,
                         run_id=run_info.run_id, why=f'interrupted by {stop.name}{removed}')
        except (NovationError, OSError):
            pass  # the one line the user sees says the run was interrupted


def _mention_leftovers(out_dir, scratch_dir) -> None:
    """Say once per run if runs that did not finish left files behind (novation clean)."""
    from pipelines.clean import find_leftovers
    try:
        found = find_leftovers(out_dir, os.path.dirname(scratch_dir))
    except (NovationError, OSError):
        return
    if found:
        _LOG.warning('warning: %d leftover(s) of runs that did not finish (%.0f MB) under %s and '
                     'the scratch directory: `novation clean %s` lists them, and removes them '
                     'with --yes', len(found), sum(f['bytes'] for f in found) / 1e6, out_dir,
                     out_dir)


