"""Epochs on a stream: the Beam steps that turn decided changes into committed epochs.

``Deliver`` conforms, suppresses and masks each batch where it was decided
(``transforms.stream.deliver``); ``Commit`` (one key: the epochs form one chain) buffers the
parts, encrypted, and commits an epoch per window of commit time or of ``max_rows`` changes
(``transforms.stream.chain`` writes its files and manifest), and the cut-over at the end.
``prepare_items`` and ``commit_parts`` are the plain functions the DoFns run, which a
stream's replay runs too.
"""

import collections
import dataclasses
import itertools
import logging
import time
from typing import Optional, Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import BytesCoder, PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from transforms.common import metrics
from transforms.common.reasons import DeadLetter
from transforms.keys.crypto import StateCipher
from transforms.stream.chain import (
    Committed,
    Trail,
    commit_epoch,
    epoch_line,
    manifest_sha256,
    retraction_id,
    write_cutover,
)
from transforms.stream.consent import Batch, Counted, Decided, Regained, Retraction
from transforms.stream.deliver import deliver_changes
from transforms.stream.feeds import EndOfFeeds, FileRead, ReleasedUpTo

__all__ = ['CommitEpochs', 'Prepared']
_PROGRESS = logging.getLogger('novation.progress')


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


def _merged_held(entries) -> list:
    counts = collections.Counter()
    for table, column, n in entries:
        counts[(table, column)] += n
    return [(table, column, n) for (table, column), n in sorted(counts.items())]


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
