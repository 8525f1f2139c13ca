"""Consent events: parsed without quoting values; a customer's decision at any moment follows
every event up to it, whatever order they arrived in; retractions when a customer may no
longer move."""

import itertools

import pytest

from transforms.stream.changes import ChangeProblem
from transforms.consent.events import (ConsentEvent, decision_at, parse_consent_event,
                                       retraction_reason)
from transforms.consent.rules import ConsentRow, Decision

PURPOSES = {'credit': 'consent', 'servicing': 'contract'}
MS = 1000  # microseconds a millisecond
T = 1_767_225_600_000  # 2026-01-01T00:00:00Z, ms
NOW = T * 1000 + 3_600 * 10**6  # read an hour later, in microseconds
LIVE = ConsentRow('credit', True, False, True, True)


def event(kind, at, position=0, purpose='credit', **flags):
    return ConsentEvent('C1', kind, None if kind == 'erasure' else purpose, at * MS, position,
                        **flags)


@pytest.mark.parametrize('raw, expected', [
    ({'subject_id': 'C1', 'event': 'withdraw', 'purpose': 'credit', 'at': T, 'position': 3},
     event('withdraw', T, 3)),
    ({'subject_id': ' C1 ', 'event': 'grant', 'purpose': 'credit',
      'at': '2026-01-01T08:00:00+08:00', 'sensitive_consent': True},
     event('grant', T, 0, sensitive_consent=True)),
    ({'subject_id': 'C1', 'event': 'erasure', 'purpose': 'ignored', 'at': T},
     event('erasure', T)),
    ({'subject_id': 'C1', 'event': 'cross_border_consent', 'purpose': 'credit', 'at': T,
      'value': False}, event('cross_border_consent', T, value=False)),
])
def test_consent_events_parse(raw, expected):
    assert parse_consent_event(raw, read_at=NOW) == expected


@pytest.mark.parametrize('raw, problem', [
    ('C1,withdraw', 'the consent event is not a JSON object'),
    ({'event': 'withdraw', 'purpose': 'credit', 'at': T}, 'subject_id must be a non-empty'),
    ({'subject_id': 'C1', 'event': 'revoke', 'purpose': 'credit', 'at': T},
     'event must be one of grant, withdraw'),
    ({'subject_id': 'C1', 'event': 'withdraw', 'at': T}, 'a withdraw event needs its purpose'),
    ({'subject_id': 'C1', 'event': 'grant', 'purpose': 'credit', 'at': '2026-01-01'},
     'at must be an ISO 8601 time with its zone'),
    ({'subject_id': 'C1', 'event': 'grant', 'purpose': 'credit', 'at': T, 'position': 'x'},
     'position must be an integer'),
    ({'subject_id': 'C1', 'event': 'grant', 'purpose': 'credit', 'at': T,
      'sensitive_consent': 'yes'}, 'sensitive_consent must be true or false'),
    ({'subject_id': 'C1', 'event': 'sensitive_consent', 'purpose': 'credit', 'at': T},
     'a sensitive_consent event needs value: true or false'),
])
def test_anything_else_is_a_problem_that_quotes_no_value(raw, problem):
    got = parse_consent_event(raw, read_at=NOW)
    assert isinstance(got, ChangeProblem) and got.problem.startswith(problem)
    assert 'C1' not in got.problem


def decide(t, events, snapshot=(LIVE,), erased=False, cross_border=True):
    return decision_at(t * MS, list(snapshot), erased, events, purposes=PURPOSES,
                       cross_border=cross_border)


@pytest.mark.parametrize('t, events, snapshot, reason, sensitive_ok', [
    (T, [], (LIVE,), None, True),                                    # as in the snapshot
    (T + 5, [event('withdraw', T + 10)], (LIVE,), None, True),       # before the withdrawal
    (T + 10, [event('withdraw', T + 10)], (LIVE,), 'consent_withdrawn', False),  # at it
    (T + 20, [event('withdraw', T + 10), event('grant', T + 15)], (LIVE,), None, True),
    (T + 20, [event('grant', T + 15)], (), 'no_cross_border_consent', False),
    (T + 20, [event('grant', T + 15, cross_border_consent=True)], (), None, False),
    (T + 20, [event('grant', T + 15, cross_border_consent=True, sensitive_consent=True)], (),
     None, True),
    (T + 20, [event('sensitive_consent', T + 15, value=False)], (LIVE,), None, False),
    (T + 20, [event('cross_border_consent', T + 15, value=False)], (LIVE,),
     'no_cross_border_consent', False),
    (T + 20, [event('erasure', T + 15), event('grant', T + 16)], (LIVE,), 'erasure_requested',
     False),                                                          # erasure is final
    (T + 20, [event('withdraw', T + 15, purpose='marketing')], (LIVE,), None, True),  # not ours
    (T, [], (), 'no_consent', False),                                 # never seen
])
def test_the_decision_at_a_moment_follows_every_event_up_to_it(t, events, snapshot, reason,
                                                                 sensitive_ok):
    assert decide(t, events, snapshot) == Decision(reason, sensitive_ok)


def test_the_order_of_arrival_does_not_matter():
    events = [event('withdraw', T + 10, 1), event('grant', T + 10, 2), event('withdraw', T + 30),
              event('sensitive_consent', T + 5, value=False)]
    decisions = {tuple(decide(t, list(order)) for t in range(T, T + 40, 5))
                 for order in itertools.permutations(events)}
    assert decisions == {(Decision(None, True), Decision(None, False), Decision(None, False),
                          Decision(None, False), Decision(None, False), Decision(None, False),
                          Decision('consent_withdrawn', False),
                          Decision('consent_withdrawn', False))}


@pytest.mark.parametrize('before, after, reason', [
    (Decision(None, True), Decision('consent_withdrawn', False), 'consent_withdrawn'),
    (Decision(None, False), Decision('erasure_requested', False), 'erasure_requested'),
    (Decision('no_consent', False), Decision('erasure_requested', False), None),  # never moved
    (Decision(None, True), Decision(None, False), 'no_sensitive_consent'),  # fields only
    (Decision(None, False), Decision(None, False), None),
    (Decision('consent_withdrawn', False), Decision(None, True), None),
])
def test_a_customer_who_may_no_longer_move_is_retracted(before, after, reason):
    assert retraction_reason(before, after) == reason
