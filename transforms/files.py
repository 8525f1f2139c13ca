"""Small helpers over Beam's filesystems so local paths and gs:// URIs are treated alike."""

import json
import os
import posixpath
import tempfile

from apache_beam.io.filesystems import FileSystems

from transforms.errors import NovationError

__all__ = ['exists', 'join', 'read_bytes', 'read_text', 'resolve', 'why_not_writable',
           'write_json', 'write_whole']


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
    return FileSystems.join(base, *parts)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_bytes(path: str, *, what: str = 'file') -> bytes:
    """Read a whole (small) file; a missing file is a user error naming it."""
    try:
        with FileSystems.open(path) as f:
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
    with FileSystems.create(temp) as f:
        f.write(data)
    FileSystems.rename([temp], [join(directory, name)])


def write_json(directory: str, name: str, value) -> None:
    """``value`` as indented UTF-8 JSON, written whole."""
    write_whole(directory, name,
                json.dumps(value, ensure_ascii=False, indent=2).encode('utf-8') + b'\n')
