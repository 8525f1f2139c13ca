"""The stream's record: each epoch's encrypted files and manifest, chained by sha256 to the one
before; the cut-over manifest that closes the chain; the stream's reports; and the checks a
restart and every reader make of the chain (seals, order, conservation of every feed line).
"""

import collections
import datetime
import hashlib
import json
import secrets
import time
from typing import NamedTuple, Optional, Sequence

import pyarrow as pa

from transforms.commit.audit import append_event
from transforms.commit.manifest import MANIFEST_FILE, file_facts
from transforms.commit.manifest_schema import EPOCH_FORMAT, check_epoch
from transforms.commit.report import (
    REPORT_HTML,
    REPORT_JSON,
    build_epoch_report,
    build_stream_report,
    render_epoch_html,
    render_stream_html,
)
from transforms.common.errors import InputError, NovationError
from transforms.common.files import filesystems, join, write_json, write_whole
from transforms.common.reasons import DeadLetter
from transforms.keys.crypto import file_identity
from transforms.keys.keyring import cached_keyring
from transforms.keys.seal import SEAL_ROLE, read_sealed, write_sealed_json
from transforms.stream.consent import Retraction
from transforms.stream.deliver import CHANGE_COLUMNS
from transforms.write.deadletter import EncryptedJsonLines, encode, seal
from transforms.write.tables import ParquetFiles

__all__ = ['CUTOVER_FILE', 'Committed', 'EPOCHS_DIR', 'EPOCH_FORMAT', 'EPOCH_MANIFEST',
           'RETRACTION_FIELDS', 'RETRACTION_KEYS', 'RetractionFiles', 'Trail', 'checked_epochs',
           'commit_epoch', 'committed_so_far', 'conservation', 'count', 'epoch_dir', 'epoch_line',
           'manifest_sha256', 'retraction_id', 'write_cutover', 'write_epoch_report',
           'write_stream_report']


EPOCHS_DIR = 'epochs'
EPOCH_MANIFEST = 'manifest.json'
RETRACTION_FIELDS = (pa.field('subject_id', pa.string()), pa.field('tables', pa.string()),
                     pa.field('reason', pa.string()),
                     pa.field('at', pa.timestamp('us', tz='UTC')))


# Who must read what: the acquirer's data team applies retractions, so they are under data.*
# keys (the subject's pseudonym is personal data, as in the delivered tables).
RETRACTION_KEYS = {'data.personal': ['subject_id'], 'data.internal': ['tables', 'reason', 'at']}


def epoch_dir(stream_dir: str, number: int) -> str:
    return join(stream_dir, EPOCHS_DIR, f'{number:06d}')


class Trail(NamedTuple):
    """A stream's place in the evidence trail: the plan it runs under (the sha256 of its plan
    and of its config), and the audit log's record of its start and the output root holding
    the log (None: no log is kept, as in unit tests). Epoch manifests and the cut-over manifest
    name them; the cut-over is appended to the log."""
    plan_sha256: Optional[str] = None
    config_sha256: Optional[str] = None
    audit_started_sha256: Optional[str] = None
    audit_root: Optional[str] = None
    continues: Optional[str] = None  # the stream this one goes on after (its cut-over)
    replaces: Optional[str] = None   # the stream whose epochs this one replaces
    # a replay of a stream's dead letters: {'stream_id', 'after_epoch'}, the stream it
    # replays and the last epoch it was checked against (the acquirer applies it after that)
    replay_of: Optional[dict] = None


def commit_epoch(*, stream_dir: str, run_id: str, number: int, tables, delivered: dict,
                 dead: Sequence[DeadLetter], retractions: Sequence, sources: Sequence[dict],
                 previous_sha256, keys_path: str, pseudonymize, erased=frozenset(),
                 consumed=(), retraction_ids=(), lang: str = 'en', trail: Trail = Trail(),
                 outcomes=(), files=(), held=(), latest: Optional[int] = None,
                 regained=()) -> dict:
    """Write epoch ``number`` of a stream: its files under their final names, then its
    manifest, last; returns the manifest.

    ``tables``: TableConfigs by name; ``delivered``: table -> batch from ``deliver_changes``;
    ``sources``: the feed files and lines the epoch covers; ``previous_sha256``: the sha256 of
    the previous epoch's manifest (None for the first), so a missing or altered epoch shows.
    ``consumed`` (feed lines) and ``retraction_ids``: what a restarted stream must not commit
    again. ``outcomes`` ((path, outcome, count)) and ``files`` (``FileRead``): what became of
    each feed event, and the files read whole (the stream's conservation, summed at
    cut-over); ``held``: (table, column, rows) of columns no schema names, held back;
    ``latest``: the latest commit time at the seller of an event it holds (microseconds);
    ``regained``: customers who consented again and whose rows need a backfill
    (``Regained``), listed with their ids in an encrypted file under the dead-letter key:
    the seller's operator exports their rows, the acquirer never reads the list.
    Each file is written under a temporary name and renamed once complete, and is bound to its
    identity (``<run_id>/epochs/<number>/<path>``) as the batch's files are.
    """
    directory = epoch_dir(stream_dir, number)
    prefix = f'{EPOCHS_DIR}/{number:06d}'
    written = []

    def write(kind, name, writer, values):
        relative = f'{prefix}/{kind}/{name}/part-{secrets.token_hex(8)}{writer.suffix}'
        final = join(stream_dir, relative)
        temp = join(directory, f'.temp-{secrets.token_hex(4)}{writer.suffix}')
        state = writer.open(filesystems().create(temp), file_identity(run_id, relative))
        for value in values:
            writer.write(state, value)
        writer.close(state)
        if not filesystems().exists(join(directory, kind, name)):
            filesystems().mkdirs(join(directory, kind, name))
        filesystems().rename([temp], [final])
        roles = list(writer.roles)  # the keyring is loaded once per worker, not per epoch
        written.append({'table': name, 'kind': kind, **file_facts(
            final, relative, run_id=run_id, keys_path=keys_path, roles=roles,
            key_ids=cached_keyring(keys_path, roles).key_ids())})

    for name, batch in sorted(delivered.items()):
        if batch.num_rows:
            write('data', name, ParquetFiles(tables[name], keys_path,
                                             extra=[(f, 'data.internal') for f in CHANGE_COLUMNS]),
                  [batch])
    by_table = {}
    for letter in dead:
        by_table.setdefault(letter.table, []).append(letter)
    for name, letters in sorted(by_table.items()):
        # a problem with no table of the config (a feed's own name) keeps no raw row at all
        restricted = tuple(r.field.name for r in tables[name].rules
                           if r.field.classification == 'restricted') if name in tables else ()
        lines = [encode(seal(letter, erased, pseudonymize, restricted)) for letter in letters]
        write('deadletter', name, EncryptedJsonLines(keys_path), lines)
    if retractions:
        write('retractions', 'all', RetractionFiles(keys_path), [pa.RecordBatch.from_arrays([
            pa.array([pseudonymize(r.subject) for r in retractions], pa.string()),
            pa.array([','.join(r.tables) for r in retractions], pa.string()),
            pa.array([r.reason for r in retractions], pa.string()),
            pa.array([r.at for r in retractions], pa.timestamp('us', tz='UTC'))],
            schema=pa.schema(RETRACTION_FIELDS))])
    if regained:
        write('backfill', 'all', EncryptedJsonLines(keys_path), [json.dumps(
            {'subject_id': r.subject, 'kind': r.kind,
             'at': datetime.datetime.fromtimestamp(r.at / 10**6, datetime.timezone.utc)
             .isoformat(timespec='milliseconds')}, ensure_ascii=False).encode('utf-8')
            for r in regained])
    manifest = {
        'format': EPOCH_FORMAT,
        'run_id': run_id,
        'epoch': number,
        'committed_at': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'previous_manifest_sha256': previous_sha256,
        # the latest change it holds, as committed at the seller: the report's lag
        'latest_change_at': None if latest is None else datetime.datetime.fromtimestamp(
            latest / 10**6, datetime.timezone.utc).isoformat(timespec='milliseconds'),
        # the plan it was committed under, and the audit record of its stream's (re)start
        'plan_sha256': trail.plan_sha256,
        'config_sha256': trail.config_sha256,
        'audit_started_sha256': trail.audit_started_sha256,
        # every table with changes or dead letters; a feed's own name for a line that names
        # no table of the config
        'tables': {name: {'rows_written': delivered[name].num_rows if name in delivered else 0,
                          'ops': dict(sorted(collections.Counter(
                              delivered[name].column('__op').to_pylist()).items()))
                          if name in delivered else {},
                          'dead_letters': dict(sorted(collections.Counter(
                              d.reason for d in by_table.get(name, ())).items()))}
                   for name in sorted(set(delivered) | set(by_table))},
        'retractions': len(retractions),
        # customers who consented again, whose rows need a backfill (novation backfill)
        'backfill': dict(sorted(collections.Counter(r.kind for r in regained).items())),
        # what became of every feed event this epoch holds, per feed file
        'outcomes': _outcome_counts(outcomes),
        'files_read': [{'path': f.path, 'feed': f.feed, 'lines': f.lines, 'events': f.events}
                       for f in sorted(set(files), key=lambda f: f.path)],
        'held_columns': {table: {column: n for t, column, n in held if t == table}
                         for table in sorted({t for t, _, _ in held})},
        'sources': list(sources),
        'consumed': list(consumed),
        'retraction_ids': list(retraction_ids),
        'files': sorted(written, key=lambda f: f['path']),
    }
    # the epoch's report first: an epoch whose manifest is written always has one
    write_epoch_report(stream_dir, manifest, lang)
    data = write_sealed_json(directory, EPOCH_MANIFEST, manifest, keys_path,
                             file_identity(run_id, f'{prefix}/{EPOCH_MANIFEST}'))
    if trail.audit_root:  # the log vouches for each epoch: one deleted or replaced shows
        append_event(trail.audit_root, 'epoch_committed', keys=keys_path, stream_id=run_id,
                     epoch=number, manifest_sha256=hashlib.sha256(data).hexdigest())
    return manifest


def manifest_sha256(stream_dir: str, number: int) -> str:
    """The sha256 of epoch ``number``'s manifest as written, for the next epoch's chain."""
    with filesystems().open(join(epoch_dir(stream_dir, number), EPOCH_MANIFEST)) as f:
        return hashlib.sha256(f.read()).hexdigest()


class RetractionFiles(ParquetFiles):
    """Retraction records as encrypted Parquet: subject pseudonym, tables, reason, time."""

    def __init__(self, keys_path):  # pylint: disable=super-init-not-called
        self._schema = pa.schema(RETRACTION_FIELDS)
        self._column_keys = {role: list(cols) for role, cols in RETRACTION_KEYS.items()}
        self._roles = sorted({'data.footer', *self._column_keys})
        self._keys_path = keys_path


CUTOVER_FILE = 'cutover.json'


def _predecessors(stream_dir: str, trail: Trail, keys_path: str) -> list:
    """The epoch manifests of the stream this one continues (``--continues``), if any."""
    if not trail.continues:
        return []
    root = stream_dir.rstrip('/').rsplit('/', 1)[0]
    return [m for _, m in checked_epochs(join(root, trail.continues), trail.continues,
                                         keys_path)]


def write_cutover(stream_dir: str, run_id: str, snapshot, keys_path: str,
                  lang: str = 'en', trail: Trail = Trail()) -> dict:
    """The cut-over manifest, written when the stream stops: the snapshot run and every epoch,
    each with the sha256 of its manifest, so the acquirer can check that what it holds (the
    snapshot, then the epochs in order) is the whole delivery; first, the stream's report over
    every epoch. With an audit log (``trail.audit_root``) the cut-over is appended to it, with
    the manifest's sha256: it names every epoch's, so the log vouches for the whole chain."""
    checked = checked_epochs(stream_dir, run_id, keys_path)
    manifests = [manifest for _, manifest in checked]
    epochs = [{'epoch': number, 'manifest': f'{EPOCHS_DIR}/{number:06d}/{EPOCH_MANIFEST}',
               'sha256': hashlib.sha256(data).hexdigest()}
              for number, (data, _) in enumerate(checked, 1)]
    cutover = {'format': 'novation-cutover/1', 'stream_id': run_id,
               'completed_at': datetime.datetime.now(datetime.timezone.utc).isoformat(
                   timespec='seconds'),
               'plan_sha256': trail.plan_sha256,
               'audit_started_sha256': trail.audit_started_sha256,
               'snapshot': None, 'epochs': epochs,
               'continues': trail.continues, 'replaces': trail.replaces,
               'replay_of': trail.replay_of,
               # every feed event read, accounted for: delivered, a dead letter, a repeat,
               # superseded, a consent event, or a line that is no change (by kind); a stream
               # that continues another counts the events that one delivered as its own
               'conservation': conservation(_predecessors(stream_dir, trail, keys_path)
                                            + manifests)}
    if snapshot:
        data = read_sealed(snapshot, MANIFEST_FILE, cached_keyring(keys_path, (SEAL_ROLE,)),
                           what='snapshot manifest')
        snapshot_id = json.loads(data)['run_id']
        # relative to the output root, as the acquirer holds it: the seller's own paths are
        # none of the acquirer's business
        cutover['snapshot'] = {'run_id': snapshot_id,
                               'manifest': f'{snapshot_id}/{MANIFEST_FILE}',
                               'sha256': hashlib.sha256(data).hexdigest()}
    write_stream_report(stream_dir, run_id, manifests, lang, cut_over=True)
    data = write_sealed_json(stream_dir, CUTOVER_FILE, cutover, keys_path,
                             file_identity(run_id, CUTOVER_FILE))
    if trail.audit_root:
        append_event(trail.audit_root, 'stream_cut_over', keys=keys_path, stream_id=run_id,
                     cutover_sha256=hashlib.sha256(data).hexdigest(), epochs=len(epochs),
                     snapshot_run_id=(cutover['snapshot'] or {}).get('run_id'))
    return cutover


def write_stream_report(stream_dir: str, run_id: str, manifests, lang: str,
                        cut_over: bool) -> dict:
    """The stream's report over ``manifests`` (its epochs, checked), as report.json and
    report.html in its directory: at cut-over, or of the epochs so far."""
    report = build_stream_report(manifests, run_id, lang, cut_over=cut_over)
    write_json(stream_dir, REPORT_JSON, report)
    write_whole(stream_dir, REPORT_HTML, render_stream_html(report).encode('utf-8'))
    return report


def write_epoch_report(stream_dir: str, manifest: dict, lang: str) -> dict:
    """An epoch's report.json and report.html, from its manifest (checked)."""
    directory = epoch_dir(stream_dir, manifest['epoch'])
    report = build_epoch_report(manifest, lang)
    write_json(directory, REPORT_JSON, report)
    write_whole(directory, REPORT_HTML, render_epoch_html(report).encode('utf-8'))
    return report


# What earlier runs of a stream committed: the last epoch and its manifest's sha256, the feed
# lines ((path, line)) consumed and the retractions made (their opaque ids).
# ``plan_sha256``: the plan the last epoch was committed under.
Committed = collections.namedtuple('Committed', 'last_epoch last_sha256 lines retractions '
                                   'plan_sha256', defaults=(None,))


def checked_epochs(stream_dir: str, run_id: str, keys_path: str) -> list:
    """Every epoch manifest of ``stream_dir`` in order, as ``(bytes, manifest)``, once their
    seals (under the keyring at ``keys_path``) and their chain are checked; raises InputError
    if one is missing or altered (its seal fails, or its successor names another sha256)."""
    keyring = cached_keyring(keys_path, (SEAL_ROLE,))
    numbers = sorted(int(m.path.rstrip('/').split('/')[-2]) for m in filesystems().match(
        [join(stream_dir, EPOCHS_DIR, '*', EPOCH_MANIFEST)])[0].metadata_list)
    previous, epochs = None, []
    for expected, number in enumerate(numbers, 1):
        if number != expected:
            raise InputError(f'{stream_dir}: epoch {expected:06d} is missing; the stream '
                             f'cannot go on from an incomplete chain')
        try:
            text = read_sealed(epoch_dir(stream_dir, number), EPOCH_MANIFEST, keyring,
                               file_identity(run_id, f'{EPOCHS_DIR}/{number:06d}/'
                                                        f'{EPOCH_MANIFEST}'),
                               what='epoch manifest')
        except NovationError as e:
            raise InputError(f'{stream_dir}: epoch {number:06d}: {e}') from None
        manifest = check_epoch(json.loads(text), f'{stream_dir}: epoch {number:06d}')
        if manifest.get('previous_manifest_sha256') != previous:
            raise InputError(f'{stream_dir}: epoch {number:06d} does not follow epoch '
                             f'{number - 1:06d} (its sha256 differs): an epoch was altered')
        previous = hashlib.sha256(text).hexdigest()
        epochs.append((text, manifest))
    return epochs


def committed_so_far(stream_dir: str, run_id: str, keys_path: str) -> Committed:
    """What the checked epochs of ``stream_dir`` committed (``checked_epochs``)."""
    epochs = checked_epochs(stream_dir, run_id, keys_path)
    lines, retracted = set(), set()
    for _, manifest in epochs:
        for entry in manifest.get('consumed', []):
            for first, last in entry['lines']:
                lines.update((entry['path'], n, 0) for n in range(first, last + 1))
            lines.update((entry['path'], line, index) for line, index in entry.get('parts', ()))
        retracted.update(manifest.get('retraction_ids', []))
    return Committed(len(epochs), hashlib.sha256(epochs[-1][0]).hexdigest() if epochs else None,
                     frozenset(lines), frozenset(retracted),
                     epochs[-1][1].get('plan_sha256') if epochs else None)


def retraction_id(ops, item) -> str:
    """An opaque id of a retraction or a backfill notice (``Regained``), keyed so it says
    nothing of the customer: what a restarted stream must not commit again."""
    what = item.reason if isinstance(item, Retraction) else f'regained:{item.kind}'
    return ops.pseudonym('novation-retraction', f'{item.subject}|{what}|{item.at}')


def epoch_line(manifest: dict, parts, seconds: Optional[float] = None) -> str:
    """What a committed epoch holds, in one line for the operator (no value): changes
    delivered, dead letters, retractions, the rate over the ``seconds`` since the last epoch's
    line, and the lag from the latest commit it holds."""
    delivered = sum(t['rows_written'] for t in manifest['tables'].values())
    dead = sum(sum(t['dead_letters'].values()) for t in manifest['tables'].values())
    times = [p.latest for p in parts if p.latest is not None]
    lag = (f', lag {time.time() - max(times) / 10**6:.1f} s' if times else '')
    if seconds:
        events = sum(sum(n.values()) if isinstance(n, dict) else n
                     for counts in manifest.get('outcomes', {}).values()
                     for outcome, n in counts.items() if outcome != 'not_a_change')
        lag = f', {events / seconds:,.0f} events/s' + lag
    skipped = sum(c.get('repeat', 0) + c.get('superseded', 0)
                  for c in manifest.get('outcomes', {}).values())
    held = '; '.join(f'{table}: {", ".join(columns)}' for table, columns in
                     manifest.get('held_columns', {}).items())
    backfill = sum(manifest.get('backfill', {}).values())
    return (f'epoch {manifest["epoch"]} committed: {count(delivered, "change")} delivered, '
            f'{count(dead, "dead letter")}, {count(manifest["retractions"], "retraction")}'
            + (f', {count(backfill, "customer")} to backfill' if backfill else '')
            + (f', {skipped:,} repeated or superseded (not delivered)' if skipped else '')
            + lag + (f'; WARNING: column(s) no schema classifies held back ({held}): draft '
                     f'their fields with novation classify FEED --format cdc --table T' if held
                     else ''))


def count(n: int, what: str) -> str:
    """``1 change``, ``2 changes``: counts for people."""
    return f'{n:,} {what}' + ('' if n == 1 else 's')


def _outcome_counts(outcomes) -> dict:
    """{path: {outcome: count}} (``not_a_change`` by kind) from (path, outcome, count)."""
    out = {}
    for path, outcome, n in outcomes:
        counts = out.setdefault(path, {})
        if outcome.startswith('not_a_change:'):
            kinds = counts.setdefault('not_a_change', {})
            kind = outcome.split(':', 1)[1]
            kinds[kind] = kinds.get(kind, 0) + n
        else:
            counts[outcome] = counts.get(outcome, 0) + n
    return {path: dict(sorted(c.items())) for path, c in sorted(out.items())}


def conservation(manifests) -> dict:
    """Every feed file the epochs read whole, with the events it gave and what became of
    them, summed over ``manifests``: ``holds`` when each file's outcomes add up to its events
    (a file read again after a restart counts once: its events were committed once)."""
    read, outcomes = {}, {}
    for m in manifests:
        for f in m.get('files_read', ()):
            read[f['path']] = f
        for path, counts in m.get('outcomes', {}).items():
            total = outcomes.setdefault(path, {})
            for outcome, n in counts.items():
                if isinstance(n, dict):
                    kinds = total.setdefault(outcome, {})
                    for kind, k in n.items():
                        kinds[kind] = kinds.get(kind, 0) + k
                else:
                    total[outcome] = total.get(outcome, 0) + n
    files = []
    for path in sorted(set(read) | set(outcomes)):
        counts = outcomes.get(path, {})
        accounted = sum(sum(n.values()) if isinstance(n, dict) else n for n in counts.values())
        events = read[path]['events'] if path in read else None
        files.append({'path': path, 'lines': read[path]['lines'] if path in read else None,
                      'events': events, 'accounted': accounted, 'outcomes': counts,
                      'holds': events == accounted})
    return {'holds': all(f['holds'] for f in files), 'files': files}
