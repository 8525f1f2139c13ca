"""Progress counters of the worker side: rows read, written and refused so far, per process.

Steps of the pipeline count what they finish (``count``); each process reports its running
totals as one log line on the ``novation.progress.report`` logger, at most every
REPORT_SECONDS. The line travels as any worker log line does (in this process, or from a
worker process through Beam's log stream to the runner), and the launcher's display
(``pipelines.progress``) sums the latest report of every process. Counting is on only where the
launcher asked for it (the NOVATION_PROGRESS environment variable, inherited by local worker
processes), so tests and Dataflow workers pay nothing. Reports hold counts and table names,
never a value.
"""

import collections
import json
import logging
import os
import secrets
import threading
import time

__all__ = ['ENABLE', 'MARKER', 'REPORT_SECONDS', 'count', 'enabled', 'flush', 'note', 'reset']

ENABLE = 'NOVATION_PROGRESS'
MARKER = 'progress-report '
REPORT_SECONDS = 1.0
_LOG = logging.getLogger('novation.progress.report')
_LOCK = threading.Lock()
_STATE = {'counts': collections.Counter(), 'sent': 0.0, 'changed': False,
          'process': f'{os.getpid()}-{secrets.token_hex(3)}'}


def enabled() -> bool:
    return os.environ.get(ENABLE) == '1'


def count(kind: str, table: str, n: int = 1, *, nbytes: int = 0) -> None:
    """Add ``n`` to this process's ``kind`` count of ``table`` (kind: read, written, dead,
    registry, duplicates, files); ``nbytes`` of seller files consumed. Reports at most every
    REPORT_SECONDS."""
    if not enabled():
        return
    with _LOCK:
        counts = _STATE['counts']
        counts[kind, table] += n
        if nbytes:
            counts['bytes', table] += nbytes
        _STATE['changed'] = True
        now = time.monotonic()
        if now - _STATE['sent'] < REPORT_SECONDS:
            return
        report = _take_report(now)
    _LOG.info('%s%s', MARKER, report)


def flush() -> None:
    """Report now if anything changed since the last report (the end of a bundle)."""
    if not enabled():
        return
    with _LOCK:
        if not _STATE['changed']:
            return
        report = _take_report(time.monotonic())
    _LOG.info('%s%s', MARKER, report)


def reset() -> None:
    """Start this process's counts afresh (a new run in the same process)."""
    with _LOCK:
        _STATE['counts'].clear()
        _STATE['changed'] = False
        _STATE['process'] = f'{os.getpid()}-{secrets.token_hex(3)}'


def note(stage: str, **facts) -> None:
    """Tell the display what the launcher is doing (``stage``, in words) and what it knows
    (``input_bytes``: the seller files' size, for the estimate)."""
    if enabled():
        _LOG.info('%s%s', MARKER, json.dumps({'stage': stage, **facts}, ensure_ascii=False))


def _take_report(now) -> str:
    _STATE['sent'], _STATE['changed'] = now, False
    return json.dumps({'process': _STATE['process'],
                       'counts': [[k, t, n] for (k, t), n in _STATE['counts'].items()]},
                      ensure_ascii=False)
