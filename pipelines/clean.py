"""What runs that did not finish leave behind, and how it is told from a run still going.

A local run holds two locks from before its first file until its manifest is written or it
fails: ``OUT/<run id>/.running`` and ``<scratch parent>/novation-<run id>.running`` (the
scratch files are encrypted Arrow tables of customers, so they matter too). The locks are
``flock``s on those files, so they die with the process: after a kill -9 the files stay, and
nobody holds them. The run directory itself is created exclusively with its lock, so two runs
given the same ``--run-id`` cannot both start: the second is refused in one line.

``novation clean OUT_DIR`` lists, and with ``--yes`` removes: run directories without a
manifest whose lock nobody holds (nothing in them was delivered: a run is a delivery only once
its manifest is sealed), ``.temp-*`` folders left in finished runs, and scratch directories
whose lock nobody holds. Streams (``epochs/``) are left alone: a restarted stream cleans its own
unfinished epoch. Runs and scratch on gs:// have no locks here; bucket lifecycle rules are the
tool there.
"""

import datetime
import fcntl
import json
import os
import shutil
import socket
from typing import List, Optional

from transforms.common.errors import ConfigError, NovationError
from transforms.common.files import has_scheme

__all__ = ['LOCK_SUFFIX', 'RunLock', 'find_leftovers', 'remove_leftovers']

LOCK_NAME = '.running'
LOCK_SUFFIX = '.running'
SCRATCH_PREFIX = 'novation-'


class RunLock:
    """The locks of one local run: its run directory (created here, exclusively) and its
    scratch directory. ``release`` removes the lock files; a killed process leaves them
    unheld."""

    def __init__(self, run_dir: str, scratch_dir: Optional[str] = None, *, new: bool = True):
        self._run_dir, self._scratch_dir, self._new = run_dir, scratch_dir, new
        self._held = []

    def acquire(self) -> 'RunLock':
        if has_scheme(self._run_dir):
            return self  # object stores have no locks: see the module's note
        os.makedirs(os.path.dirname(self._run_dir.rstrip('/')) or '.', exist_ok=True)
        try:
            os.makedirs(self._run_dir, exist_ok=not self._new)
        except FileExistsError:
            raise ConfigError(f'{self._run_dir} already exists (another run with this run id '
                              f'started first); every run writes a new directory') from None
        try:
            # The run directory's lock names the scratch directory, so clean finds it under
            # any --temp_location.
            self._hold(os.path.join(self._run_dir, LOCK_NAME), scratch=self._scratch_dir)
        except BlockingIOError:  # a stream resumed while it still runs
            raise ConfigError(f'{self._run_dir} is in use by a run still going (see '
                              f'{LOCK_NAME} in it); stop it first') from None
        if self._scratch_dir and not has_scheme(self._scratch_dir):
            os.makedirs(os.path.dirname(self._scratch_dir) or '.', exist_ok=True)
            self._hold(self._scratch_dir.rstrip('/') + LOCK_SUFFIX)
        return self

    def _hold(self, path, **facts):
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                                 'started_at': _now(), **facts}).encode('utf-8'))
        self._held.append((path, fd))

    def release(self, *, finished: bool) -> None:
        """Let go of the locks. A run that did not finish keeps its run directory's lock file,
        unheld, so ``novation clean`` knows the directory is a leftover."""
        for path, fd in self._held:
            if finished or not path.startswith(self._run_dir):
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
            os.close(fd)
        self._held = []


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _unheld(path: str) -> bool:
    """Whether a lock file exists and no process holds it (its run died)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def find_leftovers(out_dir: str, scratch_parent: Optional[str] = None) -> List[dict]:
    """What crashed runs left under ``out_dir`` and in ``scratch_parent``: each with its
    path, what it is, its size and why it may go. Nothing is removed."""
    if has_scheme(out_dir):
        raise NovationError(f'{out_dir}: novation clean works on a local output root; on an '
                            f'object store, use its lifecycle rules')
    if not os.path.isdir(out_dir):
        raise NovationError(f'{out_dir} is not a directory (give the output root, output.path)')
    found, scratch_dirs = [], set()
    for name in sorted(os.listdir(out_dir)):
        run_dir = os.path.join(out_dir, name)
        if not os.path.isdir(run_dir) or name == 'audit' or \
                os.path.isdir(os.path.join(run_dir, 'epochs')):
            continue
        lock = os.path.join(run_dir, LOCK_NAME)
        finished = os.path.exists(os.path.join(run_dir, 'manifest.json'))
        if not finished and _unheld(lock):
            scratch = _lock_facts(lock).get('scratch')
            if isinstance(scratch, str) and not has_scheme(scratch):
                scratch_dirs.add(os.path.abspath(scratch))
            found.append({'path': run_dir, 'what': 'run directory of a run that did not '
                          'finish (no manifest: nothing in it was delivered)',
                          'bytes': _size(run_dir)})
            continue
        if finished or not os.path.exists(lock):
            for temp in sorted(os.listdir(run_dir)):
                if temp.startswith('.temp-'):
                    path = os.path.join(run_dir, temp)
                    found.append({'path': path, 'what': 'temporary folder left in a run',
                                  'bytes': _size(path)})
    # Scratch of this root's runs only: the temporary directory is shared by every run on
    # the machine, and another project's leftovers are not this root's to remove.
    runs = _run_ids(out_dir)
    parent = scratch_parent or _default_scratch()
    if os.path.isdir(parent):
        for name in sorted(os.listdir(parent)):
            run_id = name[len(SCRATCH_PREFIX):].removesuffix(LOCK_SUFFIX)
            if name.startswith(SCRATCH_PREFIX) and run_id in runs:
                scratch_dirs.add(os.path.abspath(os.path.join(parent, SCRATCH_PREFIX + run_id)))
    for path in sorted(scratch_dirs):
        if not _unheld(path + LOCK_SUFFIX) and os.path.exists(path + LOCK_SUFFIX):
            continue  # a run still going
        if os.path.isdir(path):
            found.append({'path': path, 'what': 'encrypted scratch files of a run that '
                          'did not finish', 'bytes': _size(path)})
        elif os.path.exists(path + LOCK_SUFFIX):
            found.append({'path': path + LOCK_SUFFIX, 'what': 'lock file of a run that '
                          'stopped before its scratch files', 'bytes': 0})
    return found


def _lock_facts(path: str) -> dict:
    try:
        with open(path, encoding='utf-8') as f:
            facts = json.load(f)
        return facts if isinstance(facts, dict) else {}
    except (OSError, ValueError):
        return {}


def _run_ids(out_dir: str) -> set:
    """The runs of this output root: its run directories and the runs its audit log names."""
    ids = {name for name in os.listdir(out_dir) if name != 'audit'}
    from transforms.commit.audit import read_log
    try:
        ids |= {str(r['run_id']) for r in read_log(out_dir) if r.get('run_id')}
    except (NovationError, OSError, ValueError, TypeError, AttributeError):
        pass  # a damaged log: audit verify says so; the run directories still count
    return ids


def _default_scratch():
    import tempfile
    return tempfile.gettempdir()


def remove_leftovers(found: List[dict]) -> int:
    """Remove what ``find_leftovers`` found (and its lock files); returns the bytes freed."""
    freed = 0
    for item in found:
        path = item['path']
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif path.endswith(LOCK_SUFFIX) and os.path.exists(path):
            os.remove(path)
        lock = path + LOCK_SUFFIX
        if os.path.exists(lock):
            os.remove(lock)
        freed += item['bytes']
    return freed
