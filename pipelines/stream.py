"""Live changes until cut-over (being built; not yet a `novation` command).

``build_stream(pipeline, config, feeds=..., ...)`` adds the stream to a pipeline as one chain,
which the local runner (Beam's FnApiRunner) runs in real time only without a Flatten:

    WatchFeeds      data and consent feed files, each once, released in commit order
    Route           each event to its customer (the subject key), or a dead letter
    ConsentInOrder  decided by every consent event up to its commit time; retractions
    CommitEpochs    conform, suppress, mask as the batch does; encrypted files and a
                    manifest per epoch, chained by sha256
"""

import apache_beam as beam

from transforms.changes import ChangeProblem
from transforms.epochs import CommitEpochs
from transforms.feeds import EndOfFeeds, WatchFeeds
from transforms.reasons import DeadLetter
from transforms.stream_consent import ConsentInOrder, route

__all__ = ['build_stream']


def build_stream(pipeline, config, *, feeds, run_id: str, stream_dir: str, stop_at=None,
                 epoch_seconds: float = 5.0, interval: float = 1.0, lateness: float = 2.0,
                 idle: float = 5.0, snapshot_at=None):
    """Add the stream to ``pipeline``; returns the PCollection of epoch manifests."""
    tables = {t.name: t for t in config.tables}
    return (pipeline
            | 'Watch' >> WatchFeeds(feeds, interval=interval, lateness=lateness, idle=idle,
                                    stop_at=stop_at)
            | 'Route' >> beam.Map(_routed, tables)
            | 'ConsentInOrder' >> ConsentInOrder(config.transfer, tuple(tables),
                                                 snapshot_at=snapshot_at, ordered=True)
            | 'Epochs' >> CommitEpochs(config=config, run_id=run_id, stream_dir=stream_dir,
                                       seconds=epoch_seconds))


def _routed(item, tables):
    """(key, item) for ConsentInOrder: a customer's events under their subject; a problem,
    as a dead letter, and the end of the feeds under no customer (they pass through)."""
    if isinstance(item, EndOfFeeds):
        return '', item
    routed = route(item, tables)
    if not isinstance(routed, ChangeProblem):
        return routed
    table = routed.table if routed.table in tables else item.feed
    return '', DeadLetter(reason='malformed', stage='read', table=table,
                          source_file=item.path, row=item.line, problem=routed.problem)
