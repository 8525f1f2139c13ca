"""A change or consent feed on Pub/Sub (Dataflow): one event a message, its data the JSON object
a feed file's line would hold.

``ReadSubscription`` reads a subscription with Beam's ``ReadFromPubSub`` and releases its events
as ``Released`` batches, one per bundle, with no mark: the order is left to the watermark.
Dataflow's Pub/Sub watermark follows the messages' publish times, or the commit times if the
publisher sets them in an attribute (``stream.timestamp_attribute``), so the consent step and
the epochs wait for the watermark to pass an event's commit time plus the allowed lateness
(a message is published at most that long after its commit) before they decide and commit.
A message that is not a JSON event is a dead letter, never a stopped stream.
"""

from typing import Optional

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.stream.feeds import Feed, FeedEvent, Released, parse_json_event

__all__ = ['ReadSubscription', 'is_subscription', 'message_events']


def is_subscription(pattern: str) -> bool:
    """Whether a feed's place is a Pub/Sub subscription (projects/P/subscriptions/S)."""
    return pattern.startswith('projects/')


def message_events(feed: Feed, data: bytes) -> list:
    """The FeedEvents of one message's data (pure); their place is the subscription (a
    message has no line)."""
    return [FeedEvent(feed.name, feed.pattern, None, event, index)
            for index, event in enumerate(parse_json_event(feed, data))]


class ReadSubscription(beam.PTransform):
    """The events of ``feed`` (its pattern a subscription), as ``Released`` batches."""

    def __init__(self, feed: Feed, timestamp_attribute: Optional[str] = None):
        super().__init__()
        assert is_subscription(feed.pattern), feed.pattern
        self._feed = feed
        self._timestamp_attribute = timestamp_attribute

    def expand(self, pbegin):
        return (pbegin
                | 'Read' >> beam.io.ReadFromPubSub(
                    subscription=self._feed.pattern,
                    timestamp_attribute=self._timestamp_attribute)
                | 'Parse' >> beam.FlatMap(lambda data, feed: message_events(feed, data),
                                         self._feed)
                | 'Batch' >> beam.ParDo(_BatchInBundle()))


class _BatchInBundle(beam.DoFn):
    """A bundle's events as one ``Released`` batch, at its earliest event's timestamp (where
    Beam's BatchElements would put it at the end of time, behind every timer after it)."""

    def start_bundle(self):
        self._events, self._first = [], None

    def process(self, event, timestamp=beam.DoFn.TimestampParam):
        self._events.append(event)
        if self._first is None or timestamp < self._first:
            self._first = timestamp

    def finish_bundle(self):
        if self._events:
            yield WindowedValue(Released(tuple(self._events), None),
                                Timestamp.of(self._first), [GlobalWindow()])
        self._events, self._first = [], None
