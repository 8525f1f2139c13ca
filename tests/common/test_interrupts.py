"""Ctrl-C and SIGTERM at any moment: one line, exit 130/143, nothing left behind, the audit
log saying so; a run that had committed reports its success. The sweep's verdicts do not depend
on the machine's speed: the moments are shares of a run measured in the same test, and either
outcome (stopped, or done) is checked whole."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, user_lines
from transforms.common import interrupts


@pytest.fixture
def handlers():
    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    interrupts.reset()
    interrupts.install()
    yield
    for s, h in before.items():
        signal.signal(s, h)
    interrupts.reset()


@pytest.mark.parametrize('signum', interrupts.SIGNALS)
def test_a_signal_raises_interrupted_with_its_exit_code(handlers, signum):
    with pytest.raises(interrupts.Interrupted) as stop:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler runs before this ends
    assert stop.value.exit_code == 128 + signum
    assert interrupts.received() == signum


def test_a_signal_during_a_deferred_block_is_raised_after_it(handlers):
    done = []
    with pytest.raises(interrupts.Interrupted):
        with interrupts.deferred():
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
                done.append('inner')
            done.append('outer')
    assert done == ['inner', 'outer']


def test_a_deferred_block_without_a_signal_raises_nothing(handlers):
    with interrupts.deferred():
        pass
    assert interrupts.received() is None


# -- the sweep ----------------------------------------------------------------------------------

def novation_run(config, temp, after=None, signum=None):
    """Run ``novation run``; with ``after`` seconds, send ``signum`` then. (exit code, the
    lines of stderr other than the demo keyring's warning, progress and leftover notes)."""
    proc = subprocess.Popen([sys.executable, '-m', 'pipelines.cli', 'run', '--config', config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=dict(os.environ, TMPDIR=temp))
    if after is not None:
        time.sleep(after)
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=600)
    lines = [line for line in user_lines(err) if 'leftover(s)' not in line]
    return proc.returncode, lines


def run_dirs(out):
    return sorted(d for d in os.listdir(out) if d != 'audit') if os.path.isdir(out) else []


def events(out):
    from transforms.commit.audit import read_log
    return read_log(out) if os.path.isdir(os.path.join(out, 'audit')) else []


@pytest.mark.slow
def test_signals_at_any_moment_of_a_run(demo_copy, tmp_path):
    workdir, config, _ = demo_copy
    out = os.path.join(workdir, 'out')
    temp = str(tmp_path / 'temp')
    os.mkdir(temp)
    started = time.monotonic()
    code, lines = novation_run(config, temp)
    whole = time.monotonic() - started
    assert (code, lines) == (0, [])
    runs = run_dirs(out)
    moments = [(0.02, signal.SIGINT), (0.3, signal.SIGTERM), (0.5, signal.SIGINT),
               (0.7, signal.SIGTERM), (0.85, signal.SIGINT), (0.97, signal.SIGTERM)]
    for share, signum in moments:
        code, lines = novation_run(config, temp, whole * share, signum)
        new = sorted(set(run_dirs(out)) - set(runs))
        log = events(out)
        what = f'{signal.Signals(signum).name} at {share:.0%}: {code} {lines} {new}'
        assert os.listdir(temp) == [], what  # no scratch, no Beam temp, no scratch lock
        if code == 0:  # done before the signal took effect: committed, and whole
            assert lines == [] and len(new) == 1, what
            assert os.path.exists(os.path.join(out, new[0], 'manifest.json')), what
            assert log[-1]['event'] == 'run_committed' and log[-1]['run_id'] == new[0], what
            runs = run_dirs(out)
            continue
        assert code == 128 + signum, what
        assert lines == [f'novation: interrupted ({signal.Signals(signum).name})'], what
        assert new == [], what  # the partial run directory (and its lock) went with it
        if log and log[-1]['event'] == 'run_aborted':  # it had started: the log says why
            assert log[-2]['event'] == 'run_started', what
            assert log[-1]['run_id'] == log[-2]['run_id'], what
            assert log[-1]['why'].startswith(f'interrupted by {signal.Signals(signum).name}')
    from transforms.commit.audit import verify_log
    assert verify_log(out)['problems'] == []


def test_an_interrupted_command_ends_even_with_a_thread_left_running():
    """Beam's in-process worker, stopped mid-bundle, leaves its state sampler thread (not a
    daemon) sleeping in a loop; Python would wait for it for ever at exit. end_now does not."""
    code = ('import threading, time\n'
            'from transforms.common import interrupts\n'
            'threading.Thread(target=time.sleep, args=(3600,)).start()\n'
            'print("novation: interrupted (SIGINT)", flush=False)\n'
            'interrupts.end_now(130)\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert (proc.returncode, proc.stdout) == (130, 'novation: interrupted (SIGINT)\n')
