"""Watch the seller's change feeds: files that land in a directory or a gs:// prefix, each read
once, as an unbounded source whose watermark follows the events' commit times.

``WatchFeeds`` is one splittable DoFn (as Beam's ``PeriodicImpulse`` is) that, every
``interval`` seconds, lists each feed's pattern and reads the files it has not read (JSON Lines,
one event a line, or Avro, one a record), in name order. Each look emits what it releases as
``Released`` batches of ``FeedEvent``s (at most ``RELEASE_BATCH`` each), timestamped with
their first commit time (a change's ``committed_at``, a consent event's ``at``), each with
the time up to which everything is now released.

The watermark says "no event committed before this is still to come". Per feed it is the latest
commit time read minus ``lateness`` (files land in commit order, give or take that much), and
once a feed has brought no new file for ``idle`` seconds, the wall clock minus ``lateness`` (a
quiet feed must not hold the other back); the source's watermark is the least of its feeds',
never moving back. Events are held in the source and released in commit-time order once the
watermark passes them, so that steps after it see a withdrawal before any change committed
after it, however the two feeds' files land (within ``lateness``). This is what makes the
order hold on a local runner: Beam's FnApiRunner fires the event-time timers of a keyed step
fused with its source at the end of each bundle, whatever the source's watermark (measured
with Beam 2.77), so ``transforms.stream.consent`` cannot wait for the watermark there; on
Dataflow it does, and both hold. One source reads both the data and the consent feeds: the
FnApiRunner runs a source and the keyed steps after it in real time only when nothing is
flattened in between (two sources flattened ran to their end before the next step).

Every file is read once per run; a restarted stream reads them all again (the consent events
rebuild each customer's state) and ``transforms.stream.epochs`` commits nothing twice. A watcher
that
stops emits ``EndOfFeeds`` last.
"""

import dataclasses
import datetime
import decimal
import heapq
import itertools
import json
import logging
import re
import threading
import time
from typing import Optional, Sequence, Tuple, Union

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.runners.sdf_utils import RestrictionTrackerView
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from transforms.stream.changes import (Change, ChangeProblem, JsonNumber, NotAChange, TimeRules,
                               parse_change)
from transforms.consent.events import ConsentEvent, parse_consent_event

__all__ = ['BACKFILL_FILES', 'DRAIN', 'EndOfFeeds', 'Feed', 'FeedEvent', 'FileRead', 'Released',
           'ReleasedUpTo', 'WatchFeeds', 'feed_root', 'parse_json_event', 'read_feed_file',
           'renamed_for_feeds']

KINDS = ('changes', 'consent', 'registry', 'erasures')
# Set (by a signal handler of the launcher, on the local runner) to stop the watchers at their
# next look: they release what they hold and end with EndOfFeeds, so the open epoch commits.
DRAIN = threading.Event()
# The snapshot's consent registry and erasure list are read once, at the start, as consent
# events at their own times: the stream's consent picture starts where the batch's was.
SEEDS = ('registry', 'erasures')
_EXACT = json.JSONDecoder(parse_float=JsonNumber, parse_int=JsonNumber)  # made once: it
# costs a third
MAX_DEPTH = 64  # objects and lists nested deeper are no change of a row
_BOM = b'\xef\xbb\xbf'
_SURROGATE = re.compile(r'\\u[dD][89a-fA-F]')  # an escape of half a surrogate pair
BACKFILL_FILES = 'backfill-*.jsonl'  # what novation backfill lands in stream.backfill
RELEASE_BATCH = 20_000  # events a batch: steps after the source pay per batch, not per event


@dataclasses.dataclass(frozen=True)
class Feed:
    """A feed: its name, the glob its files match, and what they hold: changes or consent
    (watched), or the consent registry or erasure list (CSV as the batch reads them, read
    once at the start); ``rules``: how its times are read (``stream.time_unit``, ...)."""
    name: str
    pattern: str
    kind: str
    columns: tuple = ()  # registry and erasure list: consent.columns
    rules: TimeRules = TimeRules()

    def name_of(self, path: str) -> str:
        """How manifests, dead letters and a restart name a file of this feed: the feed's
        name, then the file's path under the feed's root (the pattern's directory before any
        wildcard). The acquirer sees none of the seller's directories, and a feed whose root
        moved resumes alike."""
        root = feed_root(self.pattern)
        rest = path[len(root):] if root and path.startswith(root) else path.rsplit('/', 1)[-1]
        return f'{self.name}/{rest.lstrip("/")}'


def renamed_for_feeds(path: str, feeds) -> str:
    """A feed file's name as ``Feed.name_of`` gives it, from a name a restarted stream finds
    in an older epoch's manifest (which named files by their full path)."""
    if any(path.startswith(f'{feed.name}/') for feed in feeds):
        return path
    for feed in feeds:
        root = feed_root(feed.pattern)
        if root and path.startswith(root):
            return feed.name_of(path)
    return path


def feed_root(pattern: str) -> str:
    """The directory of a feed's pattern before its first wildcard, with its last ``/``."""
    fixed = pattern[:min((i for i in (pattern.find(c) for c in '*?[') if i >= 0),
                         default=len(pattern))]
    return fixed[:fixed.rfind('/') + 1]


@dataclasses.dataclass(frozen=True)
class EndOfFeeds:
    """The last item of a stream that stops (at cut-over): steps after it finish what is
    open. ``at``: when, in microseconds."""
    at: int


@dataclasses.dataclass(frozen=True)
class ReleasedUpTo:
    """Every event committed at or before ``at`` (microseconds) has been released: epochs that
    end by then can be committed."""
    at: int


@dataclasses.dataclass(frozen=True)
class Released:
    """Events the source releases together, in commit order (problems, lines that are no
    change and files read, which have no time, first), and the mark that holds once they are
    through (None from a source that leaves the order to the watermark: Pub/Sub)."""
    events: tuple
    up_to: Optional[ReleasedUpTo]


@dataclasses.dataclass(frozen=True)
class FileRead:
    """A feed file was read whole: its physical ``lines`` and the ``events`` they gave (a
    Canal message gives one a row): the count every outcome of the file must add up to."""
    feed: str
    path: str
    lines: int
    events: int
    at: Optional[int] = None  # its latest event's time: it joins that event's epoch

    @property
    def time(self) -> None:
        return None  # released at once: it orders nothing


@dataclasses.dataclass(frozen=True)
class FeedEvent:
    """One event of a feed file, read: a Change, a ConsentEvent, a line that is no change or
    the problem with it; ``path``: its file as ``Feed.name_of`` names it; ``index``: its
    place among the events of its line."""
    feed: str
    path: str
    line: int
    event: Union[Change, ConsentEvent, ChangeProblem, NotAChange]
    index: int = 0

    @property
    def time(self) -> Optional[int]:
        """Its commit time in microseconds (None for a problem or a line that is no change)."""
        if isinstance(self.event, Change):
            return self.event.committed_at
        if isinstance(self.event, ConsentEvent):
            return self.event.at
        return None

    @property
    def rank(self) -> int:
        """At one commit time, consent events first: a change committed in the millisecond of
        its customer's grant is decided with it, as the batch decides it."""
        return 1 if isinstance(self.event, Change) else 0


class WatchFeeds(beam.PTransform):
    """Every event of ``feeds``' files, once, as they appear, until ``stop_at`` (seconds since
    the epoch; None: never)."""

    def __init__(self, feeds: Sequence[Feed], *, interval: float = 1.0, lateness: float = 2.0,
                 idle: float = 5.0, stop_at: Optional[float] = None):
        super().__init__()
        for feed in feeds:
            assert feed.kind in KINDS, feed.kind
        self._fn = _WatchFn(tuple(feeds), interval, lateness, idle)
        self._stop_at = stop_at

    def expand(self, pbegin):
        return (pbegin
                | 'Start' >> beam.Create([self._stop_at])
                | 'Watch' >> beam.ParDo(self._fn))


def read_seed_file(feed: Feed, path: str):
    """The consent events of the snapshot's registry (a grant at granted_at, a withdrawal at
    withdrawn_at) or erasure list (an erasure at requested_at); a missing time counts as the
    start of time."""
    from transforms.consent.gate import ERASURE_FIELDS, REGISTRY_FIELDS, read_consent_file
    fields = REGISTRY_FIELDS if feed.kind == 'registry' else ERASURE_FIELDS
    line, name = 0, feed.name_of(path)
    for table in read_consent_file(path, fields, f'consent {feed.kind}', columns=feed.columns):
        for row in table.to_pylist():
            line += 1
            if feed.kind == 'erasures':
                yield FeedEvent(feed.name, name, line, ConsentEvent(
                    row['subject_id'], 'erasure', None, _micros(row['requested_at']), line,
                    seed=True))
                continue
            if row['granted']:
                yield FeedEvent(feed.name, name, line, ConsentEvent(
                    row['subject_id'], 'grant', row['purpose'], _micros(row['granted_at']),
                    line, sensitive_consent=row['sensitive_consent'],
                    cross_border_consent=row['cross_border_consent'], seed=True))
            if row['withdrawn_at'] is not None:
                yield FeedEvent(feed.name, name, line, ConsentEvent(
                    row['subject_id'], 'withdraw', row['purpose'],
                    _micros(row['withdrawn_at']), line, seed=True))


def _avro_events(feed, path, read_at):
    import fastavro
    with FileSystems.open(path) as f:
        try:
            reader = fastavro.reader(f)
        except Exception:  # fastavro's message may quote bytes of the file
            yield 1, [ChangeProblem('not an Avro object container file')]
            return
        number = 0
        try:
            for number, record in enumerate(reader, 1):
                yield number, _parsed(feed, _json_like(record), read_at)
        except Exception:  # a damaged block: the records after it cannot be read
            yield number + 1, [ChangeProblem('the Avro file is damaged after this record: '
                                             'the records after it cannot be read')]


def _json_like(value):
    """An Avro value as the JSON of the same event would hold it: decimals and times as their
    text (exact), bytes as hex."""
    if isinstance(value, dict):
        return {k: _json_like(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_like(v) for v in value]
    if isinstance(value, (decimal.Decimal,)):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _micros(moment) -> int:
    """Microseconds since the epoch of an aware datetime (None: the start of time)."""
    if moment is None:
        return 0
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds


NOT_UTF8 = ('the line is not UTF-8 (a feed file is read as UTF-8; convert a GBK feed before '
            'it lands)')
_LOG = logging.getLogger('novation')


def read_feed_file(feed: Feed, path: str, read_at: Optional[int] = None):
    """The FeedEvents of one file, then its FileRead: JSON Lines, line by line, or an Avro
    object container file (``.avro``), record by record (``line`` is the record number).
    Every line gives at least one event: a blank line is a ``NotAChange('blank')``."""
    read_at = int(time.time() * 10**6) if read_at is None else read_at
    lines = events = 0
    if path.endswith('.avro'):
        numbered = _avro_events(feed, path, read_at)
    else:
        numbered = _json_lines(feed, path, read_at)
    latest, not_utf8, name = None, 0, feed.name_of(path)
    for number, parsed in numbered:
        lines += 1
        for index, event in enumerate(parsed):
            events += 1
            not_utf8 += isinstance(event, ChangeProblem) and event.problem == NOT_UTF8
            item = FeedEvent(feed.name, name, number, event, index)
            if item.time is not None:
                latest = item.time if latest is None else max(latest, item.time)
            yield item
    if not_utf8 and not_utf8 * 2 > lines:  # the file, not a line, is in another encoding
        _LOG.warning('warning: feed %s: %d of %d lines of %s are not UTF-8 (each is a dead '
                     'letter): a GBK feed? convert it to UTF-8 before it lands', feed.name,
                     not_utf8, lines, name)
    yield FileRead(feed.name, name, lines, events, latest)


def _json_lines(feed, path, read_at):
    with FileSystems.open(path) as f:
        for number, line in enumerate(f, 1):
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM):]  # a UTF-8 byte-order mark, as in the batch's exports
            yield number, ([NotAChange('blank')] if not line.strip() else
                           parse_json_event(feed, line, read_at))


def parse_json_event(feed: Feed, data: bytes, read_at: Optional[int] = None) -> list:
    """The events of one JSON value (a line, a Pub/Sub message): Changes or a ConsentEvent,
    lines that are no change, or the ChangeProblem with it; numbers keep their exact text, as
    in the batch's JSON Lines reader. No line can stop the stream: nesting too deep, text
    that is not UTF-8 (or escapes no UTF-8 can hold) is a problem."""
    read_at = int(time.time() * 10**6) if read_at is None else read_at
    try:
        text = data.decode('utf-8')
        raw = _EXACT.decode(text)
    except UnicodeDecodeError:
        return [ChangeProblem(NOT_UTF8)]
    except (ValueError, RecursionError):
        return [ChangeProblem('not a JSON value on one line')]
    if _SURROGATE.search(text) or text.count('{') + text.count('[') > MAX_DEPTH:
        problem = _unsafe(raw)
        if problem:
            return [ChangeProblem(problem)]
    return _parsed(feed, raw, read_at)


def _parsed(feed, raw, read_at) -> list:
    if feed.kind == 'changes':
        return parse_change(raw, read_at=read_at, rules=feed.rules)
    if not isinstance(raw, dict):
        return [ChangeProblem('the consent event is not a JSON object')]
    return [parse_consent_event(raw, read_at=read_at, rules=feed.rules)]


def _unsafe(value) -> Optional[str]:
    """What makes a decoded value unsafe to carry on: nesting deeper than MAX_DEPTH, or a
    lone surrogate escape (text that no UTF-8 file can hold), walked without recursion."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f'the value is nested more than {MAX_DEPTH} deep'
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth + 1) for k in item)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            try:
                item.encode('utf-8')
            except UnicodeEncodeError:
                return 'a string holds a lone surrogate escape (\\ud800 to \\udfff alone), ' \
                       'which is no text'
    return None


class _Ticks(RestrictionProvider):
    """Poll ticks 0, 1, 2, ...: unbounded (the watcher itself stops at its stop time)."""

    def initial_restriction(self, stop_at):
        return OffsetRange(0, 2**62)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()

    def truncate(self, element, restriction):
        return None  # on drain, stop watching


class _WatchFn(beam.DoFn):
    def __init__(self, feeds, interval, lateness, idle):
        self._feeds = feeds
        self._interval = interval
        self._lateness = int(lateness * 10**6)
        self._idle = int(idle * 10**6)
        self._read = None   # files read by this worker
        self._state = None  # feed -> (latest commit time, wall time of its last new file)
        self._held = None   # heap of (commit time, rank, arrival number, FeedEvent) held
        self._arrivals = None  # keeps events of the same time in arrival order

    def setup(self):
        self._read = set()
        now = int(time.time() * 10**6)
        # the watched feeds' watermarks (a seed is read whole before any of them matters)
        self._state = {feed.name: (None, now) for feed in self._feeds if feed.kind not in SEEDS}
        self._held = []
        self._arrivals = itertools.count()

    @beam.DoFn.unbounded_per_element()
    def process(self, stop_at, tracker=beam.DoFn.RestrictionParam(_Ticks()),
                watermark=beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())):
        assert isinstance(tracker, RestrictionTrackerView)
        tick = tracker.current_restriction().start
        if not tracker.try_claim(tick):
            return
        started = time.time()
        problems = []
        for feed in self._feeds:
            seed = feed.kind in SEEDS
            if seed and feed.pattern in self._read:
                continue  # read once
            for path in [feed.pattern] if seed else self._new_files(feed):
                latest = None if seed else self._state[feed.name][0]
                for item in (read_seed_file if seed else read_feed_file)(feed, path):
                    t = item.time
                    if t is None:  # a problem, a line that is no change, a file read:
                        problems.append(item)  # counted now, they order nothing
                        continue
                    latest = t if latest is None else max(latest, t)
                    heapq.heappush(self._held, (t, item.rank, next(self._arrivals), item))
                self._read.add(path)
                if not seed:
                    self._state[feed.name] = (latest, self._now())
        stopping = DRAIN.is_set() or (stop_at is not None and time.time() >= stop_at)
        mark = self._advance(watermark)
        batch = problems
        while self._held and (stopping or self._held[0][0] <= mark):
            t, _, _, item = heapq.heappop(self._held)
            batch.append(item)
            if len(batch) >= RELEASE_BATCH and self._held and self._held[0][0] > t:
                yield self._released(batch, t)  # all of time t is in it
                batch = []
        yield self._released(batch, mark)
        if stopping:
            tracker.try_claim(tracker.current_restriction().stop - 1)  # nothing is left
            yield TimestampedValue(EndOfFeeds(self._now()), Timestamp(micros=self._now()))
            watermark.set_watermark(MAX_TIMESTAMP)
            return
        # Wait out the interval here: a local runner resumes a deferred remainder at once,
        # whatever delay it is given (Dataflow would honour it).
        time.sleep(max(0.0, started + self._interval - time.time()))
        tracker.defer_remainder()

    def _released(self, events, up_to):
        first = next((e.time for e in events if e.time is not None), None)
        return TimestampedValue(Released(tuple(events), ReleasedUpTo(up_to)),
                                Timestamp(micros=up_to if first is None else first))

    def _new_files(self, feed) -> Tuple[str, ...]:
        matched = FileSystems.match([feed.pattern])[0].metadata_list
        return tuple(sorted(m.path for m in matched if m.path not in self._read))

    def _now(self) -> int:
        return int(time.time() * 10**6)

    def _advance(self, watermark):
        now = self._now()
        marks = []
        for latest, last_file in self._state.values():
            if now - last_file >= self._idle:
                marks.append(now - self._lateness)  # a quiet feed follows the clock
            elif latest is None:
                marks.append(0)  # nothing read yet: hold until it is quiet or brings events
            else:
                marks.append(latest - self._lateness)
        candidate = Timestamp(micros=max(0, min(marks, default=now - self._lateness)))
        current = watermark.current_watermark()
        if current is None or candidate > current:
            watermark.set_watermark(candidate)
            current = candidate
        return current.micros
