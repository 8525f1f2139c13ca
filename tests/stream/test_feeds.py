"""WatchFeeds on the local runner, in real time: files that land while the pipeline runs are
read once each, events come out in commit order once the watermark passes them, and through
ConsentInOrder a withdrawal that lands after a later change still refuses it."""

import json
import os
import threading
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
import pytest

from config.loader import Purpose, Transfer
from transforms.stream.changes import Change
from transforms.consent.events import ConsentEvent
from transforms.stream.feeds import EndOfFeeds, Feed, FeedEvent, Released, WatchFeeds
from transforms.stream.consent import Batch, ChangeEvent, ConsentInOrder, Decided, Routed

pytestmark = pytest.mark.slow  # each runs a streaming pipeline for a few seconds


def collect(path):
    """A step's function that appends what it gets to ``path`` as JSON lines (the runner
    works on pickled copies of the pipeline's functions, so a list here would stay empty)."""
    def append(item):
        with open(path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(item) + '\n')
    return append


def collected(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as f:
        return [tuple(tuple(x) if isinstance(x, list) else x for x in json.loads(line))
                for line in f]


def land(directory, name, events):
    """Write a feed file as a CDC tool would: whole, then renamed into the watched place."""
    temp = os.path.join(directory, f'.{name}')
    with open(temp, 'w', encoding='utf-8') as f:
        f.write(''.join(e if isinstance(e, str) else json.dumps(e) + '\n' for e in events))
    os.rename(temp, os.path.join(directory, f'{name}.jsonl'))


def now_ms():
    return int(time.time() * 1000)


def change(position, committed_at, subject='C1'):
    return {'table': 'customers', 'op': 'u', 'row': {'customer_id': subject},
            'committed_at': committed_at, 'position': position}


def released(item):
    """The events of a ``Released`` batch, one by one; the end of the feeds as it is."""
    return item.events if isinstance(item, Released) else [item]


def feeds(tmp_path):
    for kind in ('changes', 'consent'):
        os.makedirs(tmp_path / kind, exist_ok=True)
    return [Feed('data', str(tmp_path / 'changes' / '*.jsonl'), 'changes'),
            Feed('consent', str(tmp_path / 'consent' / '*.jsonl'), 'consent')]


def run_while(tmp_path, writer, build, seconds, **watch):
    """Run ``build(events, sink)`` on WatchFeeds for ``seconds`` while ``writer`` lands files;
    what reached ``sink``."""
    sink = collect(str(tmp_path / 'collected.jsonl'))
    thread = threading.Thread(target=writer, daemon=True)
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(streaming=True))
    events = pipeline | WatchFeeds(feeds(tmp_path), stop_at=time.time() + seconds, **watch)
    build(events, sink)
    thread.start()
    pipeline.run().wait_until_finish()
    thread.join()
    return collected(str(tmp_path / 'collected.jsonl'))


def test_files_that_land_are_read_once_each_in_commit_order(tmp_path):
    os.makedirs(tmp_path / 'changes')
    start = now_ms()
    land(tmp_path / 'changes', 'early', [change(1, start)])  # there before the stream starts

    def writer():
        time.sleep(0.3)
        land(tmp_path / 'changes', 'b', [change(3, start + 30), '\n', 'not json\n'])
        time.sleep(0.3)
        land(tmp_path / 'changes', 'a', [change(2, start + 20)])  # lands later, committed earlier

    def build(events, sink):
        _ = events | beam.FlatMap(released) | beam.Map(lambda e: sink(
            (os.path.basename(e.path), e.line, e.event.position[0]
             if isinstance(e.event, Change) else getattr(e.event, 'problem', None) or
             e.event.kind, time.time()))
            if isinstance(e, FeedEvent) else sink(('end', 0, 'end', time.time()))
            if isinstance(e, EndOfFeeds) else None)

    stop_at = time.time() + 4
    got = run_while(tmp_path, writer, build, 4, interval=0.1, lateness=0.5, idle=0.5)
    assert got[-1][0] == 'end'  # the watcher's last item
    got = got[:-1]
    problems = [g[:3] for g in got if isinstance(g[2], str)]
    assert problems == [('b.jsonl', 2, 'blank'), ('b.jsonl', 3, 'not a JSON value on one line')]
    assert [g[:3] for g in got if not isinstance(g[2], str)] == [
        ('early.jsonl', 1, 1), ('a.jsonl', 1, 2), ('b.jsonl', 1, 3)]
    # released by the watermark while the stream ran, not by the flush when it stopped
    assert all(g[3] < stop_at for g in got)


def test_a_withdrawal_that_lands_after_a_later_change_still_refuses_it(tmp_path, keys_dir):
    transfer = Transfer('S', 'A', (Purpose('credit', 'consent'),), 'CN', 'CN')

    def writer():
        land(tmp_path / 'consent', 'grant', [{'subject_id': 'C1', 'event': 'grant',
                                              'purpose': 'credit', 'at': now_ms() - 1000}])
        time.sleep(0.2)
        land(tmp_path / 'changes', 'u1', [change(1, now_ms())])
        time.sleep(0.2)
        withdrawn = now_ms()
        time.sleep(0.2)
        land(tmp_path / 'changes', 'u2', [change(2, now_ms())])  # committed after it ...
        time.sleep(0.3)
        land(tmp_path / 'consent', 'withdraw', [{'subject_id': 'C1', 'event': 'withdraw',
                                                 'purpose': 'credit', 'at': withdrawn}])

    def key(e):
        if isinstance(e.event, Change):
            return e.event.row['customer_id'], ChangeEvent(e.event, e.path, e.line)
        return e.event.subject, e.event

    def routed(item):
        if isinstance(item, EndOfFeeds):
            return item
        return Routed(tuple(key(e) for e in item.events
                            if isinstance(e, FeedEvent) and
                            isinstance(e.event, (Change, ConsentEvent))))

    def build(events, sink):
        out = (events | beam.Map(routed) | ConsentInOrder(transfer, ('customers',),
                                                       keys_path=keys_dir, run_id='s1')
               | beam.FlatMap(lambda o: o.items if isinstance(o, Batch) else []))
        _ = out | beam.Map(
            lambda o: sink(('decided', o.event.change.position[0], o.reason)
                           if isinstance(o, Decided) else ('retracted', o.tables, o.reason)))

    got = run_while(tmp_path, writer, build, 3.5, interval=0.1, lateness=1.0, idle=1.0)
    assert got == [('decided', 1, None),
                   ('retracted', ('customers',), 'consent_withdrawn'),
                   ('decided', 2, 'consent_withdrawn')]


def test_a_feed_file_in_gbk_is_named_once_with_the_encoding(tmp_path, caplog):
    from transforms.stream.feeds import NOT_UTF8, read_feed_file
    path = tmp_path / 'changes.jsonl'
    lines = [json.dumps({'table': 't', 'op': 'c', 'row': {'name': f'客户{i}'}},
                        ensure_ascii=False) for i in range(4)]
    path.write_bytes('\n'.join(lines).encode('gbk') + b'\n')
    feed = Feed('data', str(tmp_path / '*.jsonl'), 'changes')
    with caplog.at_level('WARNING', logger='novation'):
        out = list(read_feed_file(feed, str(path), read_at=0))
    assert [e.event.problem for e in out[:-1]] == [NOT_UTF8] * 4
    assert out[-1].lines == 4
    [warning] = [r.getMessage() for r in caplog.records]
    assert '4 of 4 lines' in warning and 'GBK' in warning and '客户' not in warning


@pytest.mark.parametrize('pattern,path,name', [
    ('/seller/cdc/changes/*.jsonl', '/seller/cdc/changes/a.jsonl', 'data/a.jsonl'),
    ('/seller/cdc/**/*.jsonl', '/seller/cdc/2026/12/07/a.jsonl', 'data/2026/12/07/a.jsonl'),
    ('gs://seller-cdc/changes/part-[0-9]*.avro', 'gs://seller-cdc/changes/part-1.avro',
     'data/part-1.avro'),
    ('/seller/cdc/changes/file?.jsonl', '/seller/cdc/changes/file1.jsonl', 'data/file1.jsonl'),
    ('/seller/consent/registry.csv', '/seller/consent/registry.csv', 'data/registry.csv'),
    ('changes/*.jsonl', 'changes/a.jsonl', 'data/a.jsonl'),
    ('*.jsonl', 'a.jsonl', 'data/a.jsonl'),
    ('/seller/cdc/changes/*.jsonl', '/elsewhere/b.jsonl', 'data/b.jsonl'),  # only its name
])
def test_a_feed_file_is_named_by_its_feed_and_its_path_under_the_feed_root(pattern, path, name):
    from transforms.stream.feeds import Feed
    assert Feed('data', pattern, 'changes').name_of(path) == name


@pytest.mark.parametrize('path,name', [
    ('/seller/cdc/changes/a.jsonl', 'data/a.jsonl'),       # an older epoch's full path
    ('/seller/consent/events/w.jsonl', 'consent/w.jsonl'),
    ('data/a.jsonl', 'data/a.jsonl'),                      # already a feed's name
    ('/unknown/x.jsonl', '/unknown/x.jsonl'),              # no feed's: left as it was
])
def test_a_restart_reads_an_older_manifests_full_paths_as_feed_names(path, name):
    from transforms.stream.feeds import Feed, renamed_for_feeds
    feeds = [Feed('data', '/seller/cdc/changes/*.jsonl', 'changes'),
             Feed('consent', '/seller/consent/events/*.jsonl', 'consent')]
    assert renamed_for_feeds(path, feeds) == name
