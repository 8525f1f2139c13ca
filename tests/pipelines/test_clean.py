"""Crashed runs' leftovers: found, listed and removed by ``novation clean``; live runs never
touched; two runs with one run id cannot both start."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from pipelines.clean import RunLock, find_leftovers, remove_leftovers

pytestmark = pytest.mark.slow  # subprocesses running the demo


def novation(*args, cwd=None):
    return subprocess.Popen([sys.executable, '-m', 'pipelines.cli', *args], cwd=cwd or ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_held_lock_is_never_a_leftover_and_an_unheld_one_is(tmp_path):
    out, scratch = tmp_path / 'out', tmp_path / 'scratch'
    lock = RunLock(str(out / 'r1'), str(scratch / 'novation-r1')).acquire()
    (scratch / 'novation-r1').mkdir(parents=True)
    assert find_leftovers(str(out), str(scratch)) == []  # a run still going
    with pytest.raises(Exception, match='already exists'):
        RunLock(str(out / 'r1'), str(scratch / 'novation-r1')).acquire()
    os.close(lock._held[0][1])  # the process died: the kernel lets go of its locks
    os.close(lock._held[1][1])
    found = find_leftovers(str(out), str(scratch))
    assert [f['path'] for f in found] == [str(out / 'r1'), str(scratch / 'novation-r1')]
    remove_leftovers(found)
    assert not (out / 'r1').exists() and not (scratch / 'novation-r1').exists()
    assert not (scratch / 'novation-r1.running').exists()


def test_clean_keeps_to_its_own_output_root(tmp_path):
    out, other, scratch = tmp_path / 'out', tmp_path / 'other', tmp_path / 'scratch'
    for root, run in ((out, 'mine'), (other, 'theirs'), (out, 'early')):
        lock = RunLock(str(root / run), str(scratch / f'novation-{run}')).acquire()
        if run != 'early':  # killed before its scratch directory existed
            (scratch / f'novation-{run}').mkdir(parents=True, exist_ok=True)
        for _, fd in lock._held:
            os.close(fd)  # the process died
    paths = [f['path'] for f in find_leftovers(str(out), str(scratch))]
    assert paths == [str(out / 'early'), str(out / 'mine'),
                     str(scratch / 'novation-early.running'), str(scratch / 'novation-mine')]
    remove_leftovers(find_leftovers(str(out), str(scratch)))
    assert sorted(os.listdir(scratch)) == ['novation-theirs', 'novation-theirs.running']
    assert find_leftovers(str(out), str(scratch)) == []


def test_a_killed_run_leaves_what_clean_lists_and_removes(demo_copy, tmp_path):
    workdir, config, _ = demo_copy
    out, scratch = os.path.join(workdir, 'out'), str(tmp_path / 'scratch')
    os.makedirs(scratch)
    finished = novation('run', '--config', config, '--run-id', 'kept')
    assert finished.wait(timeout=300) == 0, finished.stderr.read()
    proc = novation('run', '--config', config, '--run-id', 'killed',
                    f'--temp_location={scratch}')
    deadline = time.monotonic() + 120
    while not os.path.isdir(os.path.join(out, 'killed', 'data')) or \
            not os.path.isdir(os.path.join(scratch, 'novation-killed')):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(1)  # worker processes, if any, die with their parent's pipes
    # no --scratch: the killed run's lock names its scratch under --temp_location
    listing = subprocess.run([sys.executable, '-m', 'pipelines.cli', 'clean', out],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert listing.returncode == 0, listing.stderr
    paths = [line.split()[0] for line in listing.stdout.splitlines() if line.startswith('  ')]
    assert paths == [os.path.join(out, 'killed'), os.path.join(scratch, 'novation-killed')]
    assert 'run again with --yes' in listing.stdout
    assert os.path.isdir(os.path.join(out, 'killed'))  # listing removes nothing
    removal = subprocess.run([sys.executable, '-m', 'pipelines.cli', 'clean', out, '--yes'],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert removal.returncode == 0 and 'removed 2 leftover(s)' in removal.stdout
    assert sorted(os.listdir(out)) == ['audit', 'kept'] and os.listdir(scratch) == []
    assert os.path.exists(os.path.join(out, 'kept', 'manifest.json'))  # the finished run stays
    assert not os.path.exists(os.path.join(out, 'kept', '.running'))
    from transforms.commit.audit import read_log
    assert read_log(out)[-1]['event'] == 'cleaned' and read_log(out)[-1]['runs'] == ['killed']


def test_two_runs_with_one_run_id_one_starts_and_the_other_is_one_line(demo_copy):
    workdir, config, _ = demo_copy
    first, second = (novation('run', '--config', config, '--run-id', 'same') for _ in range(2))
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    assert sorted(code for code, _ in results) == [0, 2], results
    [loser] = [err for code, err in results if code == 2]
    lines = [l for l in loser.splitlines() if 'DEMO/TEST ONLY' not in l]
    assert len(lines) == 1 and 'already exists' in lines[0], loser
    run_dir = os.path.join(workdir, 'out', 'same')
    assert sorted(n for n in os.listdir(run_dir) if n.startswith('.')) == []  # no loser's temp
    manifest = json.load(open(os.path.join(run_dir, 'manifest.json'), encoding='utf-8'))
    from pipelines.verify import verify_run
    assert not verify_run(run_dir, os.path.join(workdir, 'keys'))['problems']
    assert manifest['run_id'] == 'same'


def test_a_stream_directory_is_locked_while_a_stream_runs(tmp_path):
    from transforms.common.errors import ConfigError
    first = RunLock(str(tmp_path / 'stream-1'), new=False).acquire()
    with pytest.raises(ConfigError, match='is in use by a run still going'):
        RunLock(str(tmp_path / 'stream-1'), new=False).acquire()
    first.release(finished=True)
    again = RunLock(str(tmp_path / 'stream-1'), new=False).acquire()  # resumed once it stopped
    again.release(finished=True)
    assert os.listdir(tmp_path / 'stream-1') == []
