"""What a long run shows while it works: the stage, rows read, written and refused so far, the
rate and an estimate of the time left.

The figures are the sum of every process's latest report (``transforms.common.progress``). On a
terminal they are one live line under the log lines; otherwise (a log file, CI) a line every
LOG_SECONDS. ``ProgressConsole`` is the CLI's stderr handler: it takes the reports out of the
log stream and keeps the live line below everything else printed.
"""

import collections
import contextlib
import json
import logging
import os
import shutil
import threading
import time

from transforms.common.progress import MARKER

__all__ = ['ProgressConsole', 'estimate_seconds', 'progress_line', 'showing_progress']

LIVE_SECONDS = 0.5
LOG_SECONDS = 10.0
# Share of a run's work that is reading, for the estimate: reading, decoding and conforming
# take about as long as the consent gate, masking and encrypted writing that follow (measured
# at 1M customers; see docs/performance.md).
READ_SHARE = 0.4
# Which step is running, from the counts that moved since the last look, later steps first.
# (Dead letters are sealed by the step that refuses them, so they say nothing of the stage.)
STAGES = (('files', 'checking the delivered files'),
          ('written', 'masking and writing'),
          ('read', 'reading'),
          ('registry', 'reading the consent registry'))


def estimate_seconds(read_share: float, finished_share: float, elapsed: float):
    """Seconds left, or None while too little is done to tell (pure).

    ``read_share``: the part of the seller files' bytes read; ``finished_share``: the part of
    the rows expected (rows read so far / ``read_share``) already written or refused.
    """
    done = READ_SHARE * min(read_share, 1.0) + (1 - READ_SHARE) * min(finished_share, 1.0)
    if done < 0.05 or elapsed < 2:
        return None
    return elapsed * (1 - done) / done


def progress_line(stage: str, totals: dict, input_bytes: int, elapsed: float) -> str:
    """One line of figures (pure), what matters most first (a narrow terminal cuts the end):
    ``totals`` maps a kind (read, written, dead, bytes) to its sum over tables and processes."""
    read, written, dead = (totals.get(k, 0) for k in ('read', 'written', 'dead'))
    if not (read or written or dead):
        return f'{stage}, {elapsed:.0f} s'
    share = min(totals.get('bytes', 0) / input_bytes, 1.0) if input_bytes else 0.0
    expected = read / share if share else 0
    left = estimate_seconds(share, (written + dead) / expected if expected else 0.0, elapsed)
    if left is None:
        timing = f'{elapsed:.0f} s'
    else:
        timing = f'{elapsed:.0f} s, ' + (f'about {left:.0f} s left' if left >= 1 else
                                         'almost done')
    return '; '.join([
        f'{stage} ({share:.0%} of the input read)' if 0 < share < 1 else stage, timing,
        f'{read:,} rows read, {written:,} written, {dead:,} dead letters',
        f'{read / max(elapsed, 1e-9):,.0f} rows/s'])


class ProgressConsole(logging.Handler):
    """A stderr log handler that also shows the run's progress (see the module docstring).

    ``live``: redraw one line in place (a terminal), else print a line every LOG_SECONDS.
    """

    def __init__(self, stream, *, live: bool):
        super().__init__()
        self._stream = stream
        self._live = live
        self._lock = threading.RLock()
        self._reports = {}  # process -> Counter of (kind, table) -> n
        self._input_bytes = 0
        self._noted = 'starting'
        self._stage = None
        self._previous = collections.Counter()
        self._started = time.monotonic()
        self._shown = ''  # the live line on screen
        self._ticker = None
        self._stop = threading.Event()
        self._finished = False  # the run ended: what follows is its summary

    # -- logging ------------------------------------------------------------------------------

    def emit(self, record):
        try:
            message = record.getMessage()
            if message.startswith(MARKER):
                self._take(json.loads(message[len(MARKER):]))
                return
            text = self.format(record)
            with self._lock:
                self._clear()
                self._stream.write(text + '\n')
                self._draw()
                self._stream.flush()
        except Exception:  # a display problem must not stop the run
            self.handleError(record)

    def _take(self, report):
        with self._lock:
            if 'counts' in report:
                self._reports[report['process']] = collections.Counter(
                    {(k, t): n for k, t, n in report['counts']})
            if report.get('finished'):
                self._clear()
                self._shown, self._finished = '', True
            elif 'stage' in report:
                self._noted, self._stage = report['stage'], None
            if 'input_bytes' in report:
                self._input_bytes = report['input_bytes']
                self._started = time.monotonic()  # rates count from the pipeline's start

    def say(self, text: str, stream) -> None:
        """Print ``text`` (on ``stream``, e.g. stdout) above the live line."""
        with self._lock:
            self._clear()
            self._stream.flush()
            stream.write(text + '\n')
            stream.flush()
            self._draw()
            self._stream.flush()

    # -- the progress line ----------------------------------------------------------------

    def start(self):
        self._started = time.monotonic()
        self._ticker = threading.Thread(target=self._tick, name='novation-progress',
                                        daemon=True)
        self._ticker.start()

    def stop(self):
        self._stop.set()
        if self._ticker:
            self._ticker.join()
        with self._lock:
            self._clear()
            self._shown = ''
            self._stream.flush()

    def _tick(self):
        interval = LIVE_SECONDS if self._live else LOG_SECONDS
        while not self._stop.wait(interval):
            with self._lock:
                if self._finished:
                    continue
                line = self.line()
                if self._live:
                    self._clear()
                    self._shown = line
                    self._draw()
                else:
                    self._stream.write(f'novation: progress: {line}\n')
                self._stream.flush()

    def line(self) -> str:
        """The figures now; the stage is the latest step whose counts moved since last time."""
        with self._lock:
            totals = collections.Counter()
            for counts in self._reports.values():
                for (kind, _), n in counts.items():
                    totals[kind] += n
            moved = {kind for kind in totals if totals[kind] > self._previous[kind]}
            self._previous = totals
            self._stage = next((label for kind, label in STAGES if kind in moved),
                               self._stage)
            return progress_line(self._stage or self._noted, totals, self._input_bytes,
                                 time.monotonic() - self._started)

    def _clear(self):
        if self._live and self._shown:
            self._stream.write('\r\x1b[K')

    def _draw(self):
        if self._live and self._shown:
            width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be redrawn
            self._stream.write(f'novation: {self._shown}'[:width])


@contextlib.contextmanager
def showing_progress(console):
    """Count progress in this process and the local worker processes it starts (they inherit
    the environment), and show it until the command ends."""
    from transforms.common.progress import ENABLE
    os.environ[ENABLE] = '1'
    console.start()
    try:
        yield
    finally:
        console.stop()
        del os.environ[ENABLE]
