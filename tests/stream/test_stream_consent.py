"""ConsentInOrder on a stream (TestStream, on the runner that runs it): out-of-order, duplicate
and late events, a withdrawal between two updates, an erasure after delivery, watermark edges."""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream as EventStream  # not a test class
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
import pytest

from config.loader import Purpose, Transfer
from transforms.stream.changes import Change, ChangeProblem
from transforms.consent.events import ConsentEvent
from transforms.stream.order import InKeyOrder
from transforms.stream.consent import (ChangeEvent, ConsentInOrder, Counted, Decided, Regained,
                                      Retraction, Routed)

TRANSFER = Transfer('S', 'A', (Purpose('credit', 'consent'), Purpose('servicing', 'contract')),
                    'CN', 'CN')
TABLES = ('customers', 'contracts')
S = 10**6  # microseconds a second


def change(subject, at, position, table='customers', op='u'):
    """A change committed at second ``at``, timestamped as the feed would."""
    event = ChangeEvent(Change(table, op, {'customer_id': subject}, at * S, 'lsn', (position,),
                               f'lsn:{position}'), 'f.jsonl', position, 0, subject)
    return TimestampedValue((subject, event), at)


def consent(subject, kind, at, position=0):
    event = ConsentEvent(subject, kind, None if kind == 'erasure' else 'credit', at * S,
                         position)
    return TimestampedValue((subject, event), at)


@pytest.fixture(autouse=True)
def _keys(keys_dir):
    global KEYS  # pylint: disable=global-statement
    KEYS = keys_dir


def check(stream, decided, retracted=(), snapshot_at=None, ordered=False, shards=16,
          counted=None, regained=None):
    options = PipelineOptions(streaming=True)
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        # each event its own batch, as a feed that releases one event at a time
        out = (p | stream | beam.Map(lambda pair: Routed((pair,)))
               | ConsentInOrder(TRANSFER, TABLES, keys_path=KEYS, run_id='s1',
                                snapshot_at=None if snapshot_at is None else snapshot_at * S,
                                ordered=ordered, shards=shards)
               | InKeyOrder(keys_path=KEYS, run_id='s1', shards=shards)
               | beam.FlatMap(lambda batch: batch.items))
        if counted is not None:
            assert_that(out | beam.Filter(lambda o: isinstance(o, Counted)) | beam.Map(
                lambda c: (c.line, c.outcome)), equal_to(list(counted)), label='counted')
        assert_that(out | beam.Filter(lambda o: isinstance(o, Decided)) | beam.Map(
            lambda d: (d.subject, d.event.change.position[0], d.reason)),
            equal_to(list(decided)), label='decided')
        assert_that(out | beam.Filter(lambda o: isinstance(o, Retraction)) | beam.Map(
            lambda r: (r.subject, r.tables, r.reason, r.at // S)),
            equal_to(list(retracted)), label='retractions')
        if regained is not None:
            assert_that(out | beam.Filter(lambda o: isinstance(o, Regained)) | beam.Map(
                lambda r: (r.subject, r.kind, r.at // S)), equal_to(list(regained)),
                label='regained')


def end(stream):
    # A watermark timer still pending when the watermark jumps straight to infinity is dropped
    # by this runner: advance to a finite time first, as a live source's watermark would.
    return stream.advance_watermark_to(10_000).advance_watermark_to_infinity()


def test_a_withdrawal_between_two_updates_refuses_the_second_and_retracts():
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1), change('C1', 10, 1)])
                 .advance_watermark_to(15)
                 .add_elements([consent('C1', 'withdraw', 20), change('C1', 30, 2)]))
    check(stream, [('C1', 1, None), ('C1', 2, 'consent_withdrawn')],
          [('C1', ('customers',), 'consent_withdrawn', 20)])


def test_a_change_that_arrives_before_an_earlier_withdrawal_still_waits_for_it():
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1)])
                 .add_elements([change('C1', 30, 2)])         # committed after the withdrawal
                 .add_elements([consent('C1', 'withdraw', 20)])  # ... which arrives later
                 .advance_watermark_to(40))
    check(stream, [('C1', 2, 'consent_withdrawn')])  # nothing delivered: nothing to retract


def test_a_change_committed_before_a_withdrawal_is_delivered():
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1), consent('C1', 'withdraw', 20)])
                 .add_elements([change('C1', 19, 1)]))
    check(stream, [('C1', 1, None)], [('C1', ('customers',), 'consent_withdrawn', 20)])


def test_the_same_change_twice_is_decided_once_and_an_older_one_is_superseded():
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1), change('C1', 10, 2)])
                 .add_elements([change('C1', 10, 2)])
                 .advance_watermark_to(12)
                 .add_elements([change('C1', 10, 2)])   # again, after it was decided (late)
                 .add_elements([change('C1', 11, 1)]))  # later in time, earlier in the log
    check(stream, [('C1', 2, None)], counted=[(2, 'repeat'), (2, 'repeat'),
                                                (1, 'superseded')])


def test_a_late_withdrawal_retracts_what_was_delivered_after_it():
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1), change('C1', 30, 2)])
                 .advance_watermark_to(40)                      # delivered
                 .add_elements([consent('C1', 'withdraw', 20)]))  # late: before the change
    check(stream, [('C1', 2, None)], [('C1', ('customers',), 'consent_withdrawn', 20)])


def test_an_erasure_after_delivery_retracts_every_table_delivered():
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1), change('C1', 10, 1),
                                change('C1', 11, 2, table='contracts')])
                 .advance_watermark_to(20)
                 .add_elements([consent('C1', 'erasure', 25), change('C1', 30, 3)]))
    check(stream, [('C1', 1, None), ('C1', 2, None), ('C1', 3, 'erasure_requested')],
          [('C1', ('contracts', 'customers'), 'erasure_requested', 25)])


def test_a_customer_delivered_in_the_snapshot_is_retracted_from_every_table():
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1)])
                 .advance_watermark_to(60)
                 .add_elements([consent('C1', 'withdraw', 70)]))
    check(stream, [], [('C1', TABLES, 'consent_withdrawn', 70)], snapshot_at=50)


def test_a_withdrawal_before_the_snapshot_ended_still_retracts_from_every_table():
    # the snapshot's registry was exported before the withdrawal, which came before the
    # snapshot ended: the snapshot delivered the customer all the same
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1)])
                 .advance_watermark_to(40)
                 .add_elements([consent('C1', 'withdraw', 45)]))
    check(stream, [], [('C1', TABLES, 'consent_withdrawn', 45)], snapshot_at=50)


def test_customers_are_decided_apart_and_a_stranger_is_refused():
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1), consent('C2', 'withdraw', 5),
                                change('C1', 10, 1), change('C2', 10, 2),
                                change('C3', 10, 3)]))
    check(stream, [('C1', 1, None), ('C2', 2, 'consent_withdrawn'), ('C3', 3, 'no_consent')])


@pytest.mark.parametrize('watermark, decided', [
    (9, []),                   # the watermark has not passed the commit time: still waiting
    (10, [('C1', 1, None)]),   # it has reached it: decided
])
def test_a_change_is_decided_only_once_the_watermark_reaches_its_commit_time(
        watermark, decided):
    """The stream ends without the watermark moving on (a runner that drops pending timers):
    only what the watermark reached is out."""
    stream = (EventStream()
              .add_elements([consent('C1', 'grant', 1), change('C1', 10, 1)])
              .advance_watermark_to(watermark)
              .advance_watermark_to_infinity())
    check(stream, decided)


@pytest.fixture(scope='module')
def tables(tmp_path_factory):
    from tests.read.test_dirty_exports import make_table
    table = make_table(str(tmp_path_factory.mktemp('route')), 'csv')  # subject key rid, alias 编号
    return {table.name: table}


@pytest.mark.parametrize('event, routed', [
    (Change('t', 'u', {'rid': 'R1'}, 0, 'seq', (1,), 'seq:1'), 'R1'),
    (Change('t', 'c', {'编号': 'R2'}, 0, 'seq', (1,), 'seq:1'), 'R2'),   # by its alias
    (Change('t', 'd', {'rid': 7}, 0, 'seq', (1,), 'seq:1'), '7'),
    (ConsentEvent('C9', 'withdraw', 'credit', 0, 0), 'C9'),
    (Change('nope', 'u', {'rid': 'R1'}, 0, 'seq', (1,), 'seq:1'),
     "table 'nope' is not in the config"),
    (Change('t', 'u', {'rid': ' ', 'note': 'x'}, 0, 'seq', (1,), 'seq:1'),
     'the row has no rid (the subject key), so no consent can be decided for it'),
    (ChangeProblem('source.table is missing'), 'source.table is missing'),
])
def test_events_are_routed_to_their_customer_or_refused(tables, event, routed):
    from transforms.stream.feeds import FeedEvent
    from transforms.stream.consent import route
    got = route(FeedEvent('f', 'p.jsonl', 3, event), tables)
    if isinstance(got[0], ChangeProblem):
        assert got[0].problem.startswith(routed)
    else:
        subject, item = got[-1]
        assert subject == routed
        assert item == event or (item.change.row == event.row and (item.source, item.line) ==
                                 ('p.jsonl', 3))


@pytest.mark.parametrize('ordered', [False, True])
def test_input_in_commit_order_is_decided_alike_waiting_or_not(ordered):
    """What WatchFeeds releases (commit order) is decided the same on arrival as when the
    watermark passes it, late withdrawals included."""
    stream = end(EventStream()
                 .add_elements([consent('C1', 'grant', 1), change('C1', 10, 1),
                                consent('C1', 'withdraw', 20), change('C1', 30, 2),
                                consent('C2', 'grant', 31), change('C2', 40, 3)])
                 .advance_watermark_to(50)
                 .add_elements([consent('C2', 'withdraw', 35)]))  # late, after change 3
    check(stream, [('C1', 1, None), ('C1', 2, 'consent_withdrawn'), ('C2', 3, None)],
          [('C1', ('customers',), 'consent_withdrawn', 20),
           ('C2', ('customers',), 'consent_withdrawn', 35)], ordered=ordered)


@pytest.mark.parametrize('ordered', [False, True])
def test_one_shards_customers_stay_apart_and_its_log_compacts_without_forgetting(ordered):
    """All customers in one shard, more batches than the log holds before it is rewritten:
    consent, the tables delivered and the changes already decided survive the rewrite."""
    from transforms.stream.consent import COMPACT_AFTER
    stream = EventStream().add_elements([consent('C1', 'grant', 1), consent('C2', 'grant', 1)])
    changes = COMPACT_AFTER + 6
    for n in range(1, changes + 1):
        stream = stream.add_elements([change('C1' if n % 2 else 'C2', 10 + n, n)])
        stream = stream.advance_watermark_to(10 + n)
    stream = end(stream.add_elements([change('C1', 10 + 1, 1),  # again: decided once
                                      consent('C2', 'withdraw', 500),
                                      change('C2', 600, changes + 1)]))
    check(stream, [('C1' if n % 2 else 'C2', n, None) for n in range(1, changes + 1)] +
          [('C2', changes + 1, 'consent_withdrawn')],
          [('C2', ('customers',), 'consent_withdrawn', 500)], ordered=ordered, shards=1)


def test_withdrawing_the_separate_consent_for_sensitive_data_retracts_those_fields_only():
    grant = ConsentEvent('C1', 'grant', 'credit', 1 * S, 0, sensitive_consent=True,
                         cross_border_consent=True)
    taken_back = ConsentEvent('C1', 'sensitive_consent', 'credit', 20 * S, 1, value=False)
    stream = end(EventStream()
                 .add_elements([TimestampedValue(('C1', grant), 1), change('C1', 10, 1)])
                 .advance_watermark_to(15)
                 .add_elements([TimestampedValue(('C1', taken_back), 20),
                                change('C1', 30, 2)]))
    # both changes are delivered (the second without its sensitive fields); the acquirer must
    # delete the sensitive fields of the rows delivered before
    check(stream, [('C1', 1, None), ('C1', 2, None)],
          [('C1', ('customers',), 'no_sensitive_consent', 20)])


def test_a_change_in_the_millisecond_of_its_grant_is_delivered_as_the_batch_delivers_it():
    # arriving before the grant, in one batch: decided with the grant, as the batch decides
    stream = end(EventStream()
                 .add_elements([change('C1', 10, 1), consent('C1', 'grant', 10)]))
    check(stream, [('C1', 1, None)])


def test_the_source_releases_a_consent_event_before_a_change_of_the_same_time():
    from transforms.stream.feeds import FeedEvent
    at = 10 * S
    grant = FeedEvent('consent', 'c', 1, ConsentEvent('C1', 'grant', 'credit', at, 0))
    changed = FeedEvent('data', 'd', 1, Change('customers', 'u', {}, at, 'lsn', (1,), 'lsn:1'))
    assert sorted([(e.time, e.rank) for e in (changed, grant)]) == [(at, 0), (at, 1)]


class _Bag:
    """A DoFn's bag state, kept in memory: what the runner would store."""

    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)

    def read(self):
        return list(self.items)

    def clear(self):
        self.items = []


class _Value:
    """A DoFn's value state, kept in memory."""

    def __init__(self, value=None):
        self.value = value

    def read(self):
        return self.value

    def write(self, value):
        self.value = value

    def clear(self):
        self.value = None


class _Timer:
    def set(self, at):
        self.at = at


def test_what_the_consent_and_key_order_steps_keep_in_state_holds_no_customer_in_clear():
    from apache_beam.utils.timestamp import Timestamp
    from transforms.stream.order import _KeyOrderFn
    from transforms.stream.consent import Batch, shard_of
    subject = 'CUST-4711-0815'
    row = {'customer_id': subject, 'name': '张三丰', 'phone': '13800138000'}
    pairs = ((subject, ConsentEvent(subject, 'grant', 'credit', 1 * S, 0)),
             (subject, ChangeEvent(Change('customers', 'u', row, 10 * S, 'lsn', (1,), 'lsn:1'),
                                   'f.jsonl', 1, 0, subject)))
    shard = shard_of(subject, 16)
    step = ConsentInOrder(TRANSFER, TABLES, keys_path=KEYS, run_id='s1', lateness=0)
    log, pending, due, timer = _Bag(), _Value(), _Value(), _Timer()
    fn = step._fn
    fn.setup()
    assert list(fn.process((shard, pairs), log=log, pending=pending, due=due, timer=timer)) == []
    waiting = pending.value
    fresh = ConsentInOrder(TRANSFER, TABLES, keys_path=KEYS, run_id='s1')._fn
    fresh.setup()  # no view of its own: must decrypt what the state holds
    due.value = 10 * S
    out = list(fresh.on_watermark(shard=shard, fire=Timestamp(micros=10 * S), log=log,
                                  pending=pending, due=due, timer=timer))
    decided = [i for b in out for i in b.items]
    assert [(d.subject, d.reason) for d in decided] == [(subject, None)]
    key_fn = _KeyOrderFn(InKeyOrder(keys_path=KEYS, run_id='s1')._cipher)
    key_fn.setup()
    key_log = _Bag()
    assert isinstance(next(iter(key_fn.process(('3', Batch(tuple(decided))), log=key_log))),
                      Batch)
    held = [waiting, *log.items, *key_log.items]
    assert held and all(held)
    for data in held:
        for clear in (subject, '张三丰', '13800138000', 'customer_id'):
            assert clear.encode('utf-8') not in data
    # bound to its run: state of another stream does not decrypt
    other = ConsentInOrder(TRANSFER, TABLES, keys_path=KEYS, run_id='s2')._fn
    other.setup()
    with pytest.raises(Exception):
        other._pending(shard, _Value(waiting))


def seed(subject, kind, at, **extra):
    """A consent event of the snapshot's registry, as the source reads it."""
    event = ConsentEvent(subject, kind, 'credit', at * S, 0, seed=True, **extra)
    return TimestampedValue((subject, event), at)


@pytest.mark.parametrize('ordered', [False, True])
def test_consent_given_again_lists_the_customers_whose_rows_the_acquirer_lacks(ordered):
    again = ConsentEvent('C1', 'grant', 'credit', 30 * S, 3, sensitive_consent=True,
                         cross_border_consent=True)
    sensitive = ConsentEvent('C2', 'grant', 'credit', 31 * S, 4, sensitive_consent=True,
                             cross_border_consent=True)
    stream = end(EventStream()
                 .add_elements([seed('C1', 'grant', 0, sensitive_consent=True,
                                     cross_border_consent=True),
                                seed('C2', 'grant', 0, sensitive_consent=False,
                                     cross_border_consent=True)])
                 .advance_watermark_to(5)
                 .add_elements([consent('C1', 'withdraw', 10)])
                 .advance_watermark_to(15)
                 .add_elements([TimestampedValue(('C1', again), 30),
                                TimestampedValue(('C2', sensitive), 31),
                                # a new customer who consents before their first row: none
                                consent('C3', 'grant', 32)])
                 .advance_watermark_to(40))
    # C1 was retracted and consents again: all its rows; C2's rows moved without their
    # sensitive fields and now may carry them
    check(stream, [], [('C1', TABLES, 'consent_withdrawn', 10)], snapshot_at=1,
          ordered=ordered, regained=[('C1', 'rows', 30), ('C2', 'sensitive', 31)])


@pytest.mark.parametrize('before, after, expected', [
    ((None, True), (None, True), None),
    (('no_consent', False), (None, False), 'rows'),
    (('consent_withdrawn', False), (None, True), 'rows'),
    ((None, False), (None, True), 'sensitive'),
    ((None, True), ('consent_withdrawn', False), None),   # a retraction, not a backfill
    (('erasure_requested', False), ('erasure_requested', False), None),
])
def test_what_a_customer_regains(before, after, expected):
    from transforms.consent.events import regained
    from transforms.consent.rules import Decision
    assert regained(Decision(*before), Decision(*after)) == expected
