"""Ctrl-C (SIGINT) and SIGTERM end a command the same way at every moment.

``novation`` installs ``on_signal`` first thing. A signal raises ``Interrupted`` in the main
thread: a ``BaseException``, so no ``except Exception`` on the way (ours or Beam's) takes it for
an error. The run then removes what it started (scratch, run directory, lock), records
``run_aborted`` in the audit log and the command prints one line and exits 128 + the signal's
number (130, 143). A run's commit (manifest, seal, ``run_committed``) is ``deferred``: a signal
during it takes effect after it, and the run reports the success it had.
"""

import contextlib
import os
import signal
import sys
import threading
from typing import Optional

__all__ = ['Interrupted', 'deferred', 'end_now', 'install', 'keep_workers_out', 'received',
           'reset', 'settle']

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {'received': None, 'deferring': 0, 'pending': None}


class Interrupted(BaseException):
    """The command was stopped by a signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _on_signal(signum, _frame):
    if _state['received'] is None:
        _state['received'] = signum
    if _state['deferring']:
        _state['pending'] = signum
        return
    _stop_workers()
    raise Interrupted(signum)


def install() -> None:
    """Make SIGINT and SIGTERM raise ``Interrupted`` (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)
    default = threading.excepthook

    def quiet_after_a_signal(args):
        # Beam's threads report the workers the command stops as errors of their own.
        if _state['received'] is None:
            default(args)

    threading.excepthook = quiet_after_a_signal


def keep_workers_out() -> None:
    """Worker processes of a local run ignore SIGINT. A Ctrl-C reaches the terminal's whole
    process group, and a worker stopped by it prints a traceback of its own; the command stops
    its workers itself. Beam starts each worker with a shell command line
    (``SubprocessSdkWorker``); the shell's ``trap '' INT`` is inherited by the Python it
    starts, which then leaves SIGINT ignored. Recheck on a Beam upgrade (docs/decisions)."""
    from apache_beam.runners.portability import local_job_service
    worker = local_job_service.SubprocessSdkWorker
    if getattr(worker.run, 'keeps_ctrl_c_out', False):
        return
    start = worker.run

    def run(self):
        command = self._worker_command_line
        if not command.startswith(_IGNORE_INT):
            self._worker_command_line = f'{_IGNORE_INT}exec {command}'
        return start(self)

    run.keeps_ctrl_c_out = True
    worker.run = run


_IGNORE_INT = "trap '' INT; "


def _stop_workers() -> None:
    """End this process's Beam worker processes (SIGTERM ends them without a word): Beam,
    unwinding, waits for each, and a worker busy with a bundle would not end by itself."""
    for pid in _children(os.getpid()):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if b'sdk_worker_main' in f.read():
                    os.kill(pid, signal.SIGTERM)
        except OSError:
            pass  # gone already, or no /proc: Beam's own shutdown remains


def _children(pid: int) -> list:
    try:
        tasks = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return []
    children = []
    for task in tasks:
        try:
            with open(f'/proc/{pid}/task/{task}/children') as f:
                children += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return children


def settle() -> None:
    """The command is done: a signal from now on changes nothing, so ignore it. Python
    restores the default handlers while it shuts down (Beam's threads and workers take a
    moment), and a SIGTERM then would kill a command that has succeeded."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def end_now(code: int) -> None:
    """End an interrupted command now, once it has cleaned up and said so. Python would first
    wait for every thread that is not a daemon, and a signal that stops Beam's in-process
    worker mid-bundle leaves its state sampler's thread (a plain thread sleeping in a loop) for
    ever: the command would print that it was interrupted and never exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def received() -> Optional[int]:
    """The first signal this process received, if any."""
    return _state['received']


def reset() -> None:
    _state.update(received=None, deferring=0, pending=None)


@contextlib.contextmanager
def deferred():
    """Hold a signal that arrives during the block until it is done (then it is raised in the
    main thread, unless an enclosing block defers it further)."""
    _state['deferring'] += 1
    try:
        yield
    finally:
        _state['deferring'] -= 1
    pending = _state['pending']
    if pending is not None and not _state['deferring'] and \
            threading.current_thread() is threading.main_thread():
        _state['pending'] = None
        raise Interrupted(pending)
