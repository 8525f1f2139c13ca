"""Feeds on Pub/Sub (Dataflow): a message's event, batches at their earliest event's time, and
the stream after its sources on a runner that honours watermarks (TestStream): the consent
step and the epochs wait for the watermark plus the lateness, whatever order batches come in,
and a drained stream commits what is open and writes its cut-over manifest."""

import json
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream as EventStream  # not a test class
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
import pytest

from pipelines.stream import decide_and_commit
from transforms.stream.changes import Change, ChangeProblem
from transforms.consent.events import ConsentEvent
from transforms.stream.feeds import Feed, FeedEvent, Released
from transforms.stream.pubsub import _BatchInBundle, is_subscription, message_events

from tests.stream.test_epochs import ROW, T, dataclasses_replace_keys, table  # noqa: F401 (a fixture)

SUBSCRIPTION = 'projects/seller-cdc/subscriptions/novation-changes'
CHANGES = Feed('data', SUBSCRIPTION, 'changes')
CONSENT = Feed('consent', 'projects/seller-cdc/subscriptions/novation-consent', 'consent')
S = 10**6


@pytest.mark.parametrize('feed, data, expected', [
    (CHANGES, b'{"op": "u", "after": {"customer_id": "C1"}, "source": {"table": "customers", '
              b'"ts_ms": 1767225600000, "lsn": 7}}', ('customers', 'u', 'lsn:7')),
    (CHANGES, b'{"table": "contracts", "op": "d", "row": {"contract_id": "L1"}, '
              b'"committed_at": 1767225600000, "position": 3}', ('contracts', 'd', 'seq:3')),
    (CONSENT, b'{"subject_id": "C1", "event": "withdraw", "purpose": "credit_management", '
              b'"at": 1767225600000, "position": 1}', ('C1', 'withdraw')),
    (CHANGES, b'{"op": "u", "source": {"table"', 'not a JSON value'),
    (CHANGES, b'\xff\xfe', 'the line is not UTF-8'),
    (CHANGES, b'[1, 2]', 'not a JSON object'),
])
def test_a_message_is_the_event_its_data_holds(feed, data, expected):
    [item] = message_events(feed, data)
    assert (item.feed, item.path, item.line) == (feed.name, feed.pattern, None)
    event = item.event
    if isinstance(event, Change):
        assert (event.table, event.op, event.position_text) == expected
        assert event.committed_at == 1_767_225_600 * S
    elif isinstance(event, ConsentEvent):
        assert (event.subject, event.event) == expected
    else:
        assert isinstance(event, ChangeProblem) and expected in event.problem
        assert '{' not in event.problem  # no quoted data


@pytest.mark.parametrize('pattern, subscription', [
    (SUBSCRIPTION, True), ('feeds/changes/*.jsonl', False), ('gs://b/changes/*.jsonl', False)])
def test_a_feed_on_pub_sub_is_named_by_its_subscription(pattern, subscription):
    assert is_subscription(pattern) is subscription


def test_a_bundles_events_are_one_batch_at_its_earliest_events_time():
    fn = _BatchInBundle()
    fn.start_bundle()
    events = message_events(CHANGES, b'{}') + message_events(CHANGES, b'[]')
    for event, at in zip(events, (7, 3)):
        assert list(fn.process(event, timestamp=Timestamp(at)) or ()) == []
    [out] = list(fn.finish_bundle())
    assert out.value == Released(tuple(events), None) and out.timestamp == Timestamp(3)
    fn.start_bundle()
    assert list(fn.finish_bundle() or ()) == []  # an empty bundle makes no batch


def _change(subject, at, position, **update):
    return FeedEvent('data', SUBSCRIPTION, None, Change(
        'customers', 'u', {**ROW, 'customer_id': subject, **update}, T + at * S, 'lsn',
        (position,), f'lsn:{position}'))


def _consent(subject, kind, at, position):
    extra = {'sensitive_consent': True, 'cross_border_consent': True} if kind == 'grant' else {}
    return FeedEvent('consent', CONSENT.pattern, None, ConsentEvent(
        subject, kind, 'credit_management', T + at * S, position, **extra))


def _released(published, *events):
    """A batch of a bundle, timestamped as ReadSubscription makes it: its earliest message's
    publish time (second ``published``)."""
    return TimestampedValue(Released(tuple(events), None), (T + published * S) / S)


def watermark_steps(events, start, stop):
    """The watermark advanced a quarter second at a time, as a live source's moves. This runner
    does not hold a step's output watermark for its pending timers (Dataflow does), so a timer
    set by a timer would fire only after a jump had passed the steps after it."""
    at = start
    while at < stop:
        at += 0.25
        events = events.advance_watermark_to((T + at * S) / S)
    return events


def test_on_watermarks_consent_and_epochs_wait_for_the_watermark_plus_the_lateness(
        table, keys_dir, tmp_path):  # noqa: F811
    config = dataclasses_replace_keys(table, keys_dir)
    stream_dir = str(tmp_path / 'stream')
    events = (EventStream()
              .add_elements([_released(0, _consent('C1', 'grant', 0, 1),
                                       _consent('C2', 'grant', 0, 2))])
              .add_elements([_released(1, _change('C1', 1, 1))])
              .add_elements([_released(3, _change('C1', 3, 3))]))
    events = watermark_steps(events, 0, 3.5)
    # a withdrawal committed at 2 s, published at 3.6 s (within the lateness of 2 s): the
    # watermark has passed the change at 3 s, but not 3 s + the lateness, so it still waits
    events = (events.add_elements([_released(3.6, _consent('C1', 'withdraw', 2, 3),
                                             _change('C2', 4, 4))]))
    events = watermark_steps(events, 3.5, 7.5)  # [0, 5) s + 2 s of lateness: epoch 1
    events = (events.add_elements([_released(7.6, _change('C2', 2.5, 5))])  # late: the next
              .add_elements([_released(8, _change('C2', 7, 6))]))
    events = watermark_steps(events, 7.5, 20).advance_watermark_to_infinity()  # drained
    with beam.Pipeline(runner=BundleBasedDirectRunner(),
                       options=PipelineOptions(streaming=True)) as p:
        _ = decide_and_commit(p | events, config, run_id='s1', stream_dir=stream_dir,
                              epoch_seconds=5, lateness=2, watermarks=True)
    cutover = json.load(open(os.path.join(stream_dir, 'cutover.json')))
    manifests = [json.load(open(os.path.join(stream_dir, e['manifest'])))
                 for e in cutover['epochs']]
    customers = [m['tables']['customers'] for m in manifests]
    # epoch 1: C1 at 1 s and C2 at 4 s delivered, C1 at 3 s refused, C1 retracted
    assert [c['rows_written'] for c in customers] == [2, 2]
    assert customers[0]['dead_letters'] == {'consent_withdrawn': 1}
    assert [m['retractions'] for m in manifests] == [1, 0]
    assert manifests[1]['previous_manifest_sha256'] is not None
    # each epoch's report beside its manifest, and the stream's over every epoch at cut-over
    for e, m in zip(cutover['epochs'], manifests):
        report = json.load(open(os.path.join(stream_dir, os.path.dirname(e['manifest']),
                                             'report.json'), encoding='utf-8'))
        assert report['totals']['rows_written'] == m['tables']['customers']['rows_written']
        assert report['totals']['retractions'] == m['retractions']
    stream = json.load(open(os.path.join(stream_dir, 'report.json'), encoding='utf-8'))
    # (its pace and lag too: the events here were committed long ago)
    counted = ('epochs', 'rows_written', 'rows_refused', 'refused_by_reason', 'retractions')
    assert {k: stream['totals'][k] for k in counted} == {
        'epochs': 2, 'rows_written': 4, 'rows_refused': 1,
        'refused_by_reason': {'consent_withdrawn': 1}, 'retractions': 1}
    assert os.path.exists(os.path.join(stream_dir, 'report.html'))
