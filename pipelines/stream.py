"""Live changes until cut-over: ``novation stream``, on the local runner or as a Dataflow
streaming job.

``build_stream(pipeline, config, feeds=..., ...)`` adds the stream to a pipeline. On the local
runner (Beam's FnApiRunner) it is one chain, which that runner runs in real time only without
a Flatten, and each step trusts the order in which the source releases events:

    WatchFeeds      data and consent feed files, each once, released in commit order
    Route           each event to its customer (the subject key), or a dead letter; lines
                    that are no change, counted
    ConsentInOrder  decided by every consent event up to its commit time; retractions
    KeyOrder        each row's changes in its log's order, once (repeats, superseded)
    CommitEpochs    conform, suppress, mask as the batch does; encrypted files and a
                    manifest per epoch, chained by sha256; the cut-over manifest at the end

On Dataflow (``watermarks``), feeds on Pub/Sub (``ReadSubscription``) are joined to the files'
source, and ConsentInOrder and CommitEpochs wait for the watermark instead.
"""

import datetime
import logging
import os
import signal
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions)

from config.plan import build_plan, plan_sha256
from pipelines.clean import RunLock
from pipelines.launch import (abort_reason, check_reachable_by_workers, launch_config,
                              local_runner, runner_kind, unwrap_error,
                              workers_off_the_working_directory)
from pipelines.options import stream_parser
from transforms.common.run import check_run_id, new_run_id
from transforms.stream.changes import ChangeProblem
from transforms.commit.audit import append_event
from transforms.stream.chain import (CUTOVER_FILE, Committed, Trail, checked_epochs, conservation,
                                     committed_so_far, count, epoch_dir)
from transforms.stream.epochs import CommitEpochs
from transforms.common.errors import ConfigError, NovationError
from transforms.common.files import exists, has_scheme, join, why_not_writable
from transforms.keys.keyring import load_keyring
from transforms.commit.manifest import MANIFEST_FILE
from transforms.keys.seal import require_signing
from transforms.keys.roles import file_roles
from transforms.stream.feeds import (BACKFILL_FILES, DRAIN, EndOfFeeds, Feed, FileRead, WatchFeeds,
                              renamed_for_feeds)
from transforms.stream.order import InKeyOrder
from transforms.stream.pubsub import ReadSubscription, is_subscription
from transforms.common.reasons import DeadLetter
from transforms.stream.consent import Batch, ConsentInOrder, Counted, Decided, Routed, route

__all__ = ['build_stream', 'decide_and_commit', 'print_stream_summary', 'run_stream',
           'stream_summary']

_LOG = logging.getLogger('novation')


def build_stream(pipeline, config, *, feeds, run_id: str, stream_dir: str, stop_at=None,
                 epoch_seconds: float = 5.0, interval: float = 1.0, lateness: float = 2.0,
                 idle: float = 5.0, snapshot_at=None, snapshot=None, resume=None,
                 watermarks: bool = False, timestamp_attribute=None, trail=Trail()):
    """Add the stream to ``pipeline``; returns the PCollection of epoch manifests.

    ``resume``: what earlier runs of the same stream committed (``committed_so_far``);
    ``snapshot``: the batch run it continues (for the cut-over manifest). ``watermarks``: the
    runner honours watermarks for timers (Dataflow): feeds on Pub/Sub are read and joined to
    the files' source, and each step waits for the watermark instead of trusting the order
    in which the files' source releases events (which is all the local runner allows).
    ``trail``: the plan and audit record the manifests name (``transforms.stream.epochs.Trail``)."""
    files = [f for f in feeds if not is_subscription(f.pattern)]
    released = pipeline | 'Watch' >> WatchFeeds(files, interval=interval, lateness=lateness,
                                                idle=idle, stop_at=stop_at)
    subscriptions = [f for f in feeds if is_subscription(f.pattern)]
    assert watermarks or not subscriptions, 'Pub/Sub needs a runner that honours watermarks'
    if subscriptions:
        released = [released] + [
            pipeline | f'Read{feed.name.title()}' >> ReadSubscription(feed, timestamp_attribute)
            for feed in subscriptions] | 'Join' >> beam.Flatten()
    return decide_and_commit(released, config, run_id=run_id, stream_dir=stream_dir,
                             epoch_seconds=epoch_seconds, lateness=lateness,
                             snapshot_at=snapshot_at, snapshot=snapshot, resume=resume,
                             watermarks=watermarks, trail=trail)


def decide_and_commit(released, config, *, run_id, stream_dir, epoch_seconds, lateness,
                      snapshot_at=None, snapshot=None, resume=None, watermarks=False,
                      trail=Trail()):
    """The stream after its sources: ``Released`` batches (and the end of the feeds) ->
    the epoch manifests."""
    tables = {t.name: t for t in config.tables}
    s = config.stream
    names = dict(s.tables) if s is not None else {}
    decimals = s.decimal_handling_mode if s is not None else 'precise'
    return (released
            | 'Route' >> beam.FlatMap(_routed, tables, names, decimals)
            | 'ConsentInOrder' >> ConsentInOrder(config.transfer, tuple(tables),
                                                 keys_path=config.output.keys, run_id=run_id,
                                                 snapshot_at=snapshot_at, ordered=not watermarks,
                                                 lateness=lateness)
            | 'KeyOrder' >> InKeyOrder(keys_path=config.output.keys, run_id=run_id)
            | 'Epochs' >> CommitEpochs(config=config, run_id=run_id, stream_dir=stream_dir,
                                       seconds=epoch_seconds, resume=resume, snapshot=snapshot,
                                       watermarks=watermarks, lateness=lateness,
                                       trail=trail))


def _routed(item, tables, names=None, decimals='precise'):
    """What ConsentInOrder takes of a ``Released`` batch: the customers' events, each under
    its subject (``Routed``); the problems (as dead letters), lines that are no change,
    consent events counted, deletes that need no consent and files read whole (a ``Batch``);
    then the mark. The end of the feeds passes as it came."""
    if isinstance(item, EndOfFeeds):
        yield item
        return
    pairs, other = [], []
    for event in item.events:
        if isinstance(event, FileRead):
            other.append(event)
            continue
        for routed in route(event, tables, names, decimals):
            if isinstance(routed, ChangeProblem):
                table = routed.table if routed.table in tables else event.feed
                other.append(DeadLetter(reason=routed.reason, stage='read', table=table,
                                        source_file=event.path, row=event.line,
                                        problem=routed.problem, index=event.index))
            elif isinstance(routed, (Counted, Decided)):
                other.append(routed)
            else:  # (subject, event)
                pairs.append(routed)
    if other:
        yield Batch(tuple(other))
    if pairs:
        yield Routed(tuple(pairs))
    if item.up_to is not None:
        yield item.up_to


def run_stream(argv=None) -> dict:
    """Run the stream until its stop time; returns a summary of the epochs committed.

    Raises NovationError on user errors, before the stream starts.
    """
    known, beam_args, config = launch_config(stream_parser(), argv)
    if config.stream is None:
        raise ConfigError(f'{config.source}: stream: missing; novation stream needs '
                          f'stream.changes and stream.consent (globs of the feed files)')
    plan = plan_sha256(build_plan(config))
    options = PipelineOptions(list(beam_args) + ['--streaming'])
    kind = runner_kind(options)
    if kind not in ('local', 'dataflow', 'dataflow-dry-run'):
        raise ConfigError('novation stream runs on the local runner (no --runner) or on '
                          'Dataflow (--runner DataflowRunner)')
    on_dataflow = kind != 'local'
    s = config.stream
    subscriptions = [k for k in ('changes', 'consent') if is_subscription(getattr(s, k))]
    if subscriptions and not on_dataflow:
        raise ConfigError(f'{config.source}: stream.{subscriptions[0]}: a Pub/Sub subscription '
                          f'is read on Dataflow only (--runner DataflowRunner); on this '
                          f'machine give a glob of feed files')
    if on_dataflow and (known.until or known.seconds is not None):
        raise ConfigError('on Dataflow the stream runs until it is drained: cut over with '
                          '"gcloud dataflow jobs drain JOB_ID --region REGION" (the open epoch '
                          'commits, then cutover.json is written); --until and --seconds are '
                          'for the local runner')
    stop_at = _stop_time(known)
    keyring = load_keyring(config.output.keys)
    roles = sorted({'pseudonym', 'token', 'deadletter', 'data.internal', 'data.personal',
                    'manifest', *(r for t in config.tables for r in file_roles(t, 'parquet'))})
    keyring.require(roles, f' (needed by {config.source})')
    require_signing(keyring, config.source)
    if kind == 'dataflow':
        _check_dataflow(config, keyring, options, known.snapshot)
    snapshot_at, snapshot_id = (_snapshot(known.snapshot, keyring, plan) if known.snapshot
                                else (None, None))
    run_id = check_run_id(known.run_id or new_run_id('stream-'), '--run-id')
    stream_dir = join(config.output.path, run_id)
    existed = exists(stream_dir)
    if existed and exists(join(stream_dir, MANIFEST_FILE)):
        raise ConfigError(f'{stream_dir} is a batch run, not a stream')
    if existed and exists(join(stream_dir, CUTOVER_FILE)):
        raise ConfigError(f'{stream_dir} has cut over: a cut-over is final; if the business '
                          f'goes on, start a new stream linked to it: --run-id NEW_ID '
                          f'--continues {run_id}')
    if not existed:
        check_stream_link(config.output.path, run_id, snapshot_id, config.digest,
                          known.continues, known.replaces)
    # A local stream holds a lock on its directory while it runs: the same stream started
    # twice at once is refused (pipelines.clean).
    lock = None if on_dataflow else RunLock(stream_dir, new=False).acquire()
    try:
        feeds = [Feed('registry', config.consent.registry, 'registry', config.consent.columns),
                 Feed('erasures', config.consent.erasures, 'erasures', config.consent.columns),
                 Feed('data', s.changes, 'changes', rules=s.time_rules),
                 Feed('consent', s.consent, 'consent', rules=s.time_rules)]
        if s.backfill:  # the rows novation backfill lands: one more change feed
            feeds.append(Feed('backfill', join(s.backfill, BACKFILL_FILES), 'changes',
                              rules=s.time_rules))
            if not on_dataflow and not has_scheme(s.backfill):
                os.makedirs(s.backfill, exist_ok=True)
        resume = None
        if existed:  # the same stream, started again: go on after its last epoch
            if 'consent' in subscriptions and not options.view_as(StandardOptions).update:
                # consent events read from Pub/Sub are acknowledged: only the job's state has
                # them
                raise ConfigError(f'{stream_dir} exists and its consent events came from '
                                  f'Pub/Sub, which a new job would not see again: update the '
                                  f'running job (--update --job_name NAME) instead of starting '
                                  f'another')
            resume = committed_so_far(stream_dir, run_id, config.output.keys)
            check_last_epoch(config.output.path, stream_dir, run_id, resume,
                             keys=config.output.keys)
            if resume.plan_sha256 and resume.plan_sha256 != plan:
                raise ConfigError(f'{stream_dir}: its epochs were committed under plan '
                                  f'{resume.plan_sha256}, and {config.source} now gives plan '
                                  f'{plan}: one stream delivers under one plan; start a new '
                                  f'stream (and snapshot) for the new plan')
            _LOG.info('resuming %s after epoch %d', stream_dir, resume.last_epoch)
            unfinished = epoch_dir(stream_dir, resume.last_epoch + 1)
            if exists(unfinished):  # cut short before its manifest: its files count for nothing
                FileSystems.delete([unfinished])
        elif known.continues:  # go on after the stream's cut-over: what it delivered is done
            before = committed_so_far(join(config.output.path, known.continues),
                                      known.continues, config.output.keys)
            if before.plan_sha256 and before.plan_sha256 != plan:
                raise ConfigError(f'--continues {known.continues}: that stream delivered under '
                                  f'plan {before.plan_sha256}, and {config.source} now gives '
                                  f'plan {plan}: a new plan needs a new snapshot')
            resume = Committed(0, None, before.lines, before.retractions)
        if resume:
            resume = resume._replace(lines=frozenset(
                (renamed_for_feeds(path, feeds), line, index)
                for path, line, index in resume.lines))
        why = why_not_writable(config.output.path)
        if why:
            raise ConfigError(f'{config.source}: output.path: {config.output.path} cannot be '
                              f'written: {why}')
        trail = Trail(plan, config.digest, continues=known.continues,
                      replaces=known.replaces)
        if kind != 'dataflow-dry-run':
            started = append_event(
                config.output.path, 'stream_started', keys=config.output.keys, stream_id=run_id,
                config_sha256=config.digest, plan_sha256=plan,
                plan_checked=known.plan_hash is not None,
                key_ids={role: ids['primary'] for role, ids in sorted(keyring.key_ids().items())
                         if role in roles},
                snapshot_run_id=snapshot_id,
                resumed_after_epoch=resume.last_epoch if resume else None,
                continues=known.continues, replaces=known.replaces)
            trail = trail._replace(audit_started_sha256=started['sha256'],
                                   audit_root=config.output.path)
        pipeline = beam.Pipeline(runner=local_runner(options), options=options)
        build_stream(pipeline, config, feeds=feeds, run_id=run_id, stream_dir=stream_dir,
                     stop_at=stop_at, epoch_seconds=s.epoch_seconds, interval=s.poll_seconds,
                     lateness=s.lateness_seconds, idle=s.idle_seconds, snapshot_at=snapshot_at,
                     snapshot=known.snapshot, resume=resume, watermarks=on_dataflow,
                     timestamp_attribute=s.timestamp_attribute, trail=trail)
        if on_dataflow:  # a streaming job: it runs until drained, and writes cutover.json then
            try:
                result = pipeline.run()
            except Exception as e:
                raise unwrap_error(e) from None
            return {'status': 'dry-run' if kind == 'dataflow-dry-run' else 'submitted',
                    'stream_dir': stream_dir, 'result': result}
        DRAIN.clear()
        previous = {sig: signal.signal(sig, lambda *_: DRAIN.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with workers_off_the_working_directory():
                pipeline.run().wait_until_finish()
        except Exception as e:  # Beam re-raises worker errors wrapped; surface ours cleanly
            error = unwrap_error(e)
            append_event(config.output.path, 'stream_aborted', keys=config.output.keys,
                         stream_id=run_id, why=abort_reason(error))
            raise error from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return {**stream_summary(stream_dir, run_id, config.output.keys),
                'cutover': join(stream_dir, CUTOVER_FILE), 'status': 'done'}
    finally:
        if lock is not None:
            lock.release(finished=True)


def check_last_epoch(out_dir: str, stream_dir: str, run_id: str, resume, keys=None) -> None:
    """A restarted stream goes on only from the epochs the audit log records: one deleted
    after its commit, or replaced, stops it (the acquirer would miss or double changes). An
    epoch whose record a kill cut off (sealed and chained on disk, the last) is recorded now."""
    from transforms.commit.audit import append_event, recorded_epochs
    recorded = recorded_epochs(out_dir, run_id)
    if not recorded and resume.last_epoch != 1:
        return  # no epoch yet, or epochs from before the log recorded them
    last = max([n for n in recorded if isinstance(n, int)] or [0])
    if resume.last_epoch == last + 1:  # killed between the epoch's manifest and its record
        append_event(out_dir, 'epoch_committed', keys=keys, stream_id=run_id,
                     epoch=resume.last_epoch, manifest_sha256=resume.last_sha256,
                     recorded_on_restart=True)
        return
    if last > resume.last_epoch:
        raise ConfigError(f'{stream_dir}: epoch {last} was committed (the audit log records '
                          f'it) and is gone: the stream cannot go on from an incomplete '
                          f'delivery; restore the epoch')
    if resume.last_epoch and recorded.get(resume.last_epoch) != resume.last_sha256:
        raise ConfigError(f'{stream_dir}: epoch {resume.last_epoch} is not the one the audit '
                          f'log records (replaced or changed)')


def check_stream_link(out_dir: str, run_id: str, snapshot_id, config_sha256: str,
                      continues=None, replaces=None) -> None:
    """A new stream over the changes another stream of the output root already carries (the
    same snapshot, or with none the same config) must say that it continues that stream after
    its cut-over or replaces it: never a silent second copy of the same changes."""
    from transforms.commit.audit import read_log
    try:
        log = [r for r in read_log(out_dir) if isinstance(r, dict)]
    except (NovationError, OSError):
        log = []
    streams = {r.get('stream_id') for r in log if r.get('event') == 'stream_started'}
    cut_over = {r.get('stream_id') for r in log if r.get('event') == 'stream_cut_over'}
    if continues is not None:
        if continues not in streams:
            raise ConfigError(f'--continues {continues}: no stream of that id started under '
                              f'{out_dir}')
        if continues not in cut_over:
            raise ConfigError(f'--continues {continues}: that stream has not cut over; resume '
                              f'it (--run-id {continues}) instead of starting another')
        return
    if replaces is not None:
        if replaces not in streams:
            raise ConfigError(f'--replaces {replaces}: no stream of that id started under '
                              f'{out_dir}')
        return
    same = sorted({r.get('stream_id') for r in log if r.get('event') == 'stream_started'
                   and r.get('stream_id') != run_id
                   and (r.get('snapshot_run_id') == snapshot_id if snapshot_id
                        else not r.get('snapshot_run_id')
                        and r.get('config_sha256') == config_sha256)})
    if same:
        over = f'snapshot {snapshot_id}' if snapshot_id else 'the same config and feeds'
        raise ConfigError(f'stream(s) {", ".join(same)} already carry the changes after {over}: '
                          f'resume one (--run-id ID), or say that this one continues it after '
                          f'its cut-over (--continues ID) or replaces it (--replaces ID)')


def _check_dataflow(config, keyring, options, snapshot) -> None:
    """What a Dataflow stream's workers must reach: gs:// paths for everything, feed files
    included, and a Cloud KMS keyring."""
    if not (options.view_as(GoogleCloudOptions).temp_location or '').startswith('gs://'):
        raise ConfigError('a Dataflow stream needs --temp_location=gs://... (Beam\'s temporary '
                          'files go there)')
    check_reachable_by_workers(config, keyring)
    for key in ('changes', 'consent'):
        place = getattr(config.stream, key)
        if not is_subscription(place) and not has_scheme(place):
            raise ConfigError(f'{config.source}: stream.{key}: {place} is on this machine, '
                              f'which Dataflow workers cannot read; use a gs:// path or a '
                              f'Pub/Sub subscription')
    if snapshot and not has_scheme(snapshot):
        raise ConfigError(f'--snapshot: {snapshot} is on this machine, which Dataflow workers '
                          f'cannot read; give the run directory on gs://')


def _stop_time(known):
    if known.seconds is not None:
        if known.seconds <= 0:
            raise ConfigError(f'--seconds must be above 0, got {known.seconds:g}')
        return time.time() + known.seconds
    if known.until is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(known.until.replace('Z', '+00:00'))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(f'--until {known.until!r}: give an ISO 8601 time with its zone, e.g. '
                          f'2026-12-31T18:00:00+08:00')
    return moment.timestamp()


def _snapshot(run_dir, keyring, plan: str):
    """The snapshot run's completion time (microseconds) and run id, after checking it used
    this keyring's pseudonym key (otherwise the stream's pseudonyms would not join its own)
    and ran under the stream's plan (otherwise the stream would treat its customers
    otherwise)."""
    path = join(run_dir, MANIFEST_FILE)
    from pipelines.decrypt import load_manifest
    try:
        manifest = load_manifest(run_dir, keyring)
    except NovationError as e:
        raise ConfigError(f'--snapshot: {e}') from None
    try:
        done = datetime.datetime.fromisoformat(manifest['completed_at'])
        snapshot_keys = manifest['keys']['pseudonym']['primary']
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f'--snapshot: {path} is not the manifest of a finished run') from None
    if snapshot_keys != keyring.key_ids()['pseudonym']['primary']:
        raise ConfigError(f'--snapshot: {run_dir} was written with another pseudonym key than '
                          f'{keyring.path}: the stream\'s pseudonyms would not join its '
                          f'delivery; give the keyring the snapshot used')
    if manifest.get('plan_sha256') not in (None, plan):
        raise ConfigError(f'--snapshot: {run_dir} ran under plan {manifest["plan_sha256"]}, '
                          f'and the config gives plan {plan}: the stream would treat its '
                          f'customers otherwise than the snapshot did; stream with the config '
                          f'the snapshot ran with')
    return int(done.timestamp() * 10**6), manifest.get('run_id')


def stream_summary(stream_dir: str, run_id: str, keys_path: str) -> dict:
    """Epochs committed under ``stream_dir`` and what they hold, from their manifests (their
    seals and chain checked)."""
    manifests = [m for _, m in checked_epochs(stream_dir, run_id, keys_path)]
    dead = {}
    for m in manifests:
        for t in m['tables'].values():
            for reason, n in t['dead_letters'].items():
                dead[reason] = dead.get(reason, 0) + n
    return {'stream_dir': stream_dir, 'epochs': len(manifests),
            'rows_written': sum(t['rows_written'] for m in manifests
                                for t in m['tables'].values()),
            'dead_letters': dict(sorted(dead.items())),
            'retractions': sum(m['retractions'] for m in manifests),
            'backfill': sum(sum(m.get('backfill', {}).values()) for m in manifests),
            'conservation': conservation(manifests)}


def conservation_line(check: dict) -> str:
    """The stream's conservation in one line: what became of every feed event read."""
    files = check['files']
    totals = {}
    for f in files:
        for outcome, n in f['outcomes'].items():
            totals[outcome] = totals.get(outcome, 0) + (sum(n.values()) if isinstance(n, dict)
                                                        else n)
    events = sum(f['events'] or 0 for f in files)
    what = ', '.join(f'{outcome.replace("_", " ")} {n:,}' for outcome, n in
                     sorted(totals.items())) or 'none'
    if check['holds']:
        return (f'  feed events: {count(events, "event")} read from '
                f'{count(len(files), "file")}, every one accounted for ({what})')
    short = [f for f in files if not f['holds']]
    return (f'  feed events: NOT all accounted for: {count(len(short), "file")} of '
            f'{len(files)} do not add up (see conservation in cutover.json); {what}')


def print_stream_summary(summary: dict, out=print) -> None:
    """What a stream committed, for the operator: its totals, the cut-over manifest, and its
    directory last (for scripts)."""
    dead = ', '.join(f'{r} {n:,}' for r, n in summary['dead_letters'].items()) or 'none'
    out(f'{count(summary["epochs"], "epoch")} committed: '
        f'{count(summary["rows_written"], "change")} delivered (encrypted), dead letters: '
        f'{dead}, {count(summary["retractions"], "retraction")}')
    out(conservation_line(summary['conservation']))
    if summary.get('backfill'):
        out(f'  {count(summary["backfill"], "customer")} consented again after their rows '
            f'were refused, retracted or moved without their sensitive fields: novation '
            f'backfill {summary["stream_dir"]} --list FILE names them')
    out(f'  cut-over manifest: {summary["cutover"]} (the snapshot and every epoch, with the '
        f'sha256 of each manifest)')
    out(summary['stream_dir'])
