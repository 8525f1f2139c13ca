"""``novation replay OUT/<stream id> --config FILE``: the dead letters a stream's review marked
``replay``, delivered through the stream's own consent decision, masking and encryption.

What a replay can deliver is a change the stream refused for consent: its dead letter keeps the
raw row and what the change was (op, commit time, log position), never in clear. Each is read
from the stream's encrypted dead-letter files by the workers (raw rows never enter the job's
graph) and decided again with the consent known now: the config's registry and erasure list as
they are now and every consent event the consent feed holds now, so a withdrawal since wins and
a consent given since lets it through. A change older than one delivered for its row (by the
stream, or an earlier replay of it) is ``superseded``, not applied, as the stream's key order
would have it. The rest go through ``deliver_changes`` (conform, the sensitive fields' separate
consent, masking) and ``commit_epoch`` (encrypted files, sealed manifest) into a linked stream,
``OUT/<stream id>-replay-<n>``: one epoch and its cut-over, whose ``cutover.json`` names the
stream it replays and the last epoch it was checked against (``replay_of``): the acquirer
applies it after that epoch. The same keys give the same pseudonyms. The stream's
``review.json`` records the dead letters each replay consumed, so replaying again moves nothing
twice; conservation: the dead letters replayed = delivered + refused again + superseded.
"""

import collections
import datetime
import io
import json
import time
from typing import List, Optional

import apache_beam as beam

from pipelines.decrypt import read_stream_table, stream_epochs, stream_snapshot
from pipelines.review import (load_review, matches, output_root, replay_decisions, save_review,
                              select)
from transforms.commit.audit import append_event, read_log
from transforms.stream.changes import Change
from transforms.consent.events import decision_at
from transforms.keys.crypto import cached_keyed_ops, file_identity
from transforms.write.delivered import deadletter_lines
from transforms.stream.chain import Trail, checked_epochs, write_cutover
from transforms.stream.epochs import commit_parts, prepare_items
from transforms.stream.deliver import masked_keys
from transforms.common.errors import ConfigError, NovationError
from transforms.stream.feeds import Feed, FileRead, read_feed_file, read_seed_file
from transforms.common.files import exists, join, read_bytes
from transforms.keys.keyring import cached_keyring
from transforms.stream.consent import ChangeEvent, Counted, Decided

__all__ = ['plan_stream_replay', 'replay_stream', 'run_stream_replay', 'stream_letter_id',
           'superseded']

FEED = 'replay'  # the feed a replay's events are counted under


def stream_letter_id(ops, record: dict) -> str:
    """A stream dead letter's stable id: keyed, so it says nothing of the row."""
    index = (record.get('change') or {}).get('index', 0)
    return ops.pseudonym('novation-deadletter',
                         f'{record["table"]}|{record["source_file"]}|{record["row"]}|{index}')


def plan_stream_replay(stream_dir: str, config, plan: str,
                       only: Optional[List[int]] = None) -> dict:
    """What to replay, checked before any data moves: the dead-letter ids selected, the
    dead-letter files holding them, the decisions used, the stream's id and last epoch.
    Raises NovationError in one line."""
    keys = config.output.keys
    manifests = stream_epochs(stream_dir, keys)  # every seal, the chain, the cut-over checked
    if not manifests:
        raise NovationError(f'{stream_dir}: the stream has committed no epoch: nothing to '
                            f'replay')
    stream_id = manifests[-1]['run_id']
    if manifests[-1].get('plan_sha256') not in (None, plan):
        raise ConfigError(f'{config.source}: gives plan {plan}, and stream {stream_id} '
                          f'delivered under plan {manifests[-1]["plan_sha256"]}: a replay '
                          f'delivers under the stream\'s plan')
    started = [r for r in read_log(output_root(stream_dir)) if r.get('event') ==
               'stream_started' and r.get('stream_id') == stream_id]
    used = (started[0].get('key_ids') or {}).get('pseudonym') if started else None
    if used is not None and cached_keyring(keys, ('pseudonym',)).key_ids()['pseudonym'][
            'primary'] != used:
        raise ConfigError(f'{config.source}: output.keys: another pseudonym key than stream '
                          f'{stream_id} used; a replay must keep its pseudonyms')
    review = load_review(stream_dir, stream_id)
    in_force = replay_decisions(stream_dir, review, only)
    tables = {t.name for t in config.tables}
    ops = cached_keyed_ops(keys)
    consumed = {i for r in review.get('replays', []) for i in r['consumed']}
    selected, kept_back, done = {}, collections.Counter(), 0
    letters = select(stream_dir, keys, {})  # decrypted once, whatever the decisions
    for _, decision in in_force:
        for record in (r for r in letters if matches(r, decision['group'])):
            if record['raw'] is None:
                continue  # an erased customer's: nothing was kept
            if record.get('stage') != 'consent' or 'change' not in record:
                kept_back[record['reason']] += 1  # not a change refused for consent
                continue
            if record['table'] not in tables:
                raise ConfigError(f'{config.source}: tables: no table {record["table"]!r}, '
                                  f'which the replayed dead letters belong to')
            identity = stream_letter_id(ops, record)
            if identity in consumed:
                done += 1
            else:
                selected[identity] = record['epoch']
    if not selected:
        why = [f'{done:,} replayed already ({", ".join(r["run_id"] for r in review["replays"])})'
               ] if done else []
        why += [f'{n:,} {r} (no change refused for consent)'
                for r, n in sorted(kept_back.items())]
        raise NovationError(f'{stream_dir}: nothing to replay: of the dead letters marked for '
                            f'replay, {"; ".join(why) or "none kept a raw row (erasures)"}')
    epochs = set(selected.values())
    files = sorted(f['path'] for m in manifests if m['epoch'] in epochs
                   for f in m.get('files', []) if f.get('kind') == 'deadletter')
    return {'stream_id': stream_id, 'selected': frozenset(selected), 'files': files,
            'decisions': [n for n, _ in in_force], 'after_epoch': manifests[-1]['epoch'],
            'not_replayable': dict(sorted(kept_back.items())),
            'replays': [r['run_id'] for r in review.get('replays', [])]}


def consent_now(config, subjects=None) -> dict:
    """{subject: [ConsentEvent]} known now: the config's registry and erasure list as they
    are now, and every consent event of the consent feed's files (``subjects``: only
    theirs)."""
    s = config.stream
    feeds = [Feed('registry', config.consent.registry, 'registry', config.consent.columns),
             Feed('erasures', config.consent.erasures, 'erasures', config.consent.columns)]
    events = collections.defaultdict(list)

    def keep(item):
        event = getattr(item, 'event', None)
        if hasattr(event, 'subject') and hasattr(event, 'at') and \
                (subjects is None or event.subject in subjects):
            events[event.subject].append(event)

    for feed in feeds:
        for item in read_seed_file(feed, feed.pattern):
            keep(item)
    if s is not None:
        from apache_beam.io.filesystems import FileSystems
        feed = Feed('consent', s.consent, 'consent', rules=s.time_rules)
        for match in FileSystems.match([s.consent])[0].metadata_list:
            for item in read_feed_file(feed, match.path):
                keep(item)
    return dict(events)


class DecideAgain(beam.PTransform):
    """The selected dead letters of a stream's dead-letter files, read and decrypted in the
    workers, each decided again at ``now`` with the consent known now: ``Decided`` items."""

    def __init__(self, stream_dir: str, plan: dict, config, now: int):
        super().__init__()
        self._files = plan['files']
        self._fn = _DecideAgainFn(stream_dir, plan['stream_id'], plan['selected'], config, now)

    def expand(self, pbegin):
        return (pbegin
                | 'Files' >> beam.Create(self._files)
                | 'Decide' >> beam.ParDo(self._fn))


class _DecideAgainFn(beam.DoFn):
    def __init__(self, stream_dir, stream_id, ids, config, now):
        self._stream_dir, self._stream_id, self._ids = stream_dir, stream_id, ids
        self._config, self._now = config, now
        self._events = None

    def process(self, path):
        config = self._config
        keyring = cached_keyring(config.output.keys, ('deadletter',))
        ops = cached_keyed_ops(config.output.keys)
        data = read_bytes(join(self._stream_dir, path), what='dead-letter file')
        records = [r for r in map(json.loads, deadletter_lines(
            io.BytesIO(data), keyring, file_identity(self._stream_id, path)))
            if r.get('raw') is not None and 'change' in r
            and stream_letter_id(ops, r) in self._ids]
        if not records:
            return
        if self._events is None:  # once a worker: the consent known now
            self._events = consent_now(config)
        tables = {t.name: t for t in config.tables}
        for r in records:
            table, c = tables[r['table']], r['change']
            row = r['raw']
            subject = next((str(row[f]) for f in table.subject_columns
                            if row.get(f) not in (None, '')), None)
            key = next((str(row[f]) for f in table.key_columns if row.get(f) is not None),
                       None) if table.schema.primary_key else None
            change = Change(table.name, c['op'], row, c['committed_at'], FEED, (0,),
                            c['position'], c['source'])
            decision = decision_at(self._now, (), False, self._events.get(subject, ()),
                                   purposes=config.transfer.legal_bases,
                                   cross_border=config.transfer.cross_border)
            yield Decided(subject, ChangeEvent(change, r['source_file'], r['row'], c['index'],
                                               key), decision.reason, decision.sensitive_ok)


def superseded(latest: dict, key, committed_at: int) -> bool:
    """Whether a replayed change of the row ``key`` (as delivered: masked) is older than the
    latest change ``latest`` says was delivered for it (pure). A change of the same instant
    is applied: the replay comes after it, and nothing says it is older."""
    delivered = latest.get(key)
    return delivered is not None and delivered > committed_at


def delivered_latest(stream_dirs, keys: str, table) -> dict:
    """{masked primary key: the latest __committed_at (microseconds) delivered} over the
    epochs of ``stream_dirs`` for ``table``."""
    latest = {}
    key = table.schema.primary_key
    for stream_dir in stream_dirs:
        rows, _ = read_stream_table(stream_dir, keys=keys, table=table.name)
        if not rows.num_rows or key not in rows.column_names:
            continue
        times = rows.column('__committed_at').cast('int64').to_pylist()
        for value, at in zip(rows.column(key).to_pylist(), times):
            if value is not None and at is not None and at > latest.get(value, -1):
                latest[value] = at
    return latest


def commit_replay(items, *, stream_dir: str, replay_dir: str, replay_id: str, plan: dict,
                  config, trail: Trail, snapshot_dir: Optional[str]) -> None:
    """Commit the replay's decided ``items`` as epoch 1 of ``replay_dir``, then its cut-over:
    superseded changes counted, not applied; every dead letter replayed counted under its
    feed file."""
    from transforms.consent.rules import refusal_problems
    keys = config.output.keys
    ops = cached_keyed_ops(keys)
    tables = {t.name: t for t in config.tables}
    root = output_root(stream_dir)
    earlier = [stream_dir] + [join(root, r) for r in plan['replays'] if exists(join(root, r))]
    decided = sorted(items, key=lambda d: (d.event.change.committed_at, d.event.source,
                                           d.event.line, d.event.index))
    out = []
    for name in sorted({d.event.change.table for d in decided}):
        table = tables[name]
        mine = [d for d in decided if d.event.change.table == name]
        delivering = [d for d in mine if d.reason is None]
        if table.schema.primary_key and delivering:
            latest = delivered_latest(earlier, keys, table)
            masked = masked_keys(table, [d.event.key for d in delivering],
                                 [d.subject for d in delivering], ops)
            old = {id(d) for d, k in zip(delivering, masked)
                   if superseded(latest, k, d.event.change.committed_at)}
        else:
            old = set()
        for d in mine:
            e = d.event
            out.append(Counted(e.source, e.line, e.index, 'superseded', e.change.committed_at)
                       if id(d) in old else d)
    per_file = collections.Counter(d.event.source for d in decided)
    out += [FileRead(FEED, path, n, n) for path, n in sorted(per_file.items())]
    problems = refusal_problems(config.transfer.legal_bases,
                                config.transfer.destination_region)
    part = prepare_items(config, ops, problems, 0, out)
    commit_parts(config, ops, stream_dir=replay_dir, run_id=replay_id, number=1,
                 parts=[part], previous=None, trail=trail)
    write_cutover(replay_dir, replay_id, snapshot_dir, keys, config.report_lang, trail)


def replay_outcome(replay_dir: str, replay_id: str, keys: str) -> dict:
    """What a committed replay did, from its sealed epoch manifest (checked): the dead letters
    replayed, delivered, refused again (by reason) and superseded."""
    checked = checked_epochs(replay_dir, replay_id, keys)
    if len(checked) != 1 or not exists(join(replay_dir, 'cutover.json')):
        raise NovationError(f'{replay_dir}: the replay did not commit its epoch and cut-over')
    manifest = checked[0][1]
    counts = collections.Counter()
    for outcomes in manifest['outcomes'].values():
        for outcome, n in outcomes.items():
            counts[outcome] += n
    read = sum(f['events'] for f in manifest['files_read'])
    return {'replay_id': replay_id, 'replay_dir': replay_dir, 'replayed': read,
            'delivered': counts['delivered'], 'dead_letters_again': counts['dead_letter'],
            'superseded': counts['superseded'],
            'holds': sum(counts.values()) == read,
            'dead_letters': {t: x['dead_letters'] for t, x in manifest['tables'].items()
                             if x['dead_letters']}}


def replay_stream(stream_dir: str, config, plan_hash: str, *, only=None, options=None) -> dict:
    """Replay a stream's dead letters (``plan_stream_replay``), record what it consumed in
    the stream's review.json and the audit log; returns what it did."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.launch import local_runner
    stream_dir = stream_dir.rstrip('/')
    plan = plan_stream_replay(stream_dir, config, plan_hash, only)
    root = output_root(stream_dir)
    replay_id = f'{plan["stream_id"]}-replay-{len(plan["replays"]) + 1}'
    replay_dir = join(root, replay_id)
    if exists(replay_dir):
        raise NovationError(f'{replay_dir} exists already: a replay that did not finish? '
                            f'remove it (novation clean) and replay again')
    snapshot = stream_snapshot(stream_dir, config.output.keys)
    snapshot_dir = join(root, snapshot['run_id']) if snapshot else None
    replay_of = {'stream_id': plan['stream_id'], 'after_epoch': plan['after_epoch']}
    started = append_event(root, 'stream_started', keys=config.output.keys,
                           stream_id=replay_id, config_sha256=config.digest,
                           plan_sha256=plan_hash, plan_checked=False,
                           snapshot_run_id=snapshot['run_id'] if snapshot else None,
                           replay_of=replay_of)
    trail = Trail(plan_hash, config.digest, started['sha256'], root, replay_of=replay_of)
    options = options or PipelineOptions([])
    try:
        with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
            _ = (pipeline
                 | 'DecideAgain' >> DecideAgain(stream_dir, plan, config,
                                                 int(time.time() * 10**6))
                 | 'All' >> beam.combiners.ToList()
                 | 'Commit' >> beam.Map(
                     commit_replay, stream_dir=stream_dir, replay_dir=replay_dir,
                     replay_id=replay_id, plan=plan, config=config, trail=trail,
                     snapshot_dir=snapshot_dir))
    except BaseException as e:  # an interrupt too: nothing half-written stays
        from apache_beam.io.filesystems import FileSystems
        if exists(replay_dir):
            FileSystems.delete([replay_dir])
        append_event(root, 'run_aborted', keys=config.output.keys, run_id=replay_id,
                     reason=f'the replay failed ({type(e).__name__}); its partial output was '
                            f'removed')
        raise
    result = replay_outcome(replay_dir, replay_id, config.output.keys)
    if result['replayed'] != len(plan['selected']) or not result['holds']:
        raise NovationError(f'{replay_dir}: the replay read {result["replayed"]} of '
                            f'{len(plan["selected"])} dead letters selected; conservation does '
                            f'not hold')
    review = load_review(stream_dir, plan['stream_id'])
    entry = {'run_id': replay_id, 'at': datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec='seconds'), 'decisions': plan['decisions'],
        'after_epoch': plan['after_epoch'], 'dead_letters_replayed': result['replayed'],
        'rows_written': result['delivered'], 'dead_letters_again': result['dead_letters_again'],
        'superseded': result['superseded'], 'consumed': sorted(plan['selected'])}
    review.setdefault('replays', []).append(entry)
    save_review(stream_dir, review)
    append_event(root, 'replayed', keys=config.output.keys, run_id=replay_id,
                 replay_of=plan['stream_id'], decisions=plan['decisions'],
                 dead_letters_replayed=result['replayed'], rows_written=result['delivered'],
                 superseded=result['superseded'])
    return {**result, 'stream_id': plan['stream_id'], 'not_replayable': plan['not_replayable'],
            'after_epoch': plan['after_epoch']}



def run_stream_replay(stream_dir: str, argv, only=None) -> dict:
    """``novation replay OUT/<stream id> --config FILE [--output P] [--keys K] [--plan-hash H]
    [--only N,...]`` (other options: Beam's)."""
    import argparse
    from apache_beam.options.pipeline_options import PipelineOptions
    from config.plan import build_plan, plan_sha256
    from pipelines.launch import launch_config
    parser = argparse.ArgumentParser(prog='novation replay', add_help=False)
    parser.add_argument('--config', required=True)
    parser.add_argument('--output')
    parser.add_argument('--keys')
    parser.add_argument('--plan-hash')
    _, beam_args, config = launch_config(parser, argv)
    return replay_stream(stream_dir, config, plan_sha256(build_plan(config)), only=only,
                         options=PipelineOptions(beam_args))
