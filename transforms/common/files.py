"""Small helpers over Beam's filesystems so local paths and gs:// URIs are treated alike.

Beam's ``FileSystems`` is imported when a file is first touched, not with this module: the
config, the keys and the plan load without Beam (tests/test_architecture.py)."""

import functools
import json
import os
import posixpath
import socket
import stat
import tempfile

from transforms.common.errors import NovationError

__all__ = ['check_reachable', 'exists', 'join', 'read_bytes', 'read_text', 'resolve',
           'why_not_writable', 'write_json', 'write_whole']

GCS_HOST = 'storage.googleapis.com'


def filesystems():
    """Beam's ``FileSystems`` (local, gs:// and the other schemes Beam knows)."""
    from apache_beam.io.filesystems import FileSystems
    return FileSystems


def uncompressed():
    """Beam's compression type that reads a file's bytes as they are (no decompression by
    the file's name)."""
    from apache_beam.io.filesystem import CompressionTypes
    return CompressionTypes.UNCOMPRESSED


def compressed_by_name(path: str) -> bool:
    """Whether Beam reads ``path`` decompressed, as its name says (.gz, .bz2, ...)."""
    from apache_beam.io.filesystem import CompressionTypes
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def has_scheme(path: str) -> bool:
    return '://' in path


def resolve(base_dir: str, path: str) -> str:
    """``path`` as given if absolute or a URI, else relative to ``base_dir``."""
    if has_scheme(path) or path.startswith('/'):
        return path
    if has_scheme(base_dir):
        return posixpath.normpath(posixpath.join(base_dir, path)).replace(':/', '://', 1)
    return posixpath.normpath(posixpath.join(base_dir, path))


def join(base: str, *parts: str) -> str:
    return filesystems().join(base, *parts)


def check_reachable(*paths: str) -> None:
    """Refuse, in one line and within seconds, gs:// paths when Cloud Storage cannot be
    reached from this machine: the storage client would retry for two minutes, then print a
    traceback."""
    for path in paths:
        if path and path.startswith('gs://'):
            why = _gcs_unreachable()
            if why:
                raise NovationError(f'{path}: Cloud Storage ({GCS_HOST}) cannot be reached from '
                                    f'this machine ({why}); check the network, or use a local '
                                    f'path')


@functools.lru_cache(maxsize=1)
def _gcs_unreachable():
    if any(os.environ.get(v) for v in ('https_proxy', 'HTTPS_PROXY')):
        return None  # through a proxy: the client knows the way, a direct probe does not
    try:
        socket.create_connection((GCS_HOST, 443), timeout=5).close()
    except OSError as e:
        return type(e).__name__ if not str(e) else str(e).split('] ')[-1]
    return None


def exists(path: str) -> bool:
    check_reachable(path)
    return filesystems().exists(path)


def read_bytes(path: str, *, what: str = 'file') -> bytes:
    """Read a whole (small) file; a missing file is a user error naming it."""
    check_reachable(path)
    try:
        with filesystems().open(path) as f:
            return f.read()
    except Exception as e:  # Beam raises BeamIOError/IOError depending on the filesystem
        raise NovationError(f'cannot read {what} {path}: {_reason(e)}') from None


def read_text(path: str, *, what: str = 'file') -> str:
    data = read_bytes(path, what=what)
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise NovationError(f'{what} {path} is not UTF-8 (first bad byte at offset {e.start})'
                            ) from None


def why_not_readable(path: str):
    """Why the local file ``path`` cannot be read as an export, in words; None if it can, or
    if it is a URI (read by the workers). Opened without blocking: a named pipe would wait for
    a writer for ever."""
    if has_scheme(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f'cannot be read ({e.strerror or e})'
    if stat.S_ISDIR(mode):
        return 'is a directory, not a file (name the files in it, e.g. DIR/*.csv)'
    if not stat.S_ISREG(mode):
        return 'is not a regular file (a named pipe or a device?): export it to a file'
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
        try:
            os.read(fd, 1)
        finally:
            os.close(fd)
    except OSError as e:
        return f'cannot be read ({e.strerror or e})'
    return None


def why_not_writable(directory: str):
    """Why files cannot be written under the local ``directory`` (created if missing), in
    words; None if they can, or if it is a URI (checked by the workers that write there).

    A probe file is written and removed, so permissions, read-only mounts and full quotas
    show now, before any data is read, not at the end of a run.
    """
    if has_scheme(directory):
        return None
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f'{existing} is a file, not a directory'
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.novation-probe-', dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        return f'cannot create or write files under {existing} ({e.strerror or e})'
    return None


def _reason(exc: Exception) -> str:
    text = str(exc)
    if 'No such file' in text or 'not found' in text.lower() or isinstance(exc, FileNotFoundError):
        return 'no such file'
    return text.splitlines()[0] if text else type(exc).__name__


def write_whole(directory: str, name: str, data: bytes) -> None:
    """Write ``directory/name`` under a temporary name, then rename it: never a partial file."""
    temp = join(directory, name + '.tmp')
    with filesystems().create(temp) as f:
        f.write(data)
    filesystems().rename([temp], [join(directory, name)])


def write_json(directory: str, name: str, value) -> None:
    """``value`` as indented UTF-8 JSON, written whole."""
    write_whole(directory, name,
                json.dumps(value, ensure_ascii=False, indent=2).encode('utf-8') + b'\n')
