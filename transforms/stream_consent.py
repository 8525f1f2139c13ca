"""Consent in order, per customer, on a stream: a change is decided by every consent event up to
its commit time, so a withdrawal is never overtaken by a change committed after it.

``ConsentInOrder`` takes ``(subject, ChangeEvent | ConsentEvent)`` pairs, data and consent
feeds flattened together, each element timestamped with its commit time (``at`` for consent
events). Per customer (keyed state) it keeps the consent events seen and the changes not yet
decided. A change waits until the input watermark passes its commit time, that is until no
consent event committed before it can still arrive on time; it is then decided as of its
commit time (``consent_events.decision_at``) and delivered or refused. When the watermark passes
a withdrawal or an erasure, a customer whose rows were delivered (in the snapshot or the
stream) gets a retraction: the acquirer must delete them (PIPL Art. 47). A consent event that
arrives after the watermark passed its time (late) is still applied: changes decided since are
not taken back one by one, but the customer is retracted as a whole. The same change seen twice
(same table and position) is decided once.
"""

import dataclasses
from typing import Optional, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from transforms.changes import Change, ChangeProblem
from transforms.consent_events import ConsentEvent, decision_at, retraction_reason

__all__ = ['ChangeEvent', 'ConsentInOrder', 'Decided', 'Retraction', 'route']


@dataclasses.dataclass(frozen=True)
class ChangeEvent:
    """A change of a customer's row, with where it came from (for dead letters)."""
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


class ConsentInOrder(beam.PTransform):
    """Outputs, in one PCollection: ``Decided`` (deliver or refuse) and ``Retraction``; any
    other item (a problem, the end of the feeds) passes through as it came, so the steps of a
    stream stay one chain: the local runner stops running in real time at a Flatten."""

    def __init__(self, transfer, tables, *, snapshot_at: Optional[int] = None,
                 ordered: bool = False):
        """``tables``: every table name (a customer delivered in the snapshot is retracted
        from all); ``snapshot_at``: the snapshot's time in microseconds (None: no snapshot);
        ``ordered``: the input comes in commit-time order (``transforms.feeds`` releases it
        so), and each item is decided as it arrives instead of when the watermark passes it
        (which the local runner does not honour for timers; see transforms.feeds)."""
        super().__init__()
        self._fn = _ConsentInOrderFn(transfer.legal_bases, transfer.cross_border,
                                     tuple(tables), snapshot_at, ordered)

    def expand(self, keyed):
        return keyed | 'InOrder' >> beam.ParDo(self._fn)


def _time(item) -> int:
    return item.change.committed_at if isinstance(item, ChangeEvent) else item.at


class _ConsentInOrderFn(beam.DoFn):
    CONSENT = BagStateSpec('consent', PickleCoder())      # every consent event, evaluated
    FRESH = BagStateSpec('fresh', PickleCoder())          # consent events not yet evaluated
    PENDING = BagStateSpec('pending', PickleCoder())      # changes not yet decided
    SEEN = BagStateSpec('seen', PickleCoder())            # (table, position) decided
    DELIVERED = BagStateSpec('delivered', PickleCoder())  # tables delivered in the stream
    DUE = ReadModifyWriteStateSpec('due', VarIntCoder())  # the timer's time, microseconds
    WATERMARK = TimerSpec('watermark', TimeDomain.WATERMARK)

    def __init__(self, purposes, cross_border, tables, snapshot_at, ordered):
        self._purposes = purposes
        self._cross_border = cross_border
        self._tables = tables
        self._snapshot_at = snapshot_at
        self._ordered = ordered

    def process(self, element, consent=beam.DoFn.StateParam(CONSENT),
                fresh=beam.DoFn.StateParam(FRESH), pending=beam.DoFn.StateParam(PENDING),
                seen=beam.DoFn.StateParam(SEEN), delivered=beam.DoFn.StateParam(DELIVERED),
                due=beam.DoFn.StateParam(DUE), timer=beam.DoFn.TimerParam(WATERMARK)):
        key, item = element
        if not isinstance(item, (ChangeEvent, ConsentEvent)):
            yield item  # not for this step
            return
        (pending if isinstance(item, ChangeEvent) else fresh).add(item)
        at = _time(item)
        if self._ordered:  # everything committed before it has arrived: decide now
            yield from self._release(key, at, consent, fresh, pending, seen, delivered)
            return
        current = due.read()
        if current is None or at < current:
            due.write(at)
            timer.set(Timestamp(micros=at))

    @on_timer(WATERMARK)
    def on_watermark(self, key=beam.DoFn.KeyParam, fire=beam.DoFn.TimestampParam,
                     consent=beam.DoFn.StateParam(CONSENT),
                     fresh=beam.DoFn.StateParam(FRESH), pending=beam.DoFn.StateParam(PENDING),
                     seen=beam.DoFn.StateParam(SEEN),
                     delivered=beam.DoFn.StateParam(DELIVERED),
                     due=beam.DoFn.StateParam(DUE), timer=beam.DoFn.TimerParam(WATERMARK)):
        yield from self._release(key, fire.micros, consent, fresh, pending, seen, delivered)
        times = [_time(i) for i in list(fresh.read()) + list(pending.read())]
        due.clear()
        if times:
            due.write(min(times))
            timer.set(Timestamp(micros=min(times)))

    def _release(self, key, now, consent, fresh, pending, seen, delivered):
        """Evaluate the consent events and decide the changes committed up to ``now``."""
        events = list(consent.read())
        new = sorted(fresh.read(), key=lambda e: e.order)
        changes = sorted(pending.read(), key=lambda c: c.change.order)
        tables = set(delivered.read())
        # Consent events whose time has passed: a customer who may no longer move is retracted.
        evaluated, waiting = [e for e in new if e.at <= now], [e for e in new if e.at > now]
        for event in evaluated:
            before = self._decide(event.at - 1, events)
            events.append(event)
            after = self._decide(event.at, events)
            reason = retraction_reason(before, after)
            if reason:
                moved = self._tables if self._snapshot_delivered(events) else \
                    tuple(sorted(tables))
                if moved:
                    yield Retraction(key, moved, reason, event.at)
        # Changes whose commit time has passed: decided as of that time, each once.
        decided = {tuple(s) for s in seen.read()}
        for item in (c for c in changes if c.change.committed_at <= now):
            identity = (item.change.table, item.change.position_text)
            if identity in decided:
                continue
            decided.add(identity)
            seen.add(identity)
            decision = self._decide(item.change.committed_at, events)
            if decision.reason is None and item.change.table not in tables:
                tables.add(item.change.table)
                delivered.add(item.change.table)
            yield Decided(key, item, decision.reason, decision.sensitive_ok)
        later = [c for c in changes if c.change.committed_at > now]
        for state, kept in ((fresh, waiting), (pending, later)):
            state.clear()
            for item in kept:
                state.add(item)
        for event in evaluated:
            consent.add(event)

    def _decide(self, t, events):
        return decision_at(t, (), False, events, purposes=self._purposes,
                           cross_border=self._cross_border)

    def _snapshot_delivered(self, events) -> bool:
        """Whether the snapshot delivered the customer: allowed to move at its time."""
        return self._snapshot_at is not None and \
            self._decide(self._snapshot_at, events).reason is None


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
    spec = next(f for f in table.schema.fields if f.name == table.subject_key)
    for column in (spec.name,) + spec.aliases:
        value = event.row.get(column)
        if value is not None and str(value).strip():
            return str(value), ChangeEvent(event, item.path, item.line)  # as the batch keys it
    return ChangeProblem(f'the row has no {table.subject_key} (the subject key), so no '
                         f'consent can be decided for it', event.table)
