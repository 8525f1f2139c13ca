"""Beam counters of what a run reads, writes and refuses, per table (and reason), so a
runner's own console (Dataflow's job page, its monitoring API) shows a run's progress in the
manifest's terms while it runs.

Counter names: ``<table>/rows_read``, ``<table>/rows_written`` and
``<table>/dead_letters/<reason>`` for a batch; ``<table>/changes_delivered`` and
``<table>/dead_letters/<reason>`` for a stream's epochs, all in the namespace ``novation``.
They are a view for operators: the manifest's counts, checked for conservation, stay the record.
"""

import functools

from apache_beam.metrics import Metrics

__all__ = ['NAMESPACE', 'count']

NAMESPACE = 'novation'


@functools.lru_cache(maxsize=None)
def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def count(table: str, what: str, n: int = 1) -> None:
    """Add ``n`` to the counter ``<table>/<what>`` (in a DoFn: Beam attributes it to the step)."""
    if n:
        _counter(f'{table}/{what}').inc(n)
