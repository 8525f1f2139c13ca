"""What a stream delivers, epoch by epoch: a table's decided changes with the same conform,
sensitive-field suppression and masking as the batch (its pure functions, not copies), plus
the change's op, source position and commit time, so the acquirer can apply upserts in order;
dead letters and retractions; and each epoch's manifest, chained to the one before.

A create, update or snapshot read delivers the row after the change, masked as the batch masks
it. A delete delivers a tombstone: every field null but the primary key, masked (its
pseudonym). A refused change becomes a dead letter with its reason; an erased customer's row
is not kept in it. ``deliver_changes`` and ``commit_epoch`` are plain functions;
``CommitEpochs`` runs them on a stream.
"""

import collections
import dataclasses
import datetime
import hashlib
import json
import itertools
import logging
import operator
import secrets
import time
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
import pyarrow as pa
import numpy as np
import pyarrow.compute as pc

from transforms.commit.audit import append_event
from transforms.common import metrics
from transforms.common.batches import ROW, SOURCE
from transforms.conform.casting import cast_column
from transforms.conform.conform import conform_batch
from transforms.consent.gate import suppress_sensitive
from transforms.mask.mask import mask_batch
from transforms.mask.methods import MaskContext, string_form
from transforms.read.tables import ColumnPlan, shown_columns, text_array
from transforms.keys.crypto import StateCipher, file_identity
from transforms.write.deadletter import EncryptedJsonLines, encode, seal
from transforms.common.files import join, write_json, write_whole
from transforms.keys.keyring import cached_keyring
from transforms.commit.manifest import MANIFEST_FILE, file_facts
from transforms.common.errors import InputError, NovationError
from transforms.keys.seal import SEAL_ROLE, read_sealed, write_sealed_json
from transforms.common.reasons import DeadLetter
from transforms.commit.report import (REPORT_HTML, REPORT_JSON, build_epoch_report,
                               build_stream_report, render_epoch_html, render_stream_html)
from transforms.stream.feeds import EndOfFeeds, FileRead, ReleasedUpTo
from transforms.stream.consent import Batch, Counted, Decided, Regained, Retraction
from transforms.write.tables import ParquetFiles

__all__ = ['CHANGE_COLUMNS', 'CUTOVER_FILE', 'ChangeRows', 'CommitEpochs', 'Committed',
           'EPOCHS_DIR', 'EPOCH_MANIFEST', 'Prepared', 'RetractionFiles', 'Trail', 'change_batch',
           'checked_epochs', 'commit_epoch', 'committed_so_far', 'conservation', 'count',
           'deliver_changes', 'epoch_dir', 'manifest_sha256', 'retraction_id',
           'write_cutover', 'write_epoch_report', 'write_stream_report']

# Delivered beside each row: its op (c, u, d, r), the source position, the commit time, and
# for a partial row (a tool that sends only some columns) the fields it carries.
CHANGE_COLUMNS = (pa.field('__op', pa.string()), pa.field('__position', pa.string()),
                  pa.field('__committed_at', pa.timestamp('us', tz='UTC')),
                  pa.field('__columns', pa.string()))


class ChangeRows(NamedTuple):
    """A table's changes as a text batch: the batch in schema order with provenance, the
    events kept (in its order), the dead letters, the fields each partial row lacks
    (field -> boolean mask, for conform), ``__columns`` per row (None: the whole row), and the
    columns held back because no schema names them (column -> rows)."""
    batch: pa.RecordBatch
    kept: list
    dead: list
    absent: dict
    present: list
    held: dict


def change_batch(table, events) -> ChangeRows:
    """The rows of ``ChangeEvent``s of ``table``, grouped by their columns (most rows of a feed
    share them). A column that is no field or alias is held back, counted, and the rest of
    the row goes on (fail closed for the column, not the row); a field the row lacks is
    absent, not null: the row is partial, and says which fields it carries."""
    plan = ColumnPlan(table)
    layouts = {}  # a row's columns -> (fields, held columns, problem, its events)
    dead = []
    for event in events:
        row = event.change.row
        columns = tuple(row)
        group = layouts.get(columns)
        if group is None:
            group = layouts[columns] = (*_layout(plan, columns), [])
        fields, _, problem, grouped = group
        if problem:
            dead.append(DeadLetter(
                reason='malformed', stage='read', table=table.name, source_file=event.source,
                row=event.line, problem=problem, index=event.index,
                subject=_subject({f: row[c] for f, c in fields.items()}, table),
                raw={k: v for k, v in row.items() if plan.knows(k)}))
        else:
            grouped.append(event)
    names = list(table.schema.field_names)
    parts, kept, present, absent_rows, held = [], [], [], [], collections.Counter()
    for fields, unknown, problem, grouped in layouts.values():
        if problem or not grouped:
            continue
        rows = [e.change.row for e in grouped]
        parts.append([text_array(list(map(operator.itemgetter(fields[name]), rows)))
                      if name in fields else
                      pa.nulls(len(rows), pa.string()) for name in names])
        kept += grouped
        lacking = [n for n in names if n not in fields]
        whole = not lacking or all(e.change.op == 'd' for e in grouped)
        present += [None if whole else ','.join(n for n in names if n in fields)] * len(rows)
        absent_rows.append((set() if whole else set(lacking), len(rows)))
        for column in shown_columns(unknown):  # a name that looks like a value is not shown
            held[column] += len(rows)
    columns = [pa.concat_arrays([p[i] for p in parts]) if parts else pa.array([], pa.string())
               for i in range(len(names))]
    sources = pa.array([e.source for e in kept], pa.string()).dictionary_encode()
    # ROW numbers the kept events (a Canal line holds several): conform's dead letters name
    # them by it, and deliver_changes turns it back into the line and the event's index
    numbers = pa.array(range(len(kept)), pa.int64())
    batch = pa.RecordBatch.from_arrays(columns + [sources, numbers], names=names + [SOURCE, ROW])
    absent = {}
    for name in names:
        if any(name in lacking for lacking, _ in absent_rows):
            absent[name] = np.concatenate([np.full(n, name in lacking) for lacking, n in
                                           absent_rows])
    return ChangeRows(batch, kept, dead, absent, present, dict(held))


def _layout(plan, columns) -> Tuple[Dict[str, str], list, Optional[str]]:
    """({field: the column that gives it}, the columns no field names, the problem with these
    columns or None)."""
    fields, twice = {}, []
    for column in columns:
        if plan.knows(column):
            field = plan.field(column)
            (twice if field in fields else []).append(field)
            fields[field] = column
    unknown = sorted(c for c in columns if not plan.knows(c))
    problem = f'two columns give field(s) {", ".join(twice)}' if twice else None
    return fields, unknown, problem


def _subject(mapped, table):
    value = mapped.get(table.subject_key)
    return None if value is None else str(value)


def deliver_changes(table, decided: Sequence, keyed_ops,
                    problems: Dict[str, str]) -> Tuple[pa.RecordBatch, list, dict]:
    """(delivered batch: the masked fields and CHANGE_COLUMNS, [DeadLetter], held columns)
    for a table's ``stream_consent.Decided`` changes, in their order (the key order's: each
    row's changes in its log's order). ``problems``: the text of each consent refusal
    (``consent_rules.refusal_problems``). A delete is delivered whatever the consent:
    deleting needs none."""
    dead, upserts, deletes = [], [], []
    plan = ColumnPlan(table)
    for d in decided:
        event = d.event
        if d.reason is not None and event.change.op != 'd':
            # the raw row by field name, as the batch keeps it (restricted fields are then
            # left out when it is sealed, whatever the export called them)
            raw = {plan.field(k): v for k, v in event.change.row.items() if plan.knows(k)}
            dead.append(DeadLetter(
                reason=d.reason, stage='consent', table=table.name, source_file=event.source,
                row=event.line, field=table.subject_key, problem=problems[d.reason],
                subject=d.subject, raw=None if d.reason == 'erasure_requested' else raw,
                index=event.index, change=replayable(event)))
        elif event.change.op in ('u', 'd') and table.schema.primary_key is None:
            # which row an update or delete changes, only a primary key can say
            dead.append(DeadLetter(
                reason='no_primary_key', stage='conform', table=table.name,
                source_file=event.source, row=event.line, index=event.index,
                problem=f'{"an update" if event.change.op == "u" else "a delete"} of a table '
                        f'whose schema declares no primary_key', subject=d.subject,
                raw={plan.field(k): v for k, v in event.change.row.items()
                     if plan.knows(k)}))
        elif event.change.op == 'd':
            deletes.append(d)
        else:
            upserts.append(d)
    parts, held = [], {}
    if upserts:
        rows = change_batch(table, [d.event for d in upserts])
        dead += rows.dead
        held = rows.held
        typed, refused = conform_batch(rows.batch, table, absent=rows.absent)
        dead += [dataclasses.replace(r, row=rows.kept[r.row].line, index=rows.kept[r.row].index)
                 for r in refused]
        by_event = {id(d.event): d for d in upserts}
        numbers = typed.column(ROW).to_pylist()
        kept = [by_event[id(rows.kept[n])] for n in numbers]
        typed, _ = suppress_sensitive(typed, table, pa.array([d.sensitive_ok for d in kept]))
        parts.append((mask_batch(typed, table, keyed_ops), kept,
                      [rows.present[n] for n in numbers]))
    if deletes:
        tombstones, kept, refused = _tombstones(table, deletes, keyed_ops)
        dead += refused
        parts.append((tombstones, kept, [None] * len(kept)))
    schema = pa.schema(list(table.delivered_schema) + list(CHANGE_COLUMNS))
    delivered = [_with_change_columns(batch, kept, present) for batch, kept, present in parts
                 if kept]
    if not delivered:
        return pa.RecordBatch.from_pylist([], schema=schema), dead, held
    # in the changes' own order (the key order's), upserts and deletes together
    rank = {id(d): i for i, d in enumerate(decided)}
    orders = [rank[id(d)] for _, kept, _ in parts if kept for d in kept]
    order = sorted(range(len(orders)), key=orders.__getitem__)
    combined = pa.Table.from_batches(delivered, schema=schema).combine_chunks()
    return combined.take(pa.array(order, pa.int64())).to_batches()[0], dead, held


def replayable(event) -> dict:
    """What a dead letter keeps of a refused change so that a replay can deliver it: no
    value of the row (the raw row is kept beside it)."""
    c = event.change
    return {'op': c.op, 'committed_at': c.committed_at, 'source': c.source,
            'position': c.position_text, 'index': event.index}


def masked_keys(table, values, subjects, keyed_ops) -> list:
    """Primary key ``values`` (text) as the acquirer receives them: cast to the key's type
    and masked by its rule, with each row's subject; None where a value is missing or not of
    its type."""
    spec = table.schema.field(table.schema.primary_key)
    cast = cast_column(text_array(values), spec, zone=table.timezone,
                       null_values=table.null_values)
    good = pc.is_valid(cast.values)
    ctx = MaskContext(keyed_ops=keyed_ops, subjects=string_form(
        pa.array(subjects, pa.string()).filter(good)))
    masked = iter(table.rule(spec.name).operator.apply(cast.values.filter(good),
                                                       ctx).to_pylist())
    return [next(masked) if ok else None for ok in good.to_pylist()]


def _with_change_columns(masked: pa.RecordBatch, kept, present) -> pa.RecordBatch:
    changes = [d.event.change for d in kept]
    extra = [pa.array([c.op for c in changes], pa.string()),
             pa.array([c.position_text for c in changes], pa.string()),
             pa.array([c.committed_at for c in changes], pa.timestamp('us', tz='UTC')),
             pa.array(present, pa.string())]
    keep = [i for i, name in enumerate(masked.schema.names) if name not in (SOURCE, ROW)]
    fields = [masked.schema.field(i) for i in keep] + list(CHANGE_COLUMNS)
    return pa.RecordBatch.from_arrays([masked.column(i) for i in keep] + extra,
                                      schema=pa.schema(fields))


def _tombstones(table, deletes, keyed_ops):
    """(deleted rows: the primary key masked by its own rule, every other field null;
    [DeadLetter] for deletes whose key is missing or not of its type)."""
    key = table.schema.primary_key
    spec = table.schema.field(key)
    cast = cast_column(text_array([_key_value(d.event.change.row, spec) for d in deletes]),
                       spec, zone=table.timezone, null_values=table.null_values)
    bad = pc.is_null(cast.values).to_numpy(zero_copy_only=False)
    dead = [DeadLetter(reason='missing_required' if cast.bad is None or not cast.bad[i].as_py()
                       else 'malformed', stage='conform', table=table.name,
                       source_file=d.event.source, row=d.event.line, field=key,
                       problem=f'a delete needs its {key}', subject=d.subject,
                       raw=d.event.change.row, index=d.event.index)
            for i, d in enumerate(deletes) if bad[i]]
    kept = [d for i, d in enumerate(deletes) if not bad[i]]
    plan = ColumnPlan(table)
    dead = [dataclasses.replace(letter, raw={plan.field(k): v for k, v in letter.raw.items()
                                             if plan.knows(k)}) for letter in dead]
    ctx = MaskContext(keyed_ops=keyed_ops, subjects=string_form(
        pa.array([d.subject for d in kept], pa.string())))
    delivered = table.delivered_schema
    values = cast.values.filter(pa.array(~bad))
    columns = [table.rule(key).operator.apply(values, ctx) if r.field.name == key
               else pa.nulls(len(kept), delivered.field(r.field.name).type)
               for r in table.rules if r.delivered]
    return pa.RecordBatch.from_arrays(columns, schema=delivered), kept, dead


def _key_value(row, spec):
    return next((row[c] for c in (spec.name,) + spec.aliases if row.get(c) is not None), None)


# ---------------------------------------------------------------------------------------------
# Committing an epoch

_PROGRESS = logging.getLogger('novation.progress')
EPOCHS_DIR = 'epochs'
EPOCH_MANIFEST = 'manifest.json'
EPOCH_FORMAT = 'novation-epoch/1'
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
        state = writer.open(FileSystems.create(temp), file_identity(run_id, relative))
        for value in values:
            writer.write(state, value)
        writer.close(state)
        if not FileSystems.exists(join(directory, kind, name)):
            FileSystems.mkdirs(join(directory, kind, name))
        FileSystems.rename([temp], [final])
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
    with FileSystems.open(join(epoch_dir(stream_dir, number), EPOCH_MANIFEST)) as f:
        return hashlib.sha256(f.read()).hexdigest()


class RetractionFiles(ParquetFiles):
    """Retraction records as encrypted Parquet: subject pseudonym, tables, reason, time."""

    def __init__(self, keys_path):  # pylint: disable=super-init-not-called
        self._schema = pa.schema(RETRACTION_FIELDS)
        self._column_keys = {role: list(cols) for role, cols in RETRACTION_KEYS.items()}
        self._roles = sorted({'data.footer', *self._column_keys})
        self._keys_path = keys_path


# ---------------------------------------------------------------------------------------------
# Epochs on a stream


class CommitEpochs(beam.PTransform):
    """Batches of decided changes, retractions and dead letters of a stream -> committed
    epochs.

    Two steps. ``Deliver`` runs where the batches are decided (in parallel, on a runner that
    has workers): it conforms, suppresses and masks each batch's changes at once, into
    ``Prepared`` parts of an epoch that carry their rows as Arrow IPC bytes. ``Commit`` (one
    key: epochs form one chain) buffers the parts and writes the epochs.

    An epoch covers a window of ``seconds`` of commit time (a late item, whose window is
    committed already, joins the first open one; an item without a time, the window of the
    clock), cut into epochs of at most ``max_rows`` items. A window is committed once a
    ``ReleasedUpTo`` mark passes its end (the source has released everything committed before
    it), and every open window at ``EndOfFeeds``; with ``watermarks`` (a runner that honours
    them: Dataflow), once the watermark passes its end plus ``lateness`` seconds, and every
    open window when the watermark reaches the end of time (a drained job). Then the cut-over
    manifest is written (``write_cutover``: ``snapshot`` is the run directory the stream
    continues, or None). Outputs each epoch's manifest.

    ``resume``: what earlier runs of the stream committed (``committed_so_far``): the chain
    goes on from their last epoch, and the feed lines and retractions they hold are not
    committed again, so a stream killed and started again delivers each change once.
    """

    def __init__(self, *, config, run_id: str, stream_dir: str, seconds: float = 5.0,
                 max_rows: int = 100_000, resume=None, snapshot: Optional[str] = None,
                 watermarks: bool = False, lateness: float = 0.0, trail: Trail = Trail()):
        super().__init__()
        resume = resume or Committed(0, None, frozenset(), frozenset())
        length = int(seconds * 10**6)
        self._deliver = _DeliverFn(config, length, max_rows, resume)
        fn = _WatermarkEpochFn if watermarks else _EpochFn
        self._commit = fn(config, run_id, stream_dir, length, max_rows, resume, snapshot,
                          int(lateness * 10**6), trail)

    def expand(self, items):
        return (items
                | 'Deliver' >> beam.ParDo(self._deliver)
                | 'OneChain' >> beam.Map(lambda item: ('epochs', item)).with_output_types(
                    beam.typehints.Tuple[str, beam.typehints.Any])
                | 'Commit' >> beam.ParDo(self._commit))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Part of an epoch, delivered: per table its rows (masked, as Arrow IPC stream bytes),
    its dead letters and retractions (with their ids), the feed events it consumed, the lines
    of its changes (for the manifest's sources), the outcome of each feed event it holds and
    the feed files read whole (the stream's conservation), the columns held back, its latest
    commit time and how many items it holds."""
    window: int
    tables: Tuple[Tuple[str, bytes], ...]
    dead: tuple
    retractions: tuple
    retraction_ids: tuple
    consumed: tuple  # per feed file, the events as line ranges and parts (as _consumed)
    changes: tuple   # per feed file, its first and last line and count (as _sources)
    latest: Optional[int]
    items: int
    outcomes: tuple = ()  # (path, outcome, count)
    files: tuple = ()     # FileRead
    held: tuple = ()      # (table, column, rows)
    regained: tuple = ()  # Regained: customers whose rows need a backfill


class _DeliverFn(beam.DoFn):
    def __init__(self, config, length, max_rows, resume):
        self._config = config
        self._length = length
        self._max_rows = max_rows
        self._resume = resume
        self._ops = None
        self._problems = None

    def setup(self):
        from transforms.consent.rules import refusal_problems
        from transforms.keys.crypto import cached_keyed_ops
        self._ops = cached_keyed_ops(self._config.output.keys)
        self._problems = refusal_problems(self._config.transfer.legal_bases,
                                          self._config.transfer.destination_region)

    def process(self, item):
        if not isinstance(item, Batch):
            yield item  # marks and the end of the feeds, for Commit
            return
        clock = int(time.time() * 10**6)
        by_window = {}
        for i in item.items:
            if self._done_before(i):
                continue
            at = _item_time(i)
            by_window.setdefault((clock if at is None else at) // self._length, []).append(i)
        for window in sorted(by_window):
            items = by_window[window]
            for start in range(0, len(items), self._max_rows):
                yield self._prepare(window, items[start:start + self._max_rows])

    def _done_before(self, item) -> bool:
        """Whether an earlier run of the stream committed ``item`` already."""
        if isinstance(item, (Retraction, Regained)):
            return retraction_id(self._ops, item) in self._resume.retractions
        place = _place(item)
        return place is not None and place in self._resume.lines

    def _prepare(self, window, items) -> Prepared:
        return prepare_items(self._config, self._ops, self._problems, window, items)


def prepare_items(config, ops, problems, window, items) -> Prepared:
    """Part of an epoch from decided ``items`` (Decided, DeadLetter, Retraction, Counted,
    FileRead) of one ``window``: each table's changes delivered (``deliver_changes``), and
    what its manifest counts."""
    tables = {t.name: t for t in config.tables}
    decided = [i for i in items if isinstance(i, Decided)]
    dead = [i for i in items if isinstance(i, DeadLetter)]
    delivered, held = [], []
    for name in sorted({d.event.change.table for d in decided}):
        batch, letters, columns = deliver_changes(
            tables[name], [d for d in decided if d.event.change.table == name],
            ops, problems)
        dead += letters
        delivered.append((name, _ipc_bytes(batch)))
        held += [(name, column, n) for column, n in sorted(columns.items())]
    retractions = tuple(i for i in items if isinstance(i, Retraction))
    regained = tuple(i for i in items if isinstance(i, Regained))
    times = [t for t in map(_item_time, items) if t is not None]
    return Prepared(
        window=window, tables=tuple(delivered), dead=tuple(dead), retractions=retractions,
        retraction_ids=tuple(retraction_id(ops, r) for r in retractions + regained),
        regained=regained,
        consumed=tuple(_consumed(p for p in map(_place, items)
                                 if p is not None and p[1] is not None)),
        changes=tuple(_sources((d.event.source, d.event.line) for d in decided)),
        latest=max(times) if times else None, items=len(items),
        outcomes=tuple(_outcomes(items, dead)),
        files=tuple(i for i in items if isinstance(i, FileRead)), held=tuple(held))


OUTCOMES = ('delivered', 'dead_letter', 'repeat', 'superseded', 'consent_event')


def _outcomes(items, dead) -> list:
    """(path, outcome, count) for the feed events of ``items``: every event read ends as one
    of OUTCOMES or ``not_a_change:<kind>``. Only events read from a feed count (a key
    change's old key, index < 0, is part of its line's event)."""
    refused = {(d.source_file, d.row, d.index) for d in dead}
    counts = collections.Counter()
    for item in items:
        if isinstance(item, Counted):
            if item.index >= 0 and item.line is not None:
                counts[(item.source, item.outcome)] += 1
        elif isinstance(item, Decided):
            e = item.event
            if e.index >= 0 and e.line is not None:
                counts[(e.source, 'dead_letter' if (e.source, e.line, e.index) in refused
                        else 'delivered')] += 1
        elif isinstance(item, DeadLetter) and item.index >= 0 and item.row is not None:
            counts[(item.source_file, 'dead_letter')] += 1
    return [(path, outcome, n) for (path, outcome), n in sorted(counts.items())]


def _ipc_bytes(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.RecordBatch:
    table = pa.ipc.open_stream(data).read_all().combine_chunks()
    batches = table.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


# The epochs' chain: the next epoch's number, the previous manifest's sha256, the first window
# still open, and what the buffer holds (its first window, its items).
_Chain = collections.namedtuple('_Chain', 'number previous open_window first_held held')


class _EpochFn(beam.DoFn):
    """Commits on the source's marks (``ReleasedUpTo``, ``EndOfFeeds``): the local runner."""
    BUFFER = BagStateSpec('buffer', BytesCoder())  # per batch: a Prepared, encrypted
    CHAIN = ReadModifyWriteStateSpec('chain', PickleCoder())

    def __init__(self, config, run_id, stream_dir, length, max_rows, resume, snapshot,
                 lateness, trail):
        self._config = config
        self._trail = trail
        self._run_id = run_id
        self._stream_dir = stream_dir
        self._length = length
        self._max_rows = max_rows
        self._resume = resume
        self._snapshot = snapshot
        self._lateness = lateness
        self._ops = None
        # the parts held hold dead letters' raw rows and customer ids: encrypted in state
        self._cipher = StateCipher(config.output.keys, run_id)

    def setup(self):
        from transforms.keys.crypto import cached_keyed_ops
        self._ops = cached_keyed_ops(self._config.output.keys)
        self._last_line = time.time()  # when the last epoch's line was logged: its rate

    def process(self, element, buffer=beam.DoFn.StateParam(BUFFER),
                chain=beam.DoFn.StateParam(CHAIN)):
        _, item = element
        state = self._held(item, buffer, chain.read())
        ending = isinstance(item, EndOfFeeds)
        up_to = item.at if isinstance(item, (ReleasedUpTo, EndOfFeeds)) else None
        yield from self._commit_if_due(buffer, chain, state, up_to, ending)

    def _held(self, item, buffer, state) -> _Chain:
        """The chain once ``item`` (a Prepared part) is buffered."""
        state = state or _Chain(self._resume.last_epoch + 1, self._resume.last_sha256, 0,
                                None, 0)
        if isinstance(item, Prepared):
            placed = dataclasses.replace(item, window=max(item.window, state.open_window))
            buffer.add(self._cipher.dumps(placed, 'epochs'))
            state = state._replace(
                first_held=placed.window if state.first_held is None else min(
                    placed.window, state.first_held),
                held=state.held + placed.items)
        return state

    def _commit_if_due(self, buffer, chain, state, up_to, ending):
        if state.first_held is not None and (
                ending or state.held >= self._max_rows or
                (up_to is not None and (state.first_held + 1) * self._length <= up_to)):
            state, manifests = self._commit_due(buffer, state, up_to, ending)
            yield from manifests
        chain.write(state)
        if ending:
            write_cutover(self._stream_dir, self._run_id, self._snapshot,
                          self._config.output.keys, self._config.report_lang, self._trail)


    def _commit_due(self, buffer, state, up_to, ending):
        """Commit the windows that are due (and epochs of ``max_rows`` items of the first
        window still open, if the buffer holds that many); keep the rest buffered."""
        held = sorted((self._cipher.loads(chunk, 'epochs') for chunk in buffer.read()),
                      key=lambda p: p.window)  # stable: arrival order within a window
        due = [p for p in held if ending or (up_to is not None and
                                            (p.window + 1) * self._length <= up_to)]
        rest = held[len(due):]
        while rest and sum(p.items for p in rest) >= self._max_rows:
            due.append(rest.pop(0))  # a window too full to wait: commit it in parts
        number, previous, manifests = state.number, state.previous, []
        for _, group in itertools.groupby(due, key=lambda p: p.window):
            epoch, rows = [], 0
            for part in list(group) + [None]:
                if epoch and (part is None or rows + part.items > self._max_rows):
                    manifest = self._commit(number, epoch, previous)
                    for name, t in manifest['tables'].items():  # the runner's console
                        metrics.count(name, 'changes_delivered', t['rows_written'])
                        for reason, n in t['dead_letters'].items():
                            metrics.count(name, f'dead_letters/{reason}', n)
                    now = time.time()
                    _PROGRESS.info('%s', epoch_line(manifest, epoch, now - self._last_line))
                    self._last_line = now
                    number, previous = number + 1, manifest_sha256(self._stream_dir, number)
                    manifests.append(manifest)
                    epoch, rows = [], 0
                if part is not None:
                    epoch.append(part)
                    rows += part.items
        open_window = state.open_window
        if due and not (rest and rest[0].window == due[-1].window):  # the last one is whole
            open_window = max(open_window, due[-1].window + 1)
        buffer.clear()
        for part in rest:
            buffer.add(self._cipher.dumps(part, 'epochs'))
        return _Chain(number, previous, open_window, rest[0].window if rest else None,
                      sum(p.items for p in rest)), manifests

    def _commit(self, number, parts, previous) -> dict:
        return commit_parts(self._config, self._ops, stream_dir=self._stream_dir,
                            run_id=self._run_id, number=number, parts=parts,
                            previous=previous, trail=self._trail)


def commit_parts(config, ops, *, stream_dir, run_id, number, parts, previous, trail) -> dict:
    """Commit epoch ``number`` of the ``Prepared`` parts (``commit_epoch``)."""
    tables = {t.name: t for t in config.tables}
    batches = collections.defaultdict(list)
    for part in parts:
        for name, data in part.tables:
            batches[name].append(_from_ipc(data))
    delivered = {name: pa.concat_batches(b) if len(b) > 1 else b[0]
                 for name, b in batches.items()}
    domain = config.tables[0].subject_domain
    return commit_epoch(
        stream_dir=stream_dir, run_id=run_id, number=number, tables=tables,
        delivered=delivered, dead=[d for p in parts for d in p.dead],
        retractions=[r for p in parts for r in p.retractions],
        sources=_merged_sources(c for p in parts for c in p.changes),
        previous_sha256=previous,
        keys_path=config.output.keys,
        pseudonymize=lambda subject: ops.pseudonym(domain, subject),
        consumed=_merged_consumed(c for p in parts for c in p.consumed),
        outcomes=[o for p in parts for o in p.outcomes],
        files=[f for p in parts for f in p.files],
        held=_merged_held(h for p in parts for h in p.held),
        lang=config.report_lang,
        retraction_ids=sorted(i for p in parts for i in p.retraction_ids),
        trail=trail,
        latest=max((p.latest for p in parts if p.latest is not None), default=None),
        regained=[r for p in parts for r in p.regained])


class _WatermarkEpochFn(_EpochFn):
    """Commits when the watermark passes a window's end plus the lateness, and everything
    when it reaches the end of time: a runner that honours watermarks (Dataflow), with
    sources joined (Pub/Sub), where no source's marks speak for all."""
    WINDOW_DUE = TimerSpec('window_due', TimeDomain.WATERMARK)
    END = TimerSpec('end', TimeDomain.WATERMARK)

    def process(self, element, buffer=beam.DoFn.StateParam(_EpochFn.BUFFER),
                chain=beam.DoFn.StateParam(_EpochFn.CHAIN),
                window_due=beam.DoFn.TimerParam(WINDOW_DUE), end=beam.DoFn.TimerParam(END)):
        _, item = element
        first = chain.read()
        if first is None:
            end.set(GlobalWindow().max_timestamp())  # drained: commit what is open, cut over
        state = self._held(item, buffer, first)
        if state.first_held is not None:
            window_due.set(self._due(state.first_held))
        yield from self._commit_if_due(buffer, chain, state, None, False)

    @on_timer(WINDOW_DUE)
    def on_window_due(self, fire=beam.DoFn.TimestampParam,
                      buffer=beam.DoFn.StateParam(_EpochFn.BUFFER),
                      chain=beam.DoFn.StateParam(_EpochFn.CHAIN),
                      window_due=beam.DoFn.TimerParam(WINDOW_DUE)):
        state = self._held(None, buffer, chain.read())
        yield from self._commit_if_due(buffer, chain, state, fire.micros - self._lateness,
                                       False)
        state = chain.read()
        if state.first_held is not None:
            window_due.set(self._due(state.first_held))

    @on_timer(END)
    def on_end(self, buffer=beam.DoFn.StateParam(_EpochFn.BUFFER),
               chain=beam.DoFn.StateParam(_EpochFn.CHAIN)):
        state = self._held(None, buffer, chain.read())
        yield from self._commit_if_due(buffer, chain, state, None, True)

    def _due(self, window) -> Timestamp:
        return Timestamp(micros=(window + 1) * self._length + self._lateness)


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
    numbers = sorted(int(m.path.rstrip('/').split('/')[-2]) for m in FileSystems.match(
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
        manifest = json.loads(text)
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


def _place(item):
    """(path, line, index) of the feed event an item is the outcome of, or None."""
    if isinstance(item, Decided):
        return item.event.source, item.event.line, item.event.index
    if isinstance(item, DeadLetter):
        return item.source_file, item.row, item.index
    if isinstance(item, Counted):
        return item.source, item.line, item.index
    return None


def _consumed(places) -> list:
    """The feed events (``(path, line, index)``) an epoch consumed, per file: the lines of the
    first events as ranges [first, last], the others (a Canal message's further rows, a key
    change's old key) as [line, index] parts."""
    lines, parts = collections.defaultdict(set), collections.defaultdict(set)
    for path, line, index in places:
        (lines[path].add(line) if index == 0 else parts[path].add((line, index)))
    out = []
    for path in sorted(set(lines) | set(parts)):
        ranges = []
        for n in sorted(lines[path]):
            if ranges and n == ranges[-1][1] + 1:
                ranges[-1][1] = n
            else:
                ranges.append([n, n])
        entry = {'path': path, 'lines': ranges}
        if parts[path]:
            entry['parts'] = [list(p) for p in sorted(parts[path])]
        out.append(entry)
    return out


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


def _item_time(item) -> int:
    if isinstance(item, Decided):
        return item.event.change.committed_at
    if isinstance(item, (Retraction, Regained, Counted, FileRead)):
        return item.at
    return None  # a dead letter joins the open epoch


def _sources(places) -> list:
    """The feed files and lines (``(path, line)``) an epoch's changes came from (a Pub/Sub
    subscription's messages have no lines: their first and last are null)."""
    lines = collections.defaultdict(list)
    for path, line in places:
        lines[path].append(line)
    out = []
    for path, numbers in sorted(lines.items()):
        known = [n for n in numbers if n is not None]
        out.append({'path': path, 'first_line': min(known, default=None),
                    'last_line': max(known, default=None), 'changes': len(numbers)})
    return out


def _merged_consumed(entries) -> list:
    """Parts' ``_consumed`` entries as one: per file, overlapping or adjacent ranges joined."""
    ranges, parts = collections.defaultdict(list), collections.defaultdict(set)
    for entry in entries:
        ranges[entry['path']] += [list(r) for r in entry['lines']]
        parts[entry['path']].update(tuple(p) for p in entry.get('parts', ()))
    out = []
    for path in sorted(set(ranges) | set(parts)):
        spans = ranges[path]
        joined = []
        for first, last in sorted(spans):
            if joined and first <= joined[-1][1] + 1:
                joined[-1][1] = max(joined[-1][1], last)
            else:
                joined.append([first, last])
        out.append({'path': path, 'lines': joined})
        if parts[path]:
            out[-1]['parts'] = [list(p) for p in sorted(parts[path])]
    return out


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


def _merged_held(entries) -> list:
    counts = collections.Counter()
    for table, column, n in entries:
        counts[(table, column)] += n
    return [(table, column, n) for (table, column), n in sorted(counts.items())]


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


def _merged_sources(entries) -> list:
    """Parts' ``_sources`` entries as one: per file, the first and last line and the count."""
    merged = {}
    for e in entries:
        m = merged.setdefault(e['path'], {'path': e['path'], 'first_line': None,
                                          'last_line': None, 'changes': 0})
        m['changes'] += e['changes']
        for key, pick in (('first_line', min), ('last_line', max)):
            known = [v for v in (m[key], e[key]) if v is not None]
            m[key] = pick(known) if known else None
    return [merged[path] for path in sorted(merged)]
