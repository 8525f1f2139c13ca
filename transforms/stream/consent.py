"""Consent in order, per customer, on a stream: a change is decided by every consent event up to
its commit time, so a withdrawal is never overtaken by a change committed after it.

``ConsentInOrder`` takes ``Routed`` batches of ``(subject, ChangeEvent | ConsentEvent)`` pairs,
data and consent events together, each batch timestamped no later than its first event. It
keys them by shard (a hash of the subject; each shard's state holds its customers apart: the
consent events seen and the tables delivered) and outputs one ``Batch`` of
decisions and retractions per batch. Batches, not single events, because the Python SDK pays
about half a millisecond for every state access (it weighs what it caches): per event that
caps a stream near a thousand changes a second, per batch of a shard it costs nothing.

A change waits until the input watermark passes its commit time, that is until no consent
event committed before it can still arrive on time; it is then decided as of its commit time
(``consent_events.decision_at``) and delivered or refused. When the watermark passes
a withdrawal or an erasure, a customer whose rows were delivered (in the snapshot or the
stream) gets a retraction: the acquirer must delete them (PIPL Art. 47); a customer whose rows
the acquirer lacks (refused at the snapshot, retracted, or moved without their sensitive fields)
and who consents again is ``Regained``: their rows need a backfill. A consent event that
arrives after the watermark passed its time (late) is still applied: changes decided since are
not taken back one by one, but the customer is retracted as a whole. Repeats and changes older
than one already decided for their row are found after this step (``transforms.stream.order``).

A shard's state is an append-only log (a bag of chunks, each the records one batch added) that
is compacted when it grows long, and each worker keeps its decoded view between batches,
checked against the log's last chunk: so a batch costs what it adds, not the size of the shard.
The state holds customer ids, consent events and raw rows, so each chunk and the rows waiting
for the watermark are encrypted (``transforms.keys.crypto.StateCipher``), as the batch encrypts what
it parks in scratch.
"""

import dataclasses
import hashlib
import secrets
import zlib
from typing import NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import BytesCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from transforms.stream.cdc_values import plain_row
from transforms.stream.changes import Change, ChangeProblem, NotAChange
from transforms.consent.events import ConsentEvent, decision_at, regained, retraction_reason
from transforms.keys.crypto import StateCipher
from transforms.stream.feeds import SEEDS

__all__ = ['Batch', 'ChangeEvent', 'ConsentInOrder', 'Counted', 'Decided', 'Regained',
           'Retraction', 'Routed',
           'route', 'shard_of']

SHARDS = 16           # keys of the consent state; the most workers that can decide at once
COMPACT_AFTER = 64    # chunks in a shard's log before it is rewritten as one


class ChangeEvent(NamedTuple):
    """A change of a customer's row, with where it came from (for dead letters and the
    count of each feed line's outcome) and its row's key (primary key as text); a named tuple,
    as ``transforms.stream.changes.Change``."""
    change: Change
    source: str = ''
    line: Optional[int] = None
    index: int = 0
    key: Optional[str] = None


class Counted(NamedTuple):
    """A feed event's outcome when it is neither delivered nor a dead letter: ``repeat``,
    ``superseded``, ``consent_event`` or ``not_a_change:<kind>``."""
    source: str
    line: Optional[int]
    index: int
    outcome: str
    at: Optional[int] = None  # the event's time: the epoch it joins (None: the open one)


@dataclasses.dataclass(frozen=True)
class Decided:
    """A change and the decision at its commit time: ``reason`` None means deliver."""
    subject: str
    event: ChangeEvent
    reason: Optional[str]
    sensitive_ok: bool


@dataclasses.dataclass(frozen=True)
class Retraction:
    """The acquirer must delete the customer's rows of ``tables``: ``reason`` from ``at``."""
    subject: str
    tables: Tuple[str, ...]
    reason: str
    at: int  # microseconds, the consent event's time


@dataclasses.dataclass(frozen=True)
class Regained:
    """A customer whose rows the acquirer lacks may move again from ``at``: ``kind`` ``rows``
    (consent given after their rows were refused in the snapshot or retracted) or
    ``sensitive`` (the separate consent for sensitive data given after their rows moved
    without those fields): their current rows need a backfill (``novation backfill``)."""
    subject: str
    kind: str
    at: int  # microseconds, the consent event's time


@dataclasses.dataclass(frozen=True)
class Routed:
    """Events of customers, in commit order: ``(subject, ChangeEvent | ConsentEvent)`` pairs."""
    pairs: tuple


@dataclasses.dataclass(frozen=True)
class Batch:
    """Items that travel together: decisions, retractions or dead letters."""
    items: tuple


def shard_of(subject: str, shards: int) -> str:
    """The shard key of a customer (stable across processes and runs)."""
    return str(zlib.crc32(subject.encode('utf-8')) % shards)


class ConsentInOrder(beam.PTransform):
    """``Routed`` batches -> one ``Batch`` of ``Decided`` (deliver or refuse),
    ``Retraction`` and ``Regained`` items per batch; any other item (dead letters, the watermark's
    marks, the
    end of the feeds) passes through as it came, so the steps of a stream stay one chain: the
    local runner stops running in real time at a Flatten."""

    def __init__(self, transfer, tables, *, keys_path: str, run_id: str,
                 snapshot_at: Optional[int] = None, ordered: bool = False,
                 lateness: float = 0.0, shards: int = SHARDS):
        """``tables``: every table name (a customer delivered in the snapshot is retracted
        from all); ``snapshot_at``: the snapshot's time in microseconds (None: no snapshot);
        ``ordered``: the input comes in commit-time order (``transforms.stream.feeds`` releases it
        so), and each item is decided as it arrives instead of when the watermark passes it
        (which the local runner does not honour for timers; see transforms.stream.feeds); otherwise
        an item waits for the watermark to pass its commit time plus ``lateness`` seconds
        (a source whose watermark follows when events arrive, not when they were committed:
        Pub/Sub's publish times). What waits in state is encrypted with the dead-letter key of
        the keyring at ``keys_path``, bound to ``run_id``."""
        super().__init__()
        self._shards = shards
        self._fn = _ConsentInOrderFn(transfer.legal_bases, transfer.cross_border,
                                     tuple(tables), snapshot_at, ordered,
                                     int(lateness * 10**6), StateCipher(keys_path, run_id))

    def expand(self, items):
        return (items
                | 'ByShard' >> beam.FlatMap(_by_shard, self._shards).with_output_types(
                    beam.typehints.Tuple[str, beam.typehints.Any])  # a deterministic key
                | 'InOrder' >> beam.ParDo(self._fn))


def _by_shard(item, shards):
    if not isinstance(item, Routed):
        yield '', item  # not for this step: passes through
        return
    by_shard = {}
    for pair in item.pairs:
        by_shard.setdefault(shard_of(pair[0], shards), []).append(pair)
    for shard in sorted(by_shard):
        yield shard, tuple(by_shard[shard])


def _time(item) -> int:
    return item.change.committed_at if isinstance(item, ChangeEvent) else item.at


class _Customer:
    """What a shard's state holds of one customer: consent events evaluated (in arrival
    order) and tables delivered in the stream. ``settled``: the decision from the latest
    consent event on (with how many events it was made), so most changes are decided without
    replaying them."""
    __slots__ = ('events', 'delivered', 'settled')

    def __init__(self):
        self.events, self.delivered, self.settled = [], set(), None

    def __getstate__(self):
        return self.events, self.delivered

    def had_rows(self, snapshot: bool) -> bool:
        """Whether the seller held rows of the customer the acquirer may lack: delivered
        in the stream, or (with a snapshot) known to the snapshot's registry or erasure
        list. A new customer who consents before their first row has none."""
        return bool(self.delivered) or (snapshot and any(e.seed for e in self.events))

    def __setstate__(self, state):
        (self.events, self.delivered), self.settled = state, None


def _apply(customers, records):
    for kind, subject, value in records:
        customer = customers.get(subject)
        if customer is None:
            customer = customers[subject] = _Customer()
        if kind == 'consent':
            customer.events.append(value)
        else:  # 'delivered'
            customer.delivered.add(value)


def _records(customers):
    """The records that rebuild ``customers``."""
    out = []
    for subject, customer in customers.items():
        out.extend(('consent', subject, e) for e in customer.events)
        out.extend(('delivered', subject, t) for t in sorted(customer.delivered))
    return out


class ShardLogs:
    """Each worker's decoded view of the append-only logs of its shards' state (a bag of
    chunks: 8 bytes of token, then the records one batch added, pickled and encrypted with
    ``cipher`` under ``step`` and the shard), so that a batch costs what it adds, not the size
    of its shard. ``apply(state, records)`` folds records into a state (a dict);
    ``records(state)`` gives the records that rebuild it (compaction)."""

    def __init__(self, apply, records, cipher, step: str):
        self._apply, self._records = apply, records
        self._cipher, self._step = cipher, step
        self._views = {}  # shard -> (chunks in its log, last chunk's token, state)

    def read(self, shard, log):
        """(the log's chunks, its state), from this worker's view when it is the latest."""
        chunks = list(log.read())
        view = self._views.pop(shard, None)  # taken: a failed bundle must not keep it
        if view is not None and view[0] == len(chunks) and \
                (not chunks or chunks[-1][:8] == view[1]):
            return chunks, view[2]
        state = {}
        for chunk in chunks:
            self._apply(state, self._cipher.loads(chunk[8:], f'{self._step}/{shard}'))
        return chunks, state

    def append(self, shard, log, chunks, records, state):
        """Append ``records`` (already folded into ``state``) to the log, compacting it into
        one chunk once it has COMPACT_AFTER."""
        if len(chunks) >= COMPACT_AFTER:
            log.clear()
            chunks, records = [], self._records(state)
        if records or not chunks:
            token = secrets.token_bytes(8)
            log.add(token + self._cipher.dumps(records, f'{self._step}/{shard}'))
            chunks = chunks + [token]
        self._views[shard] = (len(chunks), chunks[-1][:8], state)


class _ConsentInOrderFn(beam.DoFn):
    LOG = BagStateSpec('log', BytesCoder())          # chunks: token + encrypted records
    PENDING = ReadModifyWriteStateSpec('pending', BytesCoder())  # encrypted: items not yet due
    DUE = ReadModifyWriteStateSpec('due', VarIntCoder())  # the timer's time, microseconds
    WATERMARK = TimerSpec('watermark', TimeDomain.WATERMARK)

    def __init__(self, purposes, cross_border, tables, snapshot_at, ordered, lateness, cipher):
        self._cipher = cipher
        self._lateness = lateness
        self._purposes = purposes
        self._cross_border = cross_border
        self._tables = tables
        self._snapshot_at = snapshot_at
        self._ordered = ordered
        self._logs = None

    def setup(self):
        self._logs = ShardLogs(_apply, _records, self._cipher, 'consent')

    def process(self, element, log=beam.DoFn.StateParam(LOG),
                pending=beam.DoFn.StateParam(PENDING), due=beam.DoFn.StateParam(DUE),
                timer=beam.DoFn.TimerParam(WATERMARK)):
        shard, pairs = element
        if shard == '':
            yield pairs  # not for this step
            return
        if self._ordered:  # everything committed before it has arrived: decide now
            yield Batch(tuple(self._release(shard, log, pairs)))
            return
        held = self._pending(shard, pending) + list(pairs)
        pending.write(self._cipher.dumps(held, f'pending/{shard}'))
        first = min(_time(i) for _, i in pairs) + self._lateness
        current = due.read()
        if current is None or first < current:
            due.write(first)
            timer.set(Timestamp(micros=first))

    @on_timer(WATERMARK)
    def on_watermark(self, shard=beam.DoFn.KeyParam, fire=beam.DoFn.TimestampParam,
                     log=beam.DoFn.StateParam(LOG), pending=beam.DoFn.StateParam(PENDING),
                     due=beam.DoFn.StateParam(DUE), timer=beam.DoFn.TimerParam(WATERMARK)):
        now = fire.micros - self._lateness  # everything committed by then has arrived
        held = self._pending(shard, pending)
        ready = sorted((p for p in held if _time(p[1]) <= now), key=lambda p: _order(p[1]))
        later = [p for p in held if _time(p[1]) > now]
        due.clear()
        pending.clear()
        if later:
            pending.write(self._cipher.dumps(later, f'pending/{shard}'))
            next_due = min(_time(i) for _, i in later) + self._lateness
            due.write(next_due)
            timer.set(Timestamp(micros=next_due))
        out = tuple(self._release(shard, log, ready))
        if out:
            yield Batch(out)

    def _pending(self, shard, pending) -> list:
        data = pending.read()
        return self._cipher.loads(data, f'pending/{shard}') if data else []

    def _release(self, shard, log, pairs):
        """Decide ``pairs`` in their order; yields Decided and Retraction items and appends
        what the shard's state must remember to its log."""
        chunks, customers = self._logs.read(shard, log)
        records = []
        for subject, item in pairs:
            customer = customers.get(subject)
            if customer is None:
                customer = customers[subject] = _Customer()
            if isinstance(item, ConsentEvent):
                # a customer who could move and now may not is retracted
                before = self._decide(item.at - 1, customer.events)
                customer.events.append(item)
                records.append(('consent', subject, item))
                after = self._decide(item.at, customer.events)
                reason = retraction_reason(before, after)
                gained = regained(before, after)
                if gained and not item.seed and customer.had_rows(self._snapshot_at is not None):
                    yield Regained(subject, gained, item.at)
                if reason and not item.seed:  # the snapshot read the seeds itself
                    # with a snapshot, every table: whether it delivered the customer depends
                    # on when its registry was exported, which no time here tells (a
                    # withdrawal before its end may postdate the export); deleting rows the
                    # acquirer never got deletes nothing
                    moved = self._tables if self._snapshot_at is not None else \
                        tuple(sorted(customer.delivered))
                    if moved:
                        yield Retraction(subject, moved, reason, item.at)
                continue
            change = item.change
            decision = self._decide_change(change.committed_at, customer)
            if decision.reason is None and change.table not in customer.delivered:
                customer.delivered.add(change.table)
                records.append(('delivered', subject, change.table))
            yield Decided(subject, item, decision.reason, decision.sensitive_ok)
        self._logs.append(shard, log, chunks, records, customers)

    def _decide_change(self, t, customer):
        """The decision at ``t``; the settled one if no consent event comes after ``t``."""
        events = customer.events
        last = max((e.at for e in events), default=0)
        if t < last:
            return self._decide(t, events)
        if customer.settled is None or customer.settled[0] != len(events):
            customer.settled = (len(events), self._decide(last, events))
        return customer.settled[1]

    def _decide(self, t, events):
        return decision_at(t, (), False, events, purposes=self._purposes,
                           cross_border=self._cross_border)


def _order(item):
    """Commit time, consent events first (as the batch decides a tie), then arrival."""
    return (item.change.committed_at, 1) if isinstance(item, ChangeEvent) else (item.at, 0)


def route(item, tables, names=None, decimals: str = 'precise') -> list:
    """What ConsentInOrder takes of a ``transforms.stream.feeds.FeedEvent`` (pure), as a list of:
    ``(subject, ChangeEvent | ConsentEvent)`` pairs; a ``Decided`` delete that names no
    customer (deleting needs no consent: it goes straight to the key order); a ``Counted``
    line (a consent event applied, a line that is no change); or a ``ChangeProblem`` naming
    the table.

    ``tables``: the config's TableConfigs by name; ``names``: the seller's table names
    (``db.table`` or ``table``) -> the config's (``stream.tables``). A change's subject is its
    row's subject key, under the field's name or one of its aliases; a change of a table the
    config does not name is refused (fail closed: nothing unclassified moves). An update whose
    primary key changed becomes a delete of the old key, then the row under the new one.
    """
    event = item.event
    if isinstance(event, ChangeProblem):
        return [event]
    place = (item.path, item.line, item.index)
    if isinstance(event, NotAChange):
        return [Counted(*place, f'not_a_change:{event.kind}')]
    if isinstance(event, ConsentEvent):
        if item.feed in SEEDS:  # the snapshot's registry and erasure list: no feed lines
            return [(event.subject, event)]
        return [Counted(*place, 'consent_event', event.at), (event.subject, event)]
    table = _table(event, tables, names or {})
    if table is None:
        return [ChangeProblem(f'table {event.table!r} is not in the config (map the seller\'s '
                              f'table names to it in stream.tables); tables: '
                              f'{", ".join(sorted(tables))}', event.table)]
    kinds = table.column_kinds
    row, bad = plain_row(event.row, kinds, event.encoded, decimals)
    before, bad_before = plain_row(event.before, kinds, event.encoded, decimals) \
        if event.before else (None, None)
    if bad or bad_before:
        return [ChangeProblem('a value is not in the encoding Debezium gives its column type '
                              '(set stream.decimal_handling_mode as the connector\'s)',
                              table.name)]
    key = _key(row, table)
    if key is None:
        return [ChangeProblem(f'the row has no {table.schema.primary_key} (its primary key)',
                              table.name, reason='missing_required')]
    change = event._replace(table=table.name, row=row, before=None)
    subject = _first(row, table.subject_columns)
    out = []
    old = _key(before, table) if before is not None and table.schema.primary_key else None
    if old is not None and old != key:  # a key change: the old key goes first
        gone = ChangeEvent(change._replace(op='d', row=before, part=0), item.path, item.line,
                           -1 - item.index, old)
        owner = subject or _first(before, table.subject_columns)
        out.append((owner, gone) if owner else Decided(None, gone, None, False))
    changed = ChangeEvent(change, *place, key)
    if subject is not None:
        out.append((subject, changed))  # as the batch keys it
    elif change.op == 'd':
        out.append(Decided(None, changed, None, False))
    else:
        return [ChangeProblem(f'the row has no {table.subject_key} (the subject key), so no '
                              f'consent can be decided for it', table.name)]
    return out


def _table(change, tables, names):
    for name in (f'{change.database}.{change.table}' if change.database else None,
                 change.table):
        if name in names:
            return tables.get(names[name])
    return tables.get(change.table)


def _first(row, columns) -> Optional[str]:
    for column in columns:
        value = row.get(column)
        if value is not None and str(value).strip():
            return str(value)
    return None


def _key(row, table) -> Optional[str]:
    """The row's primary key as text; for a table without one, a digest of the whole row
    (a repeat of the same create is then known, and two rows of one snapshot read are not
    taken for one)."""
    if table.schema.primary_key:
        return _first(row, table.key_columns)
    digest = hashlib.blake2b(repr(sorted((k, str(v)) for k, v in row.items())).encode(),
                             digest_size=12)
    return '#' + digest.hexdigest()
