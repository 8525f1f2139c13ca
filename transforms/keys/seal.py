"""Seals: every manifest is signed, so a changed, moved or forged manifest is refused.

A manifest (a run's ``manifest.json``, a stream epoch's, a stream's ``cutover.json``, a
notification list's ``notice.json``) is written with ``NAME.seal`` beside it: an ED25519
signature under the keyring's ``manifest`` role over the manifest's identity (``<run id>/<path
in the run>``, as for delivered files) and the sha256 of its exact bytes. Readers check the seal
before they believe a byte of the manifest: a file listed twice, a dead-letter file left out, an
emptied list or a removed field all change the sha256; a manifest claiming another run's id, or
an epoch's manifest put in another epoch's place, names another identity. Only the
private half of the key signs; the public half is enough to check, so a reader who is given it
cannot forge a manifest.

Every path a manifest lists is then checked to stay inside its run (``contained_path``): a
manifest is not a way to make a reader open ``/etc/passwd``.
"""

import base64
import hashlib
import json
import posixpath

import tink
from tink import signature

from transforms.common.errors import KeyringError, NovationError
from transforms.common.files import join, read_bytes, write_whole

__all__ = ['SEAL_ROLE', 'check_contained', 'check_seal', 'contained_path', 'read_sealed',
           'read_sealed_json', 'require_signing', 'seal_of', 'write_sealed', 'write_sealed_json']

SEAL_ROLE = 'manifest'
SEAL_FORMAT = 'novation-seal/1'
SEAL_SUFFIX = '.seal'


def _message(identity: str, digest: str) -> bytes:
    return f'{SEAL_FORMAT}\n{identity}\n{digest}'.encode('utf-8')


def seal_of(keyring, identity: str, data: bytes) -> bytes:
    """The seal of a manifest's bytes at ``identity``, as the bytes of NAME.seal."""
    digest = hashlib.sha256(data).hexdigest()
    signed = keyring.primitive(SEAL_ROLE, signature.PublicKeySign).sign(_message(identity,
                                                                                 digest))
    return json.dumps({'format': SEAL_FORMAT, 'identity': identity, 'sha256': digest,
                       'key_id': keyring.key_ids()[SEAL_ROLE]['primary'],
                       'signature': base64.b64encode(signed).decode('ascii')},
                      indent=2).encode('utf-8') + b'\n'


def check_seal(keyring, identity: str, data: bytes, seal: bytes, where: str) -> None:
    """Raise NovationError unless ``seal`` signs ``data`` at ``identity`` under the keyring's
    ``manifest`` key (any of its keys: a rotated key still checks older manifests)."""
    try:
        doc = json.loads(seal)
        signed = base64.b64decode(doc['signature'], validate=True)
    except (ValueError, KeyError, TypeError):
        raise NovationError(f'{where}{SEAL_SUFFIX} is not a seal; the manifest cannot be '
                            f'trusted') from None
    held = keyring.key_ids().get(SEAL_ROLE, {}).get('keys', [])
    if isinstance(doc.get('key_id'), int) and held and doc['key_id'] not in held:
        # The likely case: a keyring of another project. (An edited key id only changes
        # which refusal is shown: nothing in the manifest is used either way.)
        raise NovationError(f'{where} was sealed with manifest key {doc["key_id"]}, which '
                            f'keyring {keyring.path} does not hold (it holds '
                            f'{", ".join(map(str, held))}): use the keyring the run was written '
                            f'with, or one shared from it')
    try:
        keyring.primitive(SEAL_ROLE).verify(signed, _message(identity,
                                                             hashlib.sha256(data).hexdigest()))
    except tink.TinkError:
        raise NovationError(f'{where} is not the manifest the run sealed (changed, moved from '
                            f'another run, or sealed with another keyring\'s manifest key); '
                            f'nothing in it is used') from None


def write_sealed(directory: str, name: str, data: bytes, keyring, identity: str) -> None:
    """Write a manifest's seal, then the manifest (each whole): a manifest is never there
    without the seal that vouches for it."""
    write_whole(directory, name + SEAL_SUFFIX, seal_of(keyring, identity, data))
    write_whole(directory, name, data)


def require_signing(keyring, source: str) -> None:
    """Refuse, before a run, a keyring that cannot seal manifests (no ``manifest`` role, or
    only its public half)."""
    if not keyring.has(SEAL_ROLE):
        raise KeyringError(f'keyring {keyring.path} has no {SEAL_ROLE!r} keyset (needed by '
                           f'{source} to seal its manifests); add it with `novation keys add '
                           f'{keyring.path} {SEAL_ROLE}`')
    if not keyring.can_sign(SEAL_ROLE):
        raise KeyringError(f'keyring {keyring.path} holds only the public half of the '
                           f'{SEAL_ROLE!r} key, which checks manifests but cannot seal them; '
                           f'runs need the keyring it was shared from')


def write_sealed_json(directory: str, name: str, value, keys_path: str, identity: str) -> bytes:
    """``value`` as indented UTF-8 JSON, sealed under the keyring at ``keys_path``; returns the
    bytes written."""
    from transforms.keys.keyring import cached_keyring
    data = json.dumps(value, ensure_ascii=False, indent=2).encode('utf-8') + b'\n'
    write_sealed(directory, name, data, cached_keyring(keys_path, (SEAL_ROLE,)), identity)
    return data


def read_sealed(directory: str, name: str, keyring, identity: str = None, *,
                what: str) -> bytes:
    """The bytes of a sealed manifest, once its seal is checked. ``identity``: where it was
    sealed; by default ``<run id>/NAME`` with the run id it names itself (``run_id``, or a
    cut-over's ``stream_id``), so a run directory copied or renamed as a whole still reads,
    and a manifest cannot claim another run's id without breaking its seal."""
    path = join(directory, name)
    data = read_bytes(path, what=what)
    try:
        seal = read_bytes(path + SEAL_SUFFIX, what=f'{what} seal')
    except NovationError:
        raise NovationError(f'{path} has no seal ({name}{SEAL_SUFFIX}): it cannot be told '
                            f'from a forged one, so it is not used') from None
    if not keyring.has(SEAL_ROLE):
        raise KeyringError(f'keyring {keyring.path} has no {SEAL_ROLE!r} keyset, which checks '
                           f'the seal of {path}; give --keys a keyring holding it (its public '
                           f'half is enough: novation keys share)')
    check_seal(keyring, identity or f'{_named_run(data, path)}/{name}', data, seal, path)
    return data


def _named_run(data: bytes, path: str) -> str:
    """The run id a manifest names (not yet trusted: the seal is checked with it)."""
    try:
        doc = json.loads(data.decode('utf-8'))
    except ValueError:
        raise NovationError(f'{path} is not valid JSON; the manifest is refused') from None
    run_id = doc.get('run_id', doc.get('stream_id')) if isinstance(doc, dict) else None
    if not isinstance(run_id, str) or not run_id or '/' in run_id:
        raise NovationError(f'{path} names no run id; the manifest is refused')
    return run_id


def read_sealed_json(directory: str, name: str, keyring, identity: str = None, *,
                     what: str) -> dict:
    """A sealed JSON manifest (a mapping), once its seal is checked (see ``read_sealed``)."""
    data = read_sealed(directory, name, keyring, identity, what=what)
    doc = json.loads(data.decode('utf-8'))
    if not isinstance(doc, dict):
        raise NovationError(f'{join(directory, name)} is not a JSON mapping; the manifest is '
                            f'refused')
    return doc


def contained_path(run_dir: str, relative, where: str) -> str:
    """``run_dir/relative`` for a path a manifest lists, refused unless it stays inside the
    run directory (``check_contained``)."""
    return join(run_dir, check_contained(relative, where))


def check_contained(relative, where: str) -> str:
    """``relative``, refused unless it is a place inside a run directory (no absolute path,
    no scheme, no ``..``)."""
    if (not isinstance(relative, str) or not relative or relative.startswith(('/', '\\'))
            or '://' in relative or '\\' in relative or '\0' in relative
            or posixpath.normpath(relative) != relative or relative.split('/')[0] == '..'):
        raise NovationError(f'{where}: the listed path {str(relative)[:80]!r} is not a place '
                            f'inside the run directory; the manifest is refused')
    return relative
