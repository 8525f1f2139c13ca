"""Consent events of the live feed, and a customer's decision at any moment (pure, no Beam).

An event is one JSON object (a line, an Avro record, a Pub/Sub message)::

    {"subject_id": "C00000001", "event": "withdraw", "purpose": "credit_management",
     "at": "2026-12-03T10:15:00+08:00", "position": 1207}

``event`` is one of ``grant`` (live consent for ``purpose``; optional ``sensitive_consent`` and
``cross_border_consent`` booleans), ``withdraw`` (for ``purpose``), ``sensitive_consent`` and
``cross_border_consent`` (a separate consent for ``purpose`` given or taken back: ``value``
true or false) and ``erasure`` (the customer asked for erasure: no purpose). ``at`` is when
the customer did it (ISO 8601 with its zone, or epoch milliseconds); ``position`` orders
events of the same moment.

A customer's decision at time ``t`` folds, over their consent rows in the snapshot's registry,
every event with ``at <= t``, in (at, position) order, then decides as the batch does
(``consent_rules.decide_subject``), so a change committed after a withdrawal is refused and one
committed before it is delivered, whatever order the two arrive in.
"""

import dataclasses
from typing import Dict, Iterable, NamedTuple, Optional, Sequence, Tuple, Union

from transforms.stream.changes import ChangeProblem, TimeRules, event_time, integer_value
from transforms.consent.rules import ConsentRow, Decision, decide_subject

__all__ = ['EVENTS', 'ConsentEvent', 'decision_at', 'parse_consent_event', 'retraction_reason']

EVENTS = ('grant', 'withdraw', 'sensitive_consent', 'cross_border_consent', 'erasure')


class ConsentEvent(NamedTuple):
    """A grant, withdrawal, change of separate consent or erasure request of one customer (a
    named tuple, as ``transforms.stream.changes.Change``, for the stream's keyed boundary)."""
    subject: str
    event: str
    purpose: Optional[str]  # None for an erasure
    at: int  # microseconds since the epoch, UTC
    position: int
    sensitive_consent: Optional[bool] = None  # grant: given with it (None: unchanged)
    cross_border_consent: Optional[bool] = None
    value: Optional[bool] = None  # sensitive_consent / cross_border_consent events
    seed: bool = False  # from the snapshot's registry or erasure list, which it read too

    @property
    def order(self) -> Tuple[int, int]:
        return (self.at, self.position)


def parse_consent_event(raw, *, read_at: int,
                        rules: TimeRules = TimeRules()) -> Union[ConsentEvent, ChangeProblem]:
    """The consent event ``raw`` describes, or the problem that keeps it from being one (in
    words; never a value). ``at`` is read as ``transforms.stream.changes.event_time`` reads times
    (``read_at``: when it was read, microseconds)."""
    if not isinstance(raw, dict):
        return ChangeProblem('the consent event is not a JSON object')
    subject = raw.get('subject_id')
    if not isinstance(subject, str) or not subject.strip():
        return ChangeProblem('subject_id must be a non-empty string')
    kind = raw.get('event')
    if kind not in EVENTS:
        return ChangeProblem(f'event must be one of {", ".join(EVENTS)}')
    purpose = raw.get('purpose')
    if kind == 'erasure':
        purpose = None
    elif not isinstance(purpose, str) or not purpose:
        return ChangeProblem(f'a {kind} event needs its purpose')
    at = event_time(raw.get('at'), 'at', read_at, rules)
    if isinstance(at, ChangeProblem):
        return at
    position = integer_value(raw.get('position', 0))
    if position is None:
        return ChangeProblem('position must be an integer')
    flags = {}
    for name in ('sensitive_consent', 'cross_border_consent', 'value'):
        value = raw.get(name)
        if value is not None and not isinstance(value, bool):
            return ChangeProblem(f'{name} must be true or false')
        flags[name] = value
    if kind in ('sensitive_consent', 'cross_border_consent') and flags['value'] is None:
        return ChangeProblem(f'a {kind} event needs value: true or false')
    return ConsentEvent(subject.strip(), kind, purpose, at, position, **flags)


def _fold(rows: Dict[str, ConsentRow], event: ConsentEvent) -> None:
    """Apply one event to the customer's consent rows, by purpose (in place)."""
    row = rows.get(event.purpose) or ConsentRow(event.purpose, False, False, False, False)
    if event.event == 'grant':
        row = ConsentRow(event.purpose, True, False,
                         row.sensitive_consent if event.sensitive_consent is None
                         else event.sensitive_consent,
                         row.cross_border_consent if event.cross_border_consent is None
                         else event.cross_border_consent)
    elif event.event == 'withdraw':
        row = dataclasses.replace(row, withdrawn=True)
    else:  # a separate consent given or taken back
        row = dataclasses.replace(row, **{event.event: event.value})
    rows[event.purpose] = row


def decision_at(t: int, snapshot_rows: Sequence[ConsentRow], snapshot_erased: bool,
                events: Iterable[ConsentEvent], *, purposes: Dict[str, str],
                cross_border: bool) -> Decision:
    """The customer's decision at ``t`` (microseconds): the snapshot's rows (one per purpose)
    with every event at or before ``t`` applied in order."""
    rows = {r.purpose: r for r in snapshot_rows}
    erased = snapshot_erased
    for event in sorted((e for e in events if e.at <= t), key=lambda e: e.order):
        if event.event == 'erasure':
            erased = True
        else:
            _fold(rows, event)
    return decide_subject(list(rows.values()), erased=erased, purposes=purposes,
                          cross_border=cross_border)


def regained(before: Decision, after: Decision) -> Optional[str]:
    """What a customer regained when the decision went from ``before`` to ``after``:
    ``rows`` when they may move again (a consent given after a refusal or a withdrawal),
    ``sensitive`` when the separate consent for sensitive data came after their rows moved
    without it (PIPL Art. 29); else None. Rows the acquirer then lacks (never delivered,
    retracted, or with their sensitive fields null) need a backfill."""
    if before.reason is not None and after.reason is None:
        return 'rows'
    if before.reason is None and not before.sensitive_ok and after.sensitive_ok:
        return 'sensitive'
    return None


def retraction_reason(before: Decision, after: Decision) -> Optional[str]:
    """Why rows delivered under ``before`` must be deleted by the acquirer now that the
    decision is ``after`` (PIPL Art. 47), or None: only a customer who could move and now may
    not is retracted: its rows, or, when only the separate consent for sensitive data was taken
    back (``no_sensitive_consent``), the sensitive fields of its rows (PIPL Art. 29)."""
    if before.reason is None and after.reason is not None:
        return after.reason
    if before.reason is None and before.sensitive_ok and not after.sensitive_ok:
        return 'no_sensitive_consent'
    return None
