"""Consent in order, per customer, on a stream: a change is decided by every consent event up to
its commit time, so a withdrawal is never overtaken by a change committed after it.

``ConsentInOrder`` takes ``Routed`` batches of ``(subject, ChangeEvent | ConsentEvent)`` pairs,
data and consent events together, each batch timestamped no later than its first event. It
keys them by shard (a hash of the subject; each shard's state holds its customers apart: the
consent events seen, the tables delivered, the changes decided) and outputs one ``Batch`` of
decisions and retractions per batch. Batches, not single events, because the Python SDK pays
about half a millisecond for every state access (it weighs what it caches): per event that
caps a stream near a thousand changes a second, per batch of a shard it costs nothing.

A change waits until the input watermark passes its commit time, that is until no consent
event committed before it can still arrive on time; it is then decided as of its commit time
(``consent_events.decision_at``) and delivered or refused. When the watermark passes
a withdrawal or an erasure, a customer whose rows were delivered (in the snapshot or the
stream) gets a retraction: the acquirer must delete them (PIPL Art. 47). A consent event that
arrives after the watermark passed its time (late) is still applied: changes decided since are
not taken back one by one, but the customer is retracted as a whole. The same change seen twice
(same table and position) within ``DEDUP_SECONDS`` of commit time is decided once.

A shard's state is an append-only log (a bag of chunks, each the pickled records one batch
added) that is compacted when it grows long, and each worker keeps its decoded view between
batches, checked against the log's last chunk: so a batch costs what it adds, not the size of
the shard.
"""

import dataclasses
import pickle
import secrets
import zlib
from typing import NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from transforms.changes import Change, ChangeProblem
from transforms.consent_events import ConsentEvent, decision_at, retraction_reason

__all__ = ['Batch', 'ChangeEvent', 'ConsentInOrder', 'Decided', 'Retraction', 'Routed', 'route',
           'shard_of']

SHARDS = 16           # keys of the consent state; the most workers that can decide at once
DEDUP_SECONDS = 600   # a change seen again within this much commit time is decided once
COMPACT_AFTER = 64    # chunks in a shard's log before it is rewritten as one


class ChangeEvent(NamedTuple):
    """A change of a customer's row, with where it came from (for dead letters); a named
    tuple, as ``transforms.changes.Change``."""
    change: Change
    source: str = ''
    line: Optional[int] = None


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
    """``Routed`` batches -> one ``Batch`` of ``Decided`` (deliver or refuse) and
    ``Retraction`` items per batch; any other item (dead letters, the watermark's marks, the
    end of the feeds) passes through as it came, so the steps of a stream stay one chain: the
    local runner stops running in real time at a Flatten."""

    def __init__(self, transfer, tables, *, snapshot_at: Optional[int] = None,
                 ordered: bool = False, lateness: float = 0.0, shards: int = SHARDS):
        """``tables``: every table name (a customer delivered in the snapshot is retracted
        from all); ``snapshot_at``: the snapshot's time in microseconds (None: no snapshot);
        ``ordered``: the input comes in commit-time order (``transforms.feeds`` releases it
        so), and each item is decided as it arrives instead of when the watermark passes it
        (which the local runner does not honour for timers; see transforms.feeds); otherwise
        an item waits for the watermark to pass its commit time plus ``lateness`` seconds
        (a source whose watermark follows when events arrive, not when they were committed:
        Pub/Sub's publish times)."""
        super().__init__()
        self._shards = shards
        self._fn = _ConsentInOrderFn(transfer.legal_bases, transfer.cross_border,
                                     tuple(tables), snapshot_at, ordered,
                                     int(lateness * 10**6))

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
    order), tables delivered in the stream, and changes decided ((table, position) -> commit
    time, for the dedup horizon). ``settled``: the decision from the latest consent event on
    (with how many events it was made), so most changes are decided without replaying them."""
    __slots__ = ('events', 'delivered', 'seen', 'settled')

    def __init__(self):
        self.events, self.delivered, self.seen, self.settled = [], set(), {}, None

    def __getstate__(self):
        return self.events, self.delivered, self.seen

    def __setstate__(self, state):
        (self.events, self.delivered, self.seen), self.settled = state, None


def _apply(customers, records):
    for kind, subject, value in records:
        customer = customers.get(subject)
        if customer is None:
            customer = customers[subject] = _Customer()
        if kind == 'consent':
            customer.events.append(value)
        elif kind == 'delivered':
            customer.delivered.add(value)
        else:  # 'seen': ((table, position), committed_at)
            customer.seen[value[0]] = value[1]


def _records(customers, horizon):
    """The records that rebuild ``customers``, without changes decided before ``horizon``."""
    out = []
    for subject, customer in customers.items():
        out.extend(('consent', subject, e) for e in customer.events)
        out.extend(('delivered', subject, t) for t in sorted(customer.delivered))
        out.extend(('seen', subject, (identity, at)) for identity, at in customer.seen.items()
                   if at >= horizon)
    return out


class _ConsentInOrderFn(beam.DoFn):
    LOG = BagStateSpec('log', BytesCoder())               # chunks: token + pickled records
    PENDING = ReadModifyWriteStateSpec('pending', PickleCoder())  # (subject, item) not yet due
    DUE = ReadModifyWriteStateSpec('due', VarIntCoder())  # the timer's time, microseconds
    WATERMARK = TimerSpec('watermark', TimeDomain.WATERMARK)

    def __init__(self, purposes, cross_border, tables, snapshot_at, ordered, lateness=0):
        self._lateness = lateness
        self._purposes = purposes
        self._cross_border = cross_border
        self._tables = tables
        self._snapshot_at = snapshot_at
        self._ordered = ordered
        self._views = None

    def setup(self):
        self._views = {}  # shard -> (chunks in its log, last chunk's token, customers)

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
        held = (pending.read() or []) + list(pairs)
        pending.write(held)
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
        held = pending.read() or []
        ready = sorted((p for p in held if _time(p[1]) <= now), key=lambda p: _order(p[1]))
        later = [p for p in held if _time(p[1]) > now]
        due.clear()
        pending.clear()
        if later:
            pending.write(later)
            next_due = min(_time(i) for _, i in later) + self._lateness
            due.write(next_due)
            timer.set(Timestamp(micros=next_due))
        out = tuple(self._release(shard, log, ready))
        if out:
            yield Batch(out)

    def _view(self, shard, log):
        """The shard's chunks and its customers, decoded (from this worker's view when it is
        the log's latest)."""
        chunks = list(log.read())
        view = self._views.pop(shard, None)  # taken: a failed bundle must not keep it
        if view is not None and view[0] == len(chunks) and \
                (not chunks or chunks[-1][:8] == view[1]):
            return chunks, view[2]
        customers = {}
        for chunk in chunks:
            _apply(customers, pickle.loads(chunk[8:]))
        return chunks, customers

    def _release(self, shard, log, pairs):
        """Decide ``pairs`` in their order; yields Decided and Retraction items and appends
        what the shard's state must remember to its log."""
        chunks, customers = self._view(shard, log)
        records, latest = [], 0
        for subject, item in pairs:
            customer = customers.get(subject)
            if customer is None:
                customer = customers[subject] = _Customer()
            if isinstance(item, ConsentEvent):
                # a customer who could move and now may not is retracted
                before = self._decide(item.at - 1, customer.events)
                customer.events.append(item)
                records.append(('consent', subject, item))
                reason = retraction_reason(before, self._decide(item.at, customer.events))
                if reason:
                    moved = self._tables if self._snapshot_delivered(customer.events) else \
                        tuple(sorted(customer.delivered))
                    if moved:
                        yield Retraction(subject, moved, reason, item.at)
                continue
            change = item.change
            latest = max(latest, change.committed_at)
            identity = (change.table, change.position_text)
            if identity in customer.seen:
                continue  # the same change again: decided once
            customer.seen[identity] = change.committed_at
            records.append(('seen', subject, (identity, change.committed_at)))
            decision = self._decide_change(change.committed_at, customer)
            if decision.reason is None and change.table not in customer.delivered:
                customer.delivered.add(change.table)
                records.append(('delivered', subject, change.table))
            yield Decided(subject, item, decision.reason, decision.sensitive_ok)
        token = secrets.token_bytes(8)
        if len(chunks) >= COMPACT_AFTER:  # rewrite the log as one chunk, forgetting old changes
            log.clear()
            chunks = []
            records = _records(customers, latest - DEDUP_SECONDS * 10**6)
            customers = {}
            _apply(customers, records)
        if records or not chunks:
            log.add(token + pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
            chunks = chunks + [token]
        self._views[shard] = (len(chunks), chunks[-1][:8], customers)

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

    def _snapshot_delivered(self, events) -> bool:
        """Whether the snapshot delivered the customer: allowed to move at its time."""
        return self._snapshot_at is not None and \
            self._decide(self._snapshot_at, events).reason is None


def _order(item):
    return item.change.order if isinstance(item, ChangeEvent) else (item.at, '', item.order)


def route(item, tables):
    """``(subject, ChangeEvent | ConsentEvent)`` for ConsentInOrder, or a ``ChangeProblem``
    naming the table, for a ``transforms.feeds.FeedEvent`` (pure).

    ``tables``: the config's TableConfigs by name. A change's subject is its row's subject key,
    under the field's name or one of its aliases; a change of a table the config does not
    name is refused (fail closed: nothing unclassified moves).
    """
    event = item.event
    if isinstance(event, ChangeProblem):
        return event
    if isinstance(event, ConsentEvent):
        return event.subject, event
    table = tables.get(event.table)
    if table is None:
        return ChangeProblem(f'table {event.table!r} is not in the config; tables: '
                             f'{", ".join(sorted(tables))}', event.table)
    for column in table.subject_columns:
        value = event.row.get(column)
        if value is not None and str(value).strip():
            return str(value), ChangeEvent(event, item.path, item.line)  # as the batch keys it
    return ChangeProblem(f'the row has no {table.subject_key} (the subject key), so no '
                         f'consent can be decided for it', event.table)
